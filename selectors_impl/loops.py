"""Running our own loop: on which selector (``--loop default|select|poll|epoll``), until
which signal."""

from __future__ import annotations

import signal
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..common.sink import Sink
from .mainloop import (
    SELECTORS,
    Cancelled,
    Event,
    Loop,
    Task,
    current_loop,
    wait_readable,
)

__all__ = ["Signals", "loop_name", "run", "wait_idle", "wait_or_signal"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new :class:`Loop` over the selector ``loop`` names."""
    result: T = Loop(SELECTORS[loop]()).run(main)
    return result


def loop_name(loop: Loop) -> str:
    """Name our loop and its selector: ``selectors_impl.Loop/epoll``."""
    selector = type(loop.selector).__name__.removesuffix("Selector").lower()
    return f"selectors_impl.Loop/{selector}"


class Signals:
    """SIGINT and SIGTERM, delivered on our loop: Python writes each signal's number to
    ``signal.set_wakeup_fd``, a socket the loop watches like any other."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._receive, self._send = socket.socketpair()
        for end in (self._receive, self._send):
            end.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._send.fileno())
        # A handler that does nothing: the wakeup fd carries the number.
        self._previous = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}

    async def wait(self) -> int:
        """Wait for the next signal; return its number."""
        while True:
            await wait_readable(self._receive)
            try:
                data = self._receive.recv(1)
            except BlockingIOError:
                continue
            if data:
                return data[0]

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        for end in (self._receive, self._send):
            end.close()


async def wait_or_signal(
    tasks: list[Task], signals: Signals
) -> tuple[int | None, BaseException | None]:
    """Wait until every task is done; on the first failure, or on SIGINT or SIGTERM, cancel
    the rest. Return the signal's number (or None) and the first failure (or None)."""
    loop = current_loop()
    finished = Event()
    failures: list[BaseException] = []
    interrupted: list[int] = []

    def stop_all() -> None:
        for task in tasks:
            task.cancel()

    def on_done(task: Task) -> None:
        if task.error is not None and not isinstance(task.error, Cancelled):
            failures.append(task.error)
            stop_all()
        if all(t.done for t in tasks):
            finished.set()

    async def watch() -> None:
        interrupted.append(await signals.wait())
        stop_all()

    watcher = loop.spawn(watch())
    for task in tasks:
        task.add_done_callback(on_done)
    try:
        await finished.wait()
    finally:
        watcher.cancel()
    return (interrupted[0] if interrupted else None), (failures[0] if failures else None)


async def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    loop = current_loop()
    done = Event()
    sink.when_idle(done.set)
    watcher = None
    if signals is not None:

        async def watch() -> None:
            await signals.wait()
            done.set()

        watcher = loop.spawn(watch())
    try:
        await done.wait(timeout)
    finally:
        if watcher is not None:
            watcher.cancel()
    return sink.live == 0
