"""Sink server on blocking sockets: an accepting thread and one thread per connection, each
reading with ``recv_into`` into a buffer it reuses. The main thread ticks and waits for the
signal. Siblings: selectors_impl/server.py, asyncio_impl/server.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from blocking_impl import loops
from blocking_impl.ticker import Ticker
from common.events import EOF, ERROR, RESET, Event, describe
from common.interface import RESET_LINGER, ServeOptions, describe_error, format_peer
from common.loopdelay import LoopDelay
from common.sink import Sink

__all__ = ["accept_connections", "handle_connection", "main", "serve", "serve_until_stopped"]

#: Bytes per recv_into(), into a buffer each connection's thread reuses.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(sink: Sink, lock: threading.Lock, sock: socket.socket, peer: str) -> None:
    """Count one connection's bytes until EOF, then report it (in this connection's thread)."""
    buffer = memoryview(bytearray(READ_SIZE))

    def abort() -> None:
        # Wakes our blocked recv_into() from another thread: it returns 0.
        sock.shutdown(socket.SHUT_RDWR)

    with lock:  # the Sink is shared by every thread
        connection = sink.open(peer, time.monotonic(), abort)
    if connection is None:  # --max-connections are open: reset, and reported
        _reset(sock)
        return
    outcome = EOF
    try:
        while count := sock.recv_into(buffer):
            connection.feed(buffer[:count], time.monotonic())  # our own account: no lock
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    finally:
        with lock:
            sink.close(connection, outcome, time.monotonic())
        sock.close()


# --- server -----------------------------------------------------------------------------


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
    sock.close()


def accept_connections(
    sink: Sink, lock: threading.Lock, listener: socket.socket, stopping: threading.Event
) -> None:
    """Accept until ``stopping`` is set, a thread per connection. When accept() fails
    (out of descriptors, say) or a thread cannot start, stop accepting for the sink's
    back-off, then go on: the connections wait in the kernel's queue meanwhile."""
    while not stopping.is_set():
        try:
            sock, address = listener.accept()
        except ConnectionAbortedError:  # gone before we accepted it
            continue
        except OSError as exc:
            if stopping.is_set():
                return  # the listener was shut down to wake us: stop accepting
            with lock:
                pause = sink.accept_failed(describe_error(exc), time.monotonic())
            stopping.wait(pause)
            continue
        peer = format_peer(address)
        thread = threading.Thread(target=handle_connection, args=(sink, lock, sock, peer))
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of memory or a limit
            _reset(sock)
            reason = f"no thread for it ({exc})"
            with lock:
                sink.reject(peer, reason)
                pause = sink.accept_failed(reason, time.monotonic())
            stopping.wait(pause)


def serve_until_stopped(options: ServeOptions, emit: Callable[[Event], None]) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    lock = threading.Lock()
    delay = LoopDelay()
    signals = loops.Signals()
    sink = options.sink(delay, emit)
    idle = threading.Event()
    stopping = threading.Event()
    try:
        # The family of the host asked for (create_server alone would take IPv4 only); an
        # IPv6 listener on "::" is IPv6 only, as asyncio's.
        family = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server(
            (options.host, options.port), family=family, backlog=BACKLOG
        )
        acceptor = threading.Thread(
            target=accept_connections, args=(sink, lock, listener, stopping)
        )
        acceptor.start()
        with lock:
            emit(options.listening(listener.getsockname()[1], loops.describe()))
        ticker = Ticker(delay, lock, sink.expire)
        ticker.run_until(lambda: bool(signals.arrived))
        stopping.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); then stop accepting
        listener.close()
        acceptor.join()
        with lock:
            sink.when_idle(idle.set)
        # A second signal cuts the grace period short.
        ticker.run_until(lambda: idle.is_set() or len(signals.arrived) > 1, options.grace)
        if not idle.is_set():
            with lock:
                sink.abort_all()
            ticker.run_until(idle.is_set)
    finally:
        signals.close()
    with lock:
        emit(sink.stopped())
    return signals.arrived[0]


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Callable[[Event], None]) -> int:
    """Run the sink in this thread and its workers until a signal stops it; return that
    signal."""
    return serve_until_stopped(options, emit)


def main() -> None:
    """Serve on 127.0.0.1:1234 and print each connection until Ctrl-C, like the talk's server."""
    serve_until_stopped(ServeOptions(impl="blocking"), lambda e: print(describe(e)))


if __name__ == "__main__":
    main()
