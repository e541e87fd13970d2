"""Running Eventlet: on which hub (``--loop default|poll|select|asyncio``), until which
signal.

The hub is made on first use, of the class ``eventlet.hubs.use_hub`` chose: :func:`run`
chooses before anything of Eventlet runs. Code runs in green threads; a call that would
block (``recv_into``, ``sendall``, ``sleep``) switches to the hub, whose ``wait`` is the
talk's ``select``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, TypeVar

import eventlet
import eventlet.hubs
import eventlet.queue
from eventlet.event import Event
from eventlet.green import socket as gsocket
from eventlet.green.ssl import GreenSSLSocket
from eventlet.greenthread import GreenThread

from ..common.sink import Sink

__all__ = ["HUBS", "Signals", "loop_name", "recv_into", "run", "wait_idle", "wait_or_signal"]

T = TypeVar("T")

#: ``--loop`` names and the hub module each means: "default" is Eventlet's own choice
#: (``get_default_hub()``: epolls on Linux, kqueue on BSD and macOS).
HUBS = {"default": None, "poll": "poll", "select": "selects", "asyncio": "asyncio"}


def run(main: Callable[[], T], loop: str) -> T:
    """Run ``main`` in this (the main) green thread, over the hub ``loop`` names."""
    eventlet.hubs.use_hub(HUBS[loop])  # before anything else makes the hub
    return main()


def loop_name() -> str:
    """Name the hub: ``eventlet.hubs.epolls.Hub``, ``eventlet.hubs.asyncio.Hub``."""
    hub = eventlet.hubs.get_hub()
    return f"{type(hub).__module__}.{type(hub).__name__}"


class Signals:
    """SIGINT and SIGTERM, delivered on the hub: Eventlet has no signal API, so Python
    writes each signal's number to ``signal.set_wakeup_fd``, one end of a socket pair
    whose other end is a green socket that a green thread reads."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._receive, self._send = gsocket.socketpair()
        self._send.setblocking(False)  # the interpreter writes it from a signal handler
        self._previous_fd = signal.set_wakeup_fd(self._send.fileno())
        # A handler that does nothing: the wakeup fd carries the number.
        self._previous = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}
        self._queue: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
        self._reader = eventlet.spawn(self._read)

    def _read(self) -> None:
        while data := self._receive.recv(64):
            for signum in data:
                self._queue.put(signum)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the next signal, at most ``timeout`` seconds; return its number."""
        try:
            signum: int = self._queue.get(timeout=timeout)
        except eventlet.queue.Empty:
            return None
        return signum

    def close(self) -> None:
        self._reader.kill()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        for end in (self._receive, self._send):
            end.close()


def wait_or_signal(threads: list[GreenThread], signals: Signals) -> int | None:
    """Wait until every green thread is done, or one returns its failure (then kill the
    rest), or SIGINT or SIGTERM comes (then kill them all and return its number). Threads
    return their failure rather than raise it: the hub prints a traceback for every green
    thread that dies of an exception."""
    done: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
    for thread in threads:
        thread.link(lambda t: done.put(("done", t)))
    watcher = eventlet.spawn(lambda: done.put(("signal", signals.wait())))
    try:
        pending = len(threads)
        while pending:
            kind, what = done.get()
            if kind == "signal":
                _kill_all(threads)
                signum: int = what
                return signum
            pending -= 1
            if what.wait() is not None:  # returned its failure
                _kill_all(threads)
                return None
        return None
    finally:
        watcher.kill()


def _kill_all(threads: list[GreenThread]) -> None:
    for thread in threads:
        thread.kill()


def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    woken: Event = Event()

    def wake(*_: Any) -> None:
        if not woken.ready():
            woken.send(None)

    sink.when_idle(wake)
    watcher = None if signals is None else eventlet.spawn(lambda: wake(signals.wait()))
    try:
        with eventlet.Timeout(timeout, False):
            woken.wait()
    finally:
        if watcher is not None:
            watcher.kill()
    return sink.live == 0


def recv_into(sock: Any, buffer: memoryview) -> int:
    """``sock.recv_into(buffer)``, except that a reset raises ConnectionResetError.

    A green socket's ``recv_into`` returns 0, as at EOF, when the kernel says ECONNRESET
    (``SOCKET_CLOSED`` in eventlet/greenio/base.py), so a peer that reset would read as one
    that finished. This does what it does, reading the socket under it (``sock.fd``, non-
    blocking) and waiting in the hub with ``eventlet.hubs.trampoline`` at most the green
    socket's timeout, but lets the reset through. A ``GreenSSLSocket`` reads with its own:
    the standard library's SSL read under it raises on a reset (eventlet/green/ssl.py,
    ``_call_trampolining`` only waits on SSL_ERROR_WANT_READ and _WRITE)."""
    if isinstance(sock, GreenSSLSocket):
        read: int = sock.recv_into(buffer)
        return read
    while True:
        try:
            count: int = sock.fd.recv_into(buffer)
            return count
        except BlockingIOError:
            eventlet.hubs.trampoline(
                sock.fd, read=True, timeout=sock.gettimeout(), timeout_exc=TimeoutError("timed out")
            )
