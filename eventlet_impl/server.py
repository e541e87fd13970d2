"""Sink server on Eventlet: an accepting green thread spawns ``handle_connection`` into a
``GreenPool``, a green thread per connection, which reads with ``recv_into`` until EOF:
blocking-looking code, the hub under it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept. Echo
mode writes each read back with ``sendall`` before reading again: a peer that does not read
its answers parks that green thread, so it reads no more. TLS is Eventlet's
``GreenSSLSocket`` around the accepted socket, the handshake in the connection's green
thread; the client's close_notify ends the stream, and ours, ``unwrap()``, answers it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import time
from typing import Any

import eventlet
from eventlet.green import ssl as gssl
from eventlet.greenpool import GreenPool
from eventlet.greenthread import GreenThread

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, TLS_FAILED, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = [
    "handle_connection",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Bytes per recv_into(). One buffer serves every sink connection: a green thread switches
#: away only inside a call that would block, so it counts what it read before another
#: reads. An echo connection has its own: it writes what it read, and a write can wait.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(
    sink: Sink, buffer: memoryview, sock: Any, address: Any, context: ssl.SSLContext | None
) -> None:
    """Count one connection's bytes until EOF (echo: write each back first), then report it
    (in its own green thread)."""
    peer = format_peer(address)
    if context is not None:
        # Eventlet's GreenSSLSocket, as GreenSSLContext.wrap_socket makes it (eventlet/green/
        # ssl.py): the stdlib context's own wrap_socket would make the stdlib's, whose
        # calls block the whole hub. No handshake yet: it waits until the sink counts the
        # connection, so that a peer that never sends its ClientHello holds a place.
        try:
            sock = gssl.GreenSSLSocket(
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
        # sendall() below can switch to the hub mid-write, and another green thread's read
        # into the shared buffer would overwrite what is still to go: a buffer of its own.
        buffer = memoryview(bytearray(len(buffer)))
    # The standard library's socket that holds the descriptor: a green socket's fd, or the
    # GreenSSLSocket itself (a subclass of the stdlib's SSLSocket).
    tcp = sock if context is not None else sock.fd

    def abort() -> None:
        # Wakes our recv_into() (it returns 0) or sendall() (EPIPE), waiting in the hub,
        # from another green thread. The socket's own shutdown: SSLSocket.shutdown() would
        # also drop the TLS layer. A peer that reset leaves nothing to shut down.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(tcp, socket.SHUT_RDWR)

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
        # Blocks this green thread only: it waits in the hub until the socket is readable.
        while count := loops.recv_into(sock, buffer):
            connection.feed(buffer[:count], time.monotonic())
            if sink.echo:
                # Parks this green thread while the peer does not read its answers, and we
                # read no more of it meanwhile: the flow control. The hub serves the others.
                sock.sendall(buffer[:count])
                connection.echoed(count)
            if burst.add(count):
                # A socket that always has data never waits, so never switches to the hub:
                # yield once per burst. sleep(0) goes through the hub, which runs its
                # timers and polls before it comes back.
                eventlet.sleep(0)
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
    """The TLS handshake, in this connection's green thread. If it fails, end our side
    first: a plaintext peer's request is still unread (OpenSSL stopped at its first 5
    bytes, not a record header), and closing a socket with unread bytes sends a reset,
    which the peer would read instead of our end."""
    try:
        sock.do_handshake()
    except OSError:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_WR)
        raise


def _accept_connections(
    sink: Sink, listener: Any, pool: GreenPool, context: ssl.SSLContext | None
) -> None:
    """Accept connections into ``pool`` until killed, as ``eventlet.serve`` does, except
    that accept() failing (out of descriptors, say) pauses for the sink's back-off instead
    of ending the server: the connections wait in the kernel's queue meanwhile."""
    buffer = memoryview(bytearray(READ_SIZE))
    try:
        while True:
            try:
                sock, address = listener.accept()  # waits in the hub until one is queued
            except ConnectionAbortedError:  # gone before we accepted it
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse: never stop
                eventlet.sleep(sink.accept_failed(error_text(exc), time.monotonic()))
                continue
            pool.spawn_n(handle_connection, sink, buffer, sock, address, context)
    finally:
        listener.close()


# --- server -----------------------------------------------------------------------------


def start_listening(sink: Sink, options: ServeOptions) -> tuple[Any, GreenThread]:
    """Listen on ``options.host:port``, and accept in a green thread of its own; return the
    listener and that thread, whose kill() stops accepting."""
    # The family of the host asked for: eventlet.listen() takes IPv4 unless told.
    family = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)[0][0]
    # Never SO_REUSEPORT, which eventlet.listen() sets by default whenever the port is not
    # 0 (reuse_port=None, eventlet/convenience.py): a second server on the same port would
    # then listen too, and the kernel would split connections between the two, where every
    # other sink exits 1, "address already in use".
    listener = eventlet.listen(
        (options.host, options.port), family=family, backlog=BACKLOG, reuse_port=False
    )
    # The sink, not the pool, limits connections: it resets those beyond --max-connections,
    # where a full pool would leave them queued, unanswered.
    pool = GreenPool(size=sys.maxsize)
    context = server_context(options.tls) if options.tls is not None else None
    return listener, eventlet.spawn(_accept_connections, sink, listener, pool, context)


def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    hub = eventlet.hubs.get_hub()
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    stop_ticker = start_ticker(hub, delay, sink.expire)
    signals = loops.Signals()
    acceptor: GreenThread | None = None
    try:
        listener, acceptor = start_listening(sink, options)
        emit(options.listening(listener.getsockname()[1], loops.loop_name()))
        stopped_by = signals.wait()
        assert stopped_by is not None
        acceptor.kill()  # stop accepting; the green threads of open connections carry on
        if not loops.wait_idle(sink, options.grace, signals):
            sink.abort_all()
            loops.wait_idle(sink, None)
    finally:
        if acceptor is not None:
            acceptor.kill()
        stop_ticker()
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink on the hub that ``options.loop`` names until a signal stops it; return
    that signal."""
    return loops.run(lambda: serve_until_stopped(options, emit), options.loop)


def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    standalone.run_server("eventlet", main)
