"""Sink server on gevent: a ``StreamServer`` runs ``handle_connection`` in a greenlet per
connection, which reads with ``recv_into`` until EOF: blocking-looking code, the hub under it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept. Echo
mode writes each read back with ``sendall`` before reading again: a peer that does not read
its answers parks that greenlet, so it reads no more. TLS is gevent's own ``SSLSocket``
around the accepted socket, the handshake in the connection's greenlet; the client's
close_notify ends the stream, and ours, ``unwrap()``, answers it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

import gevent
import gevent.ssl
from gevent import socket as gsocket
from gevent.server import StreamServer

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, TLS_FAILED, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = [
    "SinkServer",
    "handle_connection",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Bytes per recv_into(). One buffer serves every sink connection: a greenlet switches away
#: only inside a call that would block, so it counts what it read before another reads
#: again. An echo connection has its own: it writes what it read, and a write can wait.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(
    sink: Sink, buffer: memoryview, sock: Any, address: Any, context: ssl.SSLContext | None
) -> None:
    """Count one connection's bytes until EOF (echo: write each back first), then report it
    (in its own greenlet)."""
    peer = format_peer(address)
    if context is not None:
        # gevent's SSLSocket, as gevent.ssl.SSLContext.wrap_socket makes it (gevent/ssl.py):
        # the stdlib context's own wrap_socket would make the stdlib's, whose calls block
        # the whole hub. No handshake yet: it waits until the sink counts the
        # connection, so that a peer that never sends its ClientHello holds a place.
        try:
            sock = gevent.ssl.SSLSocket(
                sock,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,  # a FIN without close_notify raises SSLEOFError
                _context=context,
            )
        except OSError:  # the peer reset before we began (it asks the peer for a byte)
            sock.close()
            sink.reject(peer, TLS_FAILED)
            return
    if sink.echo:
        # sendall() below can switch to the hub mid-write, and another greenlet's read into
        # the shared buffer would overwrite what is still to go: a buffer of its own.
        buffer = memoryview(bytearray(len(buffer)))

    def abort() -> None:
        # Wakes our recv_into() (it returns 0) or sendall() (EPIPE), waiting in the hub,
        # from another greenlet. The socket's own shutdown: gevent's SSLSocket.shutdown()
        # would also drop the TLS layer. A peer that reset leaves nothing to shut down.
        with contextlib.suppress(OSError):
            gsocket.socket.shutdown(sock, socket.SHUT_RDWR)

    connection = sink.open(peer, time.monotonic(), abort)
    if connection is None:  # --max-connections are open: reset, and reported
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        sock.close()
        return
    outcome = EOF
    burst = Burst()
    try:
        if context is not None:
            _handshake(sock)
            connection.secured(*version_and_cipher(sock))
        # Blocks this greenlet only: recv_into() waits in the hub until the socket is readable.
        while count := sock.recv_into(buffer):
            connection.feed(buffer[:count], time.monotonic())
            if sink.echo:
                # Parks this greenlet while the peer does not read its answers, and we read
                # no more of it meanwhile: the flow control. The hub serves the others.
                sock.sendall(buffer[:count])
                connection.echoed(count)
            if burst.add(count):
                # A socket that always has data never waits, so never switches: eager reads
                # starve the hub (gevent issue 892). Yield once per burst, until the loop
                # has run its timers (idle(): sleep(0) runs only other greenlets).
                gevent.idle()
        if context is not None:
            # recv_into() returned 0 at the client's close_notify (a FIN without one raised
            # SSLEOFError); ours answers it: the client's receipt. A client that closed
            # without waiting for it has all it needs from us.
            with contextlib.suppress(OSError):
                sock.unwrap()
    except ssl.SSLEOFError:
        # No close_notify: cut short, after the handshake; before it, the handshake failed.
        # (CPython 3.11 also reports a reset under TLS this way.)
        outcome = TRUNCATED if connection.tls_version else ERROR
    except ConnectionResetError:
        outcome = RESET
    except OSError:  # a TLS handshake that failed (a plaintext peer) among them
        outcome = ERROR
    finally:
        sink.close(connection, outcome, time.monotonic())
        sock.close()


def _handshake(sock: Any) -> None:
    """The TLS handshake, in this connection's greenlet. If it fails, end our side first: a
    plaintext peer's request is still unread (OpenSSL stopped at its first 5 bytes, not a
    record header), and closing a socket with unread bytes sends a reset, which the peer
    would read instead of our end."""
    try:
        sock.do_handshake()
    except OSError:
        with contextlib.suppress(OSError):
            gsocket.socket.shutdown(sock, socket.SHUT_WR)
        raise


class SinkServer(StreamServer):  # type: ignore[misc]  # gevent carries no annotations here
    """gevent's ``StreamServer``, pausing quietly when accept() runs out of descriptors.

    gevent backs off by itself when accept() fails, but prints a traceback each time
    through the hub's error handler; here the sink reports the episode once instead, and
    accepting pauses for its back-off (``stop_accepting``, ``start_accepting``)."""

    def __init__(self, sink: Sink, listener: Any, handle: Any) -> None:
        super().__init__(listener, handle, backlog=BACKLOG)
        self._sink = sink

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as exc:
            if not out_of_resources(exc):
                raise
            self.stop_accepting()
            pause = self.loop.timer(self._sink.accept_failed(error_text(exc), time.monotonic()))
            pause.start(lambda: None if self.closed else self.start_accepting())
            return None  # nothing to accept now: gevent waits for the next readiness


# --- server -----------------------------------------------------------------------------


def start_listening(sink: Sink, options: ServeOptions) -> SinkServer:
    """Listen on ``options.host:port`` with a greenlet per connection."""
    buffer = memoryview(bytearray(READ_SIZE))
    # Not StreamServer's ssl_context=: it shakes hands before handle() runs
    # (gevent/server.py, wrap_socket_and_handle), before the sink can count the peer.
    context = server_context(options.tls) if options.tls is not None else None
    server = SinkServer(
        sink,
        (options.host, options.port),
        lambda s, a: handle_connection(sink, buffer, s, a, context),
    )
    server.start()
    return server


def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    hub = gevent.get_hub()
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    stop_ticker = start_ticker(hub, delay, sink.expire)
    signals = loops.Signals()
    try:
        server = start_listening(sink, options)
        emit(options.listening(server.server_port, loops.loop_name()))
        stopped_by = signals.wait()
        assert stopped_by is not None
        server.close()  # stop accepting; the greenlets of open connections carry on
        if not loops.wait_idle(sink, options.grace, signals):
            sink.abort_all()
            loops.wait_idle(sink, None)
    finally:
        stop_ticker()
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink on the loop that ``options.loop`` names until a signal stops it; return
    that signal."""
    return loops.run(lambda: serve_until_stopped(options, emit), options.loop)


def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    standalone.run_server("gevent", main)
