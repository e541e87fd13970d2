"""Running Twisted: on which reactor (epoll, poll, select, or asyncio's loop, optionally
uvloop), until which signal.

A reactor must be installed before anything imports ``twisted.internet.reactor``, and
cannot be restarted: :func:`run` installs the chosen one, runs it once, and hands it to
``main`` as a parameter; no module of ours imports the global reactor.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from ..common.events import format_peer
from ..common.sink import Sink

__all__ = [
    "Signals",
    "install",
    "loop_name",
    "report_accept_trouble",
    "run",
    "stops_reading_at_an_error",
    "wait_idle",
    "wait_or_signal",
]

#: Where Twisted's listening port logs what goes wrong when it accepts.
_PORT_LOG = "twisted.internet.tcp.Port"

T = TypeVar("T")


def install(name: str) -> ReactorBase:
    """Install the reactor called ``name`` and return it."""
    if name == "default":
        from twisted.internet import default  # epoll on Linux, kqueue on BSD and macOS

        default.install()
    elif name == "poll":
        from twisted.internet import pollreactor

        pollreactor.install()
    elif name == "select":
        from twisted.internet import selectreactor  # cannot watch descriptors >= 1024

        selectreactor.install()
    elif name in ("asyncio", "uvloop"):
        import asyncio

        from twisted.internet import asyncioreactor

        loop: asyncio.AbstractEventLoop
        if name == "uvloop":
            import uvloop  # imported only when asked for: it is an optional extra

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(eventloop=loop)
    else:
        raise ValueError(f"unknown Twisted reactor {name!r}")
    from twisted.internet import reactor

    return cast(ReactorBase, reactor)


def run(main: Callable[[ReactorBase], Coroutine[Any, Any, T]], loop: str) -> T:
    """Install the reactor ``loop``, run ``main(reactor)`` on it, and return its result.

    Like ``task.react``, but it returns instead of exiting the process, and leaves
    SIGINT and SIGTERM to :class:`Signals`.
    """
    reactor = install(loop)
    outcome: list[object] = []

    def start() -> None:
        finished = Deferred.fromCoroutine(main(reactor))
        finished.addBoth(outcome.append)
        finished.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return cast(T, result)


def loop_name(reactor: object) -> str:
    """Name the reactor in use, and the loop under an asyncio reactor."""
    name = type(reactor).__name__
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        name += f"/{type(loop).__module__.split('.')[0]}.{type(loop).__name__}"
    return name


def stops_reading_at_an_error(reactor: object) -> bool:
    """Whether the reactor stops watching a socket once an error is pending on it, after
    one last read, without telling its transport: the asyncio reactor on uvloop.

    An RST that arrives while bytes are still queued makes epoll report
    ``EPOLLIN|EPOLLERR|EPOLLHUP``. libuv's poll handle stops at ``POLLERR`` and calls back
    with ``UV_EBADF`` (``uv__poll_io``, src/unix/poll.c); uvloop runs the reader's callback
    once more and closes the handle (``UVPoll._fatal_error``, uvloop/handles/poll.pyx).
    Twisted reads one ``recv(65536)`` per callback, so the reset queued behind the bytes is
    never read, and Twisted still believes it is reading. Seen under strace (a client that
    wrote 32 MiB and reset): ``epoll_pwait`` = ``EPOLLIN|EPOLLERR|EPOLLHUP`` on the
    connection, ``recvfrom`` = 65536, ``epoll_ctl(EPOLL_CTL_DEL)``, and nothing more on it
    until the idle timeout closed it. Twisted's own reactors, and uvloop's transports (a
    libuv stream, which reads until the error), do not lose it."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop is not None and type(loop).__module__.split(".")[0] == "uvloop"


def report_accept_trouble(reactor: IReactorTime, port: Any, sink: Sink) -> Callable[[], None]:
    """Report what Twisted does when accept() fails for want of descriptors or memory, and
    stop accepting for the sink's back-off; return what stops watching.

    Twisted handles EMFILE itself (``twisted/internet/tcp.py``, ``_accept``): it closes a
    descriptor it keeps in reserve, accepts every queued connection and closes it at once,
    then reserves again, and says so only in its log. Its other resource errors (ENFILE,
    ENOBUFS, ENOMEM) it logs and leaves the listener readable, so the reactor calls it again
    at once. We read its log: each connection it closed is reported as ``rejected``, the
    episode as ``accept_paused``, and the port stops reading for the back-off."""
    paused = [False]

    def resume() -> None:
        paused[0] = False
        if port.connected:  # not stopped meanwhile
            port.startReading()

    def pause(reason: str) -> None:
        if not paused[0]:
            paused[0] = True
            port.stopReading()
            reactor.callLater(sink.accept_failed(reason, time.monotonic()), resume)

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") != _PORT_LOG:
            return
        text = event.get("log_format") or ""
        if text.startswith("EMFILE recovery: Closed socket"):
            address = event.get("address")
            sink.reject(format_peer(address), "no descriptor: closed by Twisted's EMFILE recovery")
        elif text.startswith("EMFILE encountered"):
            pause(os.strerror(errno.EMFILE).lower())
        elif text.startswith("Could not accept new connection"):
            code = getattr(errno, str(event.get("acceptError")), None)
            pause(os.strerror(code).lower() if code else str(event.get("acceptError")))

    observer = cast(ILogObserver, observe)  # a log observer is any such callable
    globalLogPublisher.addObserver(observer)
    return lambda: globalLogPublisher.removeObserver(observer)


class Signals:
    """SIGINT and SIGTERM, delivered on the reactor, counted so a second one can cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, reactor: ReactorBase) -> None:
        self._reactor = reactor
        self._arrived: list[int] = []
        self._waiting: list[Deferred[int]] = []
        self._previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of the main thread, maybe
        # inside the reactor: hand the signal over the way Twisted's own handlers do.
        self._reactor.callFromThread(self._deliver, signum)

    def _deliver(self, signum: int) -> None:
        if self._waiting:
            self._waiting.pop(0).callback(signum)
        else:
            self._arrived.append(signum)

    def wait(self) -> Deferred[int]:
        """A Deferred that fires with the next signal's number."""
        if self._arrived:
            return defer.succeed(self._arrived.pop(0))
        waiting: Deferred[int] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(waiting)
        return waiting

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


async def wait_or_signal(work: Deferred[Any], signals: Signals) -> int | None:
    """Wait for ``work`` (raising what it raises) and return None, unless SIGINT or SIGTERM
    comes first: then cancel the work and return the signal's number."""
    interrupt = signals.wait()
    first: Deferred[tuple[Any, int]] = defer.DeferredList(
        [work, interrupt], fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
    )
    try:
        result, index = await first
    except defer.FirstError as exc:  # the work failed first
        interrupt.cancel()
        exc.subFailure.raiseException()
    if index == 0:
        interrupt.cancel()
        return None
    work.cancel()
    await defer.DeferredList([work], consumeErrors=True)  # let it unwind
    return cast(int, result)


async def wait_idle(
    reactor: IReactorTime, sink: Sink, timeout: float | None, signals: Signals | None = None
) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle: Deferred[None] = Deferred()
    sink.when_idle(lambda: None if idle.called else idle.callback(None))
    if timeout is None and signals is None:
        await idle
        return True
    waiters: list[Deferred[Any]] = [idle]
    if timeout is not None:
        waiters.append(deferLater(reactor, timeout, lambda: None))
    if signals is not None:
        waiters.append(signals.wait())
    await defer.race(waiters)  # the first to fire wins; race() cancels the others
    return sink.live == 0
