"""Running asyncio: on which loop (the standard selector loop or uvloop), until which signal;
and TLS as asyncio does it, with what it does not tell you (a handshake in progress, a
truncation)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..common.events import format_peer
from ..common.options import ClientTls
from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge.kernel import RESET_LINGER
from ..edge.tls import client_context

__all__ = [
    "Signals",
    "TlsServer",
    "close_notify_received",
    "held",
    "loop_factory",
    "loop_name",
    "report_accept_trouble",
    "reset",
    "run",
    "start_tls_server",
    "stop_accepting",
    "tls_client",
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


def reset(transport: asyncio.WriteTransport | socket.socket) -> None:
    """Close ``transport`` (or a socket no transport owns yet) with a reset: ``abort()``
    alone sends a FIN."""
    if isinstance(transport, socket.socket):
        transport.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:  # uvloop's pseudo-socket takes setsockopt too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
    transport.abort()


def held(transport: asyncio.WriteTransport) -> int:
    """What ``transport`` still holds unsent: what a failed transfer did not hand to the
    kernel. 0 once 3.10's SSL transport has lost its connection: its
    ``get_write_buffer_size()`` asks the socket's transport, None by then (sslproto.py)."""
    try:
        return transport.get_write_buffer_size()
    except AttributeError:
        return 0


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


async def stop_accepting(server: asyncio.Server | TlsServer) -> None:
    """Stop accepting, and close ``server`` once every connection it accepted is attached
    to it: those connections carry on. (A :class:`TlsServer` has nothing to wait for: what
    it accepted is a task of its own already.)

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
    if isinstance(server, asyncio.Server) and isinstance(loop, asyncio.SelectorEventLoop):
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


# --- TLS --------------------------------------------------------------------------------


class TlsServer:
    """A TLS listener that sees each connection from its accept, not from its handshake.

    asyncio's own servers (``start_server``, ``create_server`` with ``ssl=``) call the
    protocol only once the handshake is done (``connection_made`` in sslproto.py's
    ``_on_handshake_complete``), and drop one that fails without a word: the SSLError is
    an OSError, which ``_fatal_error`` logs at debug level only, and no exception handler
    hears of it (measured on both loops). A handshake in progress could then be neither
    counted against --max-connections, nor timed out by --idle-timeout, nor reported.
    Accepting plainly and upgrading with ``start_tls()`` is no way out: the plain protocol
    reads the ClientHello before the upgrade and it is lost (23 of 30 handshakes hung on
    asyncio's loop, 13 of 30 on uvloop, measured; cpython#142352, uvloop#707).

    So this server accepts itself (``sock_accept``) and hands each socket, with its peer,
    to ``serve_one``, which counts it at once and lets asyncio's TLS take the socket over
    from its first byte (``connect_accepted_socket(ssl=)``). It offers what
    ``serve_until_stopped`` asks of an ``asyncio.Server``: ``sockets``, ``close()`` and
    ``wait_closed()``."""

    def __init__(
        self,
        sock: socket.socket,
        serve_one: Callable[[socket.socket, str], Awaitable[None]],
        sink: Sink,
    ) -> None:
        self.sockets = (sock,)
        self._connections: set[asyncio.Future[None]] = set()
        self._accepting = asyncio.ensure_future(self._accept(sock, serve_one, sink))

    async def _accept(
        self,
        sock: socket.socket,
        serve_one: Callable[[socket.socket, str], Awaitable[None]],
        sink: Sink,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, address = await loop.sock_accept(sock)
                except OSError as exc:
                    await self._accept_failed(loop, exc, sink)
                    continue
                connection = asyncio.ensure_future(serve_one(conn, format_peer(address)))
                self._connections.add(connection)
                connection.add_done_callback(self._connections.discard)
        finally:
            # Closed here, once the cancelled accept has stopped watching it (the selector
            # loop stops in a callback of the next turn), never under a pending watch.
            sock.close()

    @staticmethod
    async def _accept_failed(loop: asyncio.AbstractEventLoop, exc: OSError, sink: Sink) -> None:
        if out_of_resources(exc):  # out of descriptors or memory: say so once, wait, retry
            await asyncio.sleep(sink.accept_failed(error_text(exc), time.monotonic()))
        elif not isinstance(exc, ConnectionAbortedError):  # not a peer gone while queued
            # As asyncio's own accept does (selector_events.py): log it and go on.
            loop.call_exception_handler({"message": "Error on accepting", "exception": exc})

    def close(self) -> None:
        """Stop accepting; connections already accepted carry on."""
        self._accepting.cancel()

    async def wait_closed(self) -> None:
        """Wait until the listener is closed and every connection task has ended."""
        await asyncio.wait({self._accepting, *self._connections})


async def start_tls_server(
    serve_one: Callable[[socket.socket, str], Awaitable[None]],
    sink: Sink,
    host: str,
    port: int,
    backlog: int,
) -> TlsServer:
    """Listen on ``host:port`` (its first address, as ``socket.create_server`` binds) and
    hand each accepted socket to ``serve_one``: see :class:`TlsServer`."""
    loop = asyncio.get_running_loop()
    family, _, _, _, address = (
        await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    )[0]
    sock = socket.create_server(address[:2], family=family, backlog=backlog)
    sock.setblocking(False)
    return TlsServer(sock, serve_one, sink)


def close_notify_received(ssl_object: ssl.SSLObject | None) -> bool:
    """Whether the TLS peer ended with close_notify (TLS's EOF), not a bare TCP FIN that
    anyone on the path can forge (a truncation); True for TCP (``ssl_object`` None).

    asyncio's callbacks cannot tell: at a FIN without close_notify CPython's SSLProtocol
    calls the protocol's ``eof_received()`` all the same (3.11 to 3.13: sslproto.py
    ``eof_received``, then ``_do_shutdown`` skips ``unwrap()`` and calls
    ``_call_eof_received()``; 3.10 calls it at the FIN and not at close_notify), and a
    stream's ``read()`` returns ``b""`` either way; uvloop calls it at close_notify only
    (sslproto.pyx, uvloop#385). The TLS layer knows: once close_notify came, reading from
    it gives ``b""`` (or SSLZeroReturnError once ours went out too); after a bare FIN it
    still waits for records (SSLWantReadError: asyncio never marks its incoming BIO at
    EOF). Asked once the stream has ended, when asyncio has handed over what came."""
    if ssl_object is None:
        return True
    try:
        return ssl_object.read(1) == b""
    except ssl.SSLZeroReturnError:
        return True
    except ssl.SSLError:
        return False


def tls_client(tls: ClientTls | None, close_timeout: float) -> dict[str, Any]:
    """What makes ``open_connection`` or ``create_connection`` speak TLS: our context, the
    name to check; and asyncio's own wait for the peer's close_notify after ours
    (``ssl_shutdown_timeout``, 3.11+; 3.10's sslproto has no such timer) set to
    ``close_timeout``, as its default (30 s, ``constants.SSL_SHUTDOWN_TIMEOUT``) would cut
    a longer one short. Nothing for TCP."""
    if tls is None:
        return {}
    found: dict[str, Any] = {"ssl": client_context(tls), "server_hostname": tls.server_hostname}
    if sys.version_info >= (3, 11):
        found["ssl_shutdown_timeout"] = close_timeout
    return found
