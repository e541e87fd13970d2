"""Running our own loop: on which selector (``--loop default|select|poll|epoll``), until
which signal."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from common.sink import Sink
from selectors_impl.loop import SELECTORS, Event, Loop, current_loop

__all__ = ["describe", "run", "wait_idle"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new :class:`Loop` over the selector ``loop`` names."""
    result: T = Loop(SELECTORS[loop]()).run(main)
    return result


def describe(loop: Loop) -> str:
    """Name our loop and its selector: ``selectors_impl.Loop/epoll``."""
    selector = type(loop.selector).__name__.removesuffix("Selector").lower()
    return f"selectors_impl.Loop/{selector}"


async def wait_idle(sink: Sink, timeout: float | None, signals: bool = False) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives (with ``signals``); return whether it is idle."""
    loop = current_loop()
    done = Event()
    sink.when_idle(done.set)
    watcher = None
    if signals:

        async def watch() -> None:
            await loop.wait_signal()
            done.set()

        watcher = loop.spawn(watch())
    try:
        await done.wait(timeout)
    finally:
        if watcher is not None:
            watcher.cancel()
    return sink.live == 0
