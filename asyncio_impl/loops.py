"""Running asyncio: on which loop (the standard selector loop or uvloop), until which signal."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from common.sink import Sink

__all__ = ["Signals", "describe", "loop_factory", "run", "wait_idle"]

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return what makes the loop called ``name``."""
    if name == "default":
        return asyncio.new_event_loop  # SelectorEventLoop over epoll, on Linux
    if name == "uvloop":
        import uvloop  # imported only when asked for: it is an optional extra

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"unknown asyncio loop {name!r}")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new loop of the kind ``loop``, the asyncio way."""
    factory = loop_factory(loop)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    # Python 3.10 has no Runner: what asyncio.run does, with our own loop.
    new_loop = factory()
    try:
        asyncio.set_event_loop(new_loop)
        return new_loop.run_until_complete(main)
    finally:
        new_loop.run_until_complete(new_loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        new_loop.close()


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """Name the loop in use and, for a selector loop, its selector: ``SelectorEventLoop/epoll``."""
    name = f"{type(loop).__module__.split('.')[0]}.{type(loop).__name__}"
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        name += f"/{type(selector).__name__.removesuffix('Selector').lower()}"
    return name


class Signals:
    """SIGINT and SIGTERM, delivered on the loop, counted so a second one can cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._queue.put_nowait, signum)

    async def wait(self) -> int:
        """Wait for the next signal; return its number."""
        return await self._queue.get()

    def close(self) -> None:
        for signum in self.SIGNALS:
            self._loop.remove_signal_handler(signum)


async def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set_idle() -> None:
        if not idle.done():
            idle.set_result(None)

    sink.when_idle(set_idle)
    waiters: set[asyncio.Future[Any]] = {idle}
    interrupt = asyncio.ensure_future(signals.wait()) if signals is not None else None
    if interrupt is not None:
        waiters.add(interrupt)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if interrupt is not None:
            interrupt.cancel()
    return idle.done()
