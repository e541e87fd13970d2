"""Sink server on blocking sockets: an accepting thread and one thread per connection, each
reading with ``recv_into`` into a buffer it reuses. The main thread ticks and waits for the
signal.

Echo mode writes each read back with ``sendall`` before reading again: a peer that does not
read its answers blocks that thread's ``sendall``, so it reads no more. TLS is the standard
library's ``SSLContext.wrap_socket``, the handshake in the connection's thread; the
client's close_notify ends the stream, and ours, ``unwrap()``, answers it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time

from ..common.events import EOF, ERROR, RESET, TLS_FAILED, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Connection
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .loops import SharedSink
from .ticker import start_ticker

__all__ = [
    "Acceptor",
    "handle_connection",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Bytes per recv_into(), into a buffer each connection's thread reuses.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(
    sink: SharedSink,
    sock: socket.socket,
    peer: str,
    context: ssl.SSLContext | None,
    counted: threading.Event,
) -> None:
    """Count one connection's bytes until EOF (echo: write each back first), then report it
    (in this connection's thread); set ``counted`` once the sink counted or refused it."""
    try:
        admitted = _admit(sink, sock, peer, context)
    finally:
        counted.set()  # the acceptor takes the next connection only now
    if admitted is None:
        return
    connection, sock = admitted
    buffer = memoryview(bytearray(READ_SIZE))
    outcome = EOF
    try:
        if isinstance(sock, ssl.SSLSocket):
            _handshake(sock)
            connection.secured(*version_and_cipher(sock))
        while count := sock.recv_into(buffer):
            connection.feed(buffer[:count], time.monotonic())  # our own account: no lock
            if sink.echo:
                # Blocks while the peer does not read its answers, and we read no more of
                # it meanwhile: the flow control. Other connections have threads of their own.
                sock.sendall(buffer[:count])
                connection.echoed(count)
        if isinstance(sock, ssl.SSLSocket):
            # recv_into() returned 0 at the client's close_notify (a FIN without one raises
            # SSLEOFError: suppress_ragged_eofs=False); ours answers it: the client's receipt.
            # A client that closed without waiting for it has all it needs from us.
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


def _admit(
    sink: SharedSink, sock: socket.socket, peer: str, context: ssl.SSLContext | None
) -> tuple[Connection, socket.socket] | None:
    """Open the connection in the sink (over TLS with ``context``), or refuse it: None."""
    if context is not None:
        # No handshake yet: it waits until the sink counts the connection, so that a peer
        # that never sends its ClientHello holds a place and times out like any other.
        try:
            sock = context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False
            )
        except OSError:  # the peer reset before we began (wrap_socket asks it for a byte)
            sock.close()
            sink.reject(peer, TLS_FAILED)
            return None

    def abort() -> None:
        # Wakes our blocked recv_into() (it returns 0) or sendall() (EPIPE) from another
        # thread. The socket's own shutdown: SSLSocket.shutdown() would also drop the TLS
        # layer under the thread using it. A peer that reset leaves nothing to shut down.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    connection = sink.open(peer, time.monotonic(), abort)
    if connection is None:  # --max-connections are open: reset, and reported
        _reset(sock)
        return None
    return connection, sock


def _handshake(sock: ssl.SSLSocket) -> None:
    """The TLS handshake, in this connection's thread. If it fails, end our side first: a
    plaintext peer's request is still unread (OpenSSL stopped at its first 5 bytes, not a
    record header), and closing a socket with unread bytes sends a reset, which the peer
    would read instead of our end (measured: its recv() raised ECONNRESET)."""
    try:
        sock.do_handshake()
    except OSError:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_WR)
        raise


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
    sock.close()


# --- server -----------------------------------------------------------------------------


class Acceptor(threading.Thread):
    """The thread that accepts, a thread per connection, until :meth:`stop`. When accept()
    fails (out of descriptors, say) or a thread cannot start, it stops accepting for the
    sink's back-off, then goes on: the connections wait in the kernel's queue meanwhile."""

    def __init__(
        self, sink: SharedSink, listener: socket.socket, context: ssl.SSLContext | None
    ) -> None:
        super().__init__(name="acceptor")
        self.listener = listener
        self._sink = sink
        self._context = context
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self.listener.accept()
            except ConnectionAbortedError:  # gone before we accepted it
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return  # stop() shut the listener down to wake us
                self._stopping.wait(self._sink.accept_failed(error_text(exc), time.monotonic()))
                continue
            peer = format_peer(address)
            counted = threading.Event()
            thread = threading.Thread(
                target=handle_connection, args=(self._sink, sock, peer, self._context, counted)
            )
            thread.daemon = True
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": out of memory or a limit
                _reset(sock)
                reason = f"no thread for it ({exc})"
                self._sink.reject(peer, reason)
                self._stopping.wait(self._sink.accept_failed(reason, time.monotonic()))
            else:
                # Only here: the connections' threads would race to the sink, and the one
                # counted beyond --max-connections would not be the last to come. A loop's
                # one thread counts them as it accepts them; so do we, a thread at a time.
                counted.wait()

    def stop(self) -> None:
        """Stop accepting: connections already accepted carry on."""
        self._stopping.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.join()
        self.listener.close()


def start_listening(sink: SharedSink, options: ServeOptions) -> Acceptor:
    """Listen on ``options.host:port`` and accept in a thread of its own."""
    # The family of the host asked for (create_server alone would take IPv4 only); an IPv6
    # listener on "::" is IPv6 only, as asyncio's.
    family = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.create_server((options.host, options.port), family=family, backlog=BACKLOG)
    context = server_context(options.tls) if options.tls is not None else None
    acceptor = Acceptor(sink, listener, context)
    acceptor.start()
    return acceptor


def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    delay = LoopDelay()
    sink = options.sink(delay, emit, SharedSink)
    ticker = start_ticker(sink.lock, delay, sink.expire)
    signals = loops.Signals()
    idle = threading.Event()
    try:
        acceptor = start_listening(sink, options)
        port = acceptor.listener.getsockname()[1]
        with sink.lock:
            emit(options.listening(port, loops.loop_name()))
        ticker.run_until(lambda: bool(signals.arrived))
        acceptor.stop()
        sink.when_idle(idle.set)
        # A second signal cuts the grace period short.
        ticker.run_until(lambda: idle.is_set() or len(signals.arrived) > 1, options.grace)
        if not idle.is_set():
            sink.abort_all()
            ticker.run_until(idle.is_set)
    finally:
        signals.close()
    with sink.lock:
        emit(sink.stopped())
    return signals.arrived[0]


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink in this thread and its workers until a signal stops it; return that
    signal."""
    return loops.run(lambda: serve_until_stopped(options, emit), options.loop)


def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    standalone.run_server("blocking", main)
