"""Running anyio: on which backend (asyncio on its default loop or on uvloop, or trio),
until which signal, and the errors anyio wraps.

``anyio.run`` starts the backend's own loop; everything above it is anyio's API, whose
task groups and cancel scopes follow trio's structured concurrency on either backend.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..common.sink import Sink

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # anyio depends on it there

__all__ = [
    "BACKENDS",
    "Signals",
    "cause",
    "clock_offset",
    "loop_name",
    "run",
    "wait_idle",
    "wait_or_signal",
]

T = TypeVar("T")

#: ``--loop`` names: the backend and its options (``anyio.run(backend_options=...)``).
BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def run(main: Callable[[], Awaitable[T]], loop: str) -> T:
    """Run ``main`` under ``anyio.run`` on the backend ``loop`` names. A failure wrapped in
    an exception group (a task group's, with one failure in it) is raised as itself, as
    the other packages raise it."""
    backend, options = BACKENDS[loop]
    try:
        return anyio.run(main, backend=backend, backend_options=options)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def cause(exc: BaseException) -> BaseException:
    """The error under one that anyio raised: ``BrokenResourceError`` carries the socket's
    error as its cause, and ``connect_tcp``'s "All connection attempts failed" the error of
    each attempt (one, or a group of them)."""
    under = exc.__cause__
    if isinstance(under, BaseExceptionGroup):
        leaves = _leaves(under)
        under = leaves[0] if len(leaves) == 1 else None
    if under is not None and isinstance(exc, anyio.BrokenResourceError | OSError):
        return under
    return exc


def loop_name() -> str:
    """Name the backend and its loop: ``anyio/asyncio.SelectorEventLoop/epoll``,
    ``anyio/uvloop.Loop``, ``anyio/trio.run/epoll``."""
    if _in_trio():
        from ..trio_impl.loops import loop_name as trio_loop_name

        return f"anyio/{trio_loop_name()}"
    import asyncio

    from ..asyncio_impl.loops import loop_name as asyncio_loop_name

    return f"anyio/{asyncio_loop_name(asyncio.get_running_loop())}"


def clock_offset() -> float:
    """What to add to ``anyio.current_time()`` to read ``time.monotonic()``: nothing on
    asyncio, whose ``loop.time()`` is that clock (uvloop's in whole milliseconds, cached per
    loop turn); on trio, whose clock adds a random offset, the difference of fresh reads."""
    if _in_trio():
        return time.monotonic() - anyio.current_time()
    return 0.0


def _in_trio() -> bool:
    trio = sys.modules.get("trio")  # only the trio backend imports it
    return trio is not None and bool(trio.lowlevel.in_trio_run())


class Signals:
    """SIGINT and SIGTERM, delivered by ``anyio.open_signal_receiver`` (the backend's own
    signal handling), in place from here until :meth:`close`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._receiver = self._stack.enter_context(anyio.open_signal_receiver(*self.SIGNALS))

    async def wait(self) -> int:
        """Wait for the next signal; return its number."""
        signum: int = await self._receiver.__anext__()
        return signum

    def close(self) -> None:
        self._stack.close()


async def wait_or_signal(work: Callable[[], Awaitable[None]], signals: Signals) -> int | None:
    """Run ``work`` (raising what it raises) and return None, unless SIGINT or SIGTERM
    comes first: then cancel the work and return the signal's number."""
    interrupted: int | None = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal interrupted
            interrupted = await signals.wait()
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await work()
        group.cancel_scope.cancel()  # the work is done: stop watching
    return interrupted


async def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle = anyio.Event()
    sink.when_idle(idle.set)
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as group:
            if signals is not None:

                async def watch() -> None:
                    await signals.wait()
                    group.cancel_scope.cancel()

                group.start_soon(watch)
            await idle.wait()
            group.cancel_scope.cancel()
    return sink.live == 0
