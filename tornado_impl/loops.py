"""Running Tornado: since Tornado 5 the IOLoop wraps the running asyncio loop, so the loop
is asyncio's (or uvloop) and so are running it and its signals; only the names differ.
And what Tornado's TLS lacks: a close_notify, either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop

from ..asyncio_impl import loops as asyncio_loops
from ..asyncio_impl.loops import Signals, run, wait_idle, wait_or_signal
from ..common.options import ClientTls, ServerTls
from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge import tls
from ..edge.kernel import RESET_LINGER

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "Signals",
    "TlsSocket",
    "client_context",
    "loop_name",
    "quiet_handshake_warnings",
    "refuse_ragged_eofs",
    "report_accept_trouble",
    "reset",
    "run",
    "server_context",
    "wait_idle",
    "wait_or_signal",
]


def loop_name(io_loop: IOLoop) -> str:
    """Name the IOLoop and the asyncio loop under it: ``AsyncIOMainLoop/asyncio...``."""
    return f"{type(io_loop).__name__}/{asyncio_loops.loop_name(asyncio.get_running_loop())}"


def reset(sock: socket.socket | None) -> None:
    """Make the next ``close()`` of ``sock`` a reset: IOStream has no abort of its own."""
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)


def report_accept_trouble(io_loop: IOLoop, listeners: list[socket.socket], sink: Sink) -> None:
    """Stop watching ``listeners`` for the sink's back-off when accept() fails for want of
    descriptors or memory, report it once per episode, and watch them again after.

    Tornado's accept handler (``tornado.netutil.add_accept_handler``) lets such an error
    escape into the loop, which logs it and, the listener being still readable, calls the
    handler again at once: 100% CPU and about 160,000 traceback lines a second here. The
    loop's exception handler is where the error arrives; ``IOLoop.update_handler(fd, 0)``
    stops watching a listener, and ``IOLoop.READ`` watches it again."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    paused = [False]

    def resume() -> None:
        paused[0] = False
        for sock in listeners:
            if sock.fileno() >= 0:  # not closed by TCPServer.stop() meanwhile
                io_loop.update_handler(sock.fileno(), IOLoop.READ)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if out_of_resources(error):
            assert error is not None
            if not paused[0]:
                pause = sink.accept_failed(error_text(error), time.monotonic())
                for sock in listeners:
                    io_loop.update_handler(sock.fileno(), 0)
                io_loop.call_later(pause, resume)
                paused[0] = True
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


# --- TLS ----------------------------------------------------------------------------------


class TlsSocket(ssl.SSLSocket):
    """The ``ssl.SSLSocket`` under our ``SSLIOStream``s (``SSLContext.sslsocket_class``):
    close_notify, TLS's EOF, which Tornado never sends.

    IOStream reads a 0-byte ``recv_into`` as the end and closes the socket at once
    (iostream.py ``_read_to_buffer``: ``elif bytes_read == 0: self.close()``, and
    ``close_fd``: ``self.socket.close()``): nothing of ours runs in between, and closing an
    ``SSLSocket`` sends no close_notify (only ``unwrap()`` does). So the peer's close_notify
    is answered here, as it is read; and the answer to ours, which CPython raises as
    ``SSLZeroReturnError`` once we sent ours first (it returns 0 only when theirs came
    first), is read as the same 0, the end.
    """

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            count = super().recv_into(buffer, nbytes, flags)
        except ssl.SSLZeroReturnError:  # their close_notify, after ours: the end
            return 0
        if count == 0:  # their close_notify first (IOStream never asks for 0 bytes): answer
            # Theirs is in, so SSL_shutdown writes ours and completes at once. Were the
            # kernel's buffer full (it is not: a sink writes nothing, an echo server wrote
            # back everything before reading on), the peer would see a FIN without
            # close_notify, and say so.
            with contextlib.suppress(OSError):
                self.unwrap()
        return count


def refuse_ragged_eofs(sock: ssl.SSLSocket) -> None:
    """Make a FIN without close_notify raise ``SSLEOFError`` on ``sock`` instead of reading
    as EOF: ``SSLContext.wrap_socket`` suppresses such ragged EOFs by default, and Tornado
    passes no ``suppress_ragged_eofs`` (netutil.py ``ssl_wrap_socket``). SSLIOStream then
    closes with that error in ``stream.error``, quietly (it counts as a reset there:
    ``SSLIOStream._is_connreset``)."""
    sock.suppress_ragged_eofs = False  # type: ignore[attr-defined]  # typeshed omits it


def server_context(tls_options: ServerTls) -> ssl.SSLContext:
    """The server's context (``edge.tls``), making :class:`TlsSocket`s."""
    context = tls.server_context(tls_options)
    context.sslsocket_class = TlsSocket
    return context


def client_context(tls_options: ClientTls) -> ssl.SSLContext:
    """The client's context (``edge.tls``), making :class:`TlsSocket`s."""
    context = tls.client_context(tls_options)
    context.sslsocket_class = TlsSocket
    return context


def _said_elsewhere(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SSL Error on ")


def quiet_handshake_warnings() -> None:
    """Keep Tornado's warning about a failed handshake off stderr: SSLIOStream logs it
    (iostream.py ``_do_ssl_handshake``: ``gen_log.warning("SSL Error on %s %s: %s", ...)``)
    and then closes the stream with the same error, which is where we report it (the
    server: ``stream.error``, a ``received`` event with outcome ``error``; the client: the
    handshake's future, its one line)."""
    logging.getLogger("tornado.general").addFilter(_said_elsewhere)
