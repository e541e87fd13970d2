"""Running trio: one run loop (``trio.run``), until which signal, and the errors trio wraps.

trio has one loop per platform (its I/O manager: epoll on Linux, kqueue on BSD and macOS,
IOCP on Windows), chosen by trio itself, so ``--loop`` is only ``default``. Every trio I/O
call is a checkpoint: the scheduler may run other tasks, and polls for I/O and timers
between batches, so nothing here needs to yield by hand as the other clients do.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import trio

from ..common.results import error_text
from ..common.sink import Sink, out_of_resources

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # trio depends on it there

__all__ = [
    "Signals",
    "agreed",
    "cause",
    "loop_name",
    "now",
    "report_accept_trouble",
    "run",
    "sleep_until",
    "wait_idle",
    "wait_or_signal",
]

T = TypeVar("T")

#: What trio's accept loop sleeps after EMFILE and its kin (``SLEEP_TIME`` in
#: trio/_highlevel_serve_listeners.py), and the logger it complains to meanwhile.
ACCEPT_RETRY_DELAY = 0.1
ACCEPT_LOGGER = "trio.serve_listeners"
#: trio's I/O manager on this platform; trio names it nowhere public.
_IO_MANAGER = (
    "epoll" if sys.platform.startswith("linux") else "iocp" if sys.platform == "win32" else "kqueue"
)


def run(main: Callable[[], Awaitable[T]], loop: str) -> T:
    """Run ``main`` under ``trio.run``. A failure trio wrapped in an exception group (a
    nursery's, with one failure in it) is raised as itself, as the other packages raise it."""
    if loop != "default":
        raise ValueError(f"unknown trio loop {loop!r}")
    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def cause(exc: BaseException) -> BaseException:
    """The error under one that trio raised: ``BrokenResourceError`` carries the socket's
    error as its cause, and ``open_tcp_stream`` an exception group of every attempt's."""
    under = exc.__cause__
    if isinstance(exc, trio.BrokenResourceError) and under is not None:
        return under
    if isinstance(under, BaseExceptionGroup):
        leaves = list(_leaves(under))
        if len(leaves) == 1:
            return leaves[0]
    return exc


_CLOCK_OFFSET: trio.lowlevel.RunVar[float] = trio.lowlevel.RunVar("nbio_clock_offset")


def now() -> float:
    """The run's clock on ``time.monotonic()``'s scale: what every timestamp here reads.

    trio's clock is ``time.perf_counter()`` (the same clock on Linux) plus a random offset,
    so no one mistakes it for wall time; the offset is taken away once per run. Under a
    ``trio.testing.MockClock`` this is the mock's virtual time, so a test can jump past an
    idle timeout without waiting for it."""
    return trio.current_time() + _offset()


async def sleep_until(at: float) -> None:
    """Sleep until ``at`` on :func:`now`'s scale (``trio.sleep_until`` takes the run's)."""
    await trio.sleep_until(at - _offset())


def _offset() -> float:
    try:
        return _CLOCK_OFFSET.get()
    except LookupError:
        offset = time.monotonic() - trio.current_time()
        _CLOCK_OFFSET.set(offset)
        return offset


def agreed(stream: trio.SSLStream[Any]) -> tuple[str | None, str | None]:
    """What a finished handshake agreed: ``("TLSv1.3", "TLS_AES_256_GCM_SHA384")``. An
    ``SSLStream`` forwards its ``SSLObject``'s ``version()`` and ``cipher()`` (untyped,
    through ``__getattr__``) and keeps the object itself private."""
    version: str | None = stream.version()
    cipher: tuple[str, str, int] | None = stream.cipher()
    return version, cipher[0] if cipher else None


def loop_name() -> str:
    """Name the run loop and its I/O manager: ``trio.run/epoll``."""
    return f"trio.run/{_IO_MANAGER}"


@contextlib.contextmanager
def report_accept_trouble(sink: Sink) -> Iterator[None]:
    """Report accept() failing for want of descriptors or memory once per episode, through
    ``sink``, instead of trio's traceback per attempt.

    trio handles it itself: its accept loop logs an error with the traceback to the
    ``trio.serve_listeners`` logger and sleeps 100 ms (that logger is the public part).
    A filter on it hands each record to the sink, which reports the first of an episode."""

    def to_sink(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not out_of_resources(error):
            return True  # anything else trio says goes through as it is
        assert error is not None
        sink.accept_failed(error_text(error), now(), ACCEPT_RETRY_DELAY)
        return False

    logger = logging.getLogger(ACCEPT_LOGGER)
    logger.addFilter(to_sink)
    try:
        yield
    finally:
        logger.removeFilter(to_sink)


class Signals:
    """SIGINT and SIGTERM, delivered to the run loop by ``trio.open_signal_receiver``, whose
    handler is in place from here until :meth:`close`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._receiver = self._stack.enter_context(trio.open_signal_receiver(*self.SIGNALS))

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
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal interrupted
            interrupted = await signals.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await work()
        nursery.cancel_scope.cancel()  # the work is done: stop watching
    return interrupted


async def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle = trio.Event()
    sink.when_idle(idle.set)
    with trio.move_on_after(float("inf") if timeout is None else timeout):
        async with trio.open_nursery() as nursery:
            if signals is not None:

                async def watch() -> None:
                    await signals.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
            await idle.wait()
            nursery.cancel_scope.cancel()
    return sink.live == 0
