"""Running asyncio: on which loop (the standard selector loop or uvloop), until which signal."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge.kernel import RESET_LINGER

__all__ = [
    "Signals",
    "loop_factory",
    "loop_name",
    "report_accept_trouble",
    "reset",
    "run",
    "stop_accepting",
    "wait_idle",
    "wait_or_signal",
]

#: How long asyncio's own accept loop waits after EMFILE and its kin before it tries again
#: (``asyncio.constants.ACCEPT_RETRY_DELAY``).
ACCEPT_RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = "socket.accept() out of system resource"

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


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Name the loop in use and, for a selector loop, its selector: ``SelectorEventLoop/epoll``."""
    name = f"{type(loop).__module__.split('.')[0]}.{type(loop).__name__}"
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        name += f"/{type(selector).__name__.removesuffix('Selector').lower()}"
    return name


def reset(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` with a reset: ``abort()`` alone sends a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:  # uvloop's pseudo-socket takes setsockopt too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
    transport.abort()


def report_accept_trouble(loop: asyncio.AbstractEventLoop, sink: Sink) -> None:
    """Report accept() failing for want of descriptors or memory once per episode, through
    ``sink``, instead of a traceback per attempt.

    asyncio's selector loop handles it itself: it stops watching the listener and tries
    again a second later. But it does not stop at the first failure: it logs and schedules
    that retry once per slot of the backlog, every time (CPython gh-151615), which made
    30,000 to 57,000 traceback lines a second here. uvloop does not report it at all: libuv
    accepts and closes what is queued (``uv__emfile_trick``)."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") == _OUT_OF_RESOURCES and out_of_resources(error):
            assert error is not None
            sink.accept_failed(error_text(error), time.monotonic(), ACCEPT_RETRY_DELAY)
            return
        # One of those retries, due after server.close() closed the listener: it fails on
        # descriptor -1. Nothing is lost (we stopped accepting on purpose): say nothing.
        if isinstance(error, ValueError) and "_start_serving" in repr(context.get("handle")):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


async def stop_accepting(server: asyncio.Server) -> None:
    """Stop accepting, and close ``server`` once every connection it accepted is attached
    to it: those connections carry on.

    asyncio's selector loop accepts in a reader callback and makes each transport in a
    task of its own (``_accept_connection2``, a loop turn after accept4), which first
    attaches it to the server: ``Server._attach`` asserts ``self._sockets is not None``.
    A ``close()`` in between fails that assert, which the task swallows (it logs only in
    debug mode), and the socket is closed, reported to no one (CPython gh-109564): 51 of
    300 connections accept4 returned in a burst across SIGTERM, measured on 3.11. So stop
    watching the listeners first, then give those tasks their turn (created before our
    next step, they run before it) and close. uvloop makes the transport in its accept
    callback: there is nothing to wait for."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.SelectorEventLoop):
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())  # cancels an accept callback already due
        await asyncio.sleep(0)
    server.close()


class Signals:
    """SIGINT and SIGTERM, delivered on the loop, counted so a second one can cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._queue.put_nowait, signum)

    async def wait(self) -> int:
        """Wait for the next signal; return its number."""
        return await self._queue.get()

    def close(self) -> None:
        for signum, handler in self._previous.items():
            self._loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # remove_signal_handler() leaves the default


async def wait_or_signal(work: Awaitable[T], signals: Signals) -> int | None:
    """Wait for ``work`` (raising what it raises) and return None, unless SIGINT or SIGTERM
    comes first: then cancel the work and return the signal's number."""
    task = asyncio.ensure_future(work)
    interrupt = asyncio.ensure_future(signals.wait())
    try:
        await asyncio.wait({task, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupt.cancel()
    if task.done():
        task.result()
        return None
    task.cancel()
    await asyncio.wait({task})  # let it unwind
    if not task.cancelled():
        task.exception()  # a gather() ends with our CancelledError set: it is no news
    return interrupt.result()


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
