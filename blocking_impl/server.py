"""Sink server on blocking sockets: an accepting thread and one thread per connection, each
reading with ``recv_into`` into a buffer it reuses. The main thread ticks and waits for the
signal. Siblings: selectors_impl/server.py, asyncio_impl/server.py.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

from blocking_impl.ticker import Ticker
from common.events import EOF, ERROR, RESET, Event, describe
from common.interface import ServeOptions, format_peer
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
    if connection is None:  # --max-connections are open: refused and reported
        sock.close()
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


def accept_connections(sink: Sink, lock: threading.Lock, listener: socket.socket) -> None:
    """Accept until the listener is shut down, a thread per connection."""
    while True:
        try:
            sock, address = listener.accept()
        except OSError:
            return  # shut down: stop accepting
        thread = threading.Thread(
            target=handle_connection, args=(sink, lock, sock, format_peer(address)), daemon=True
        )
        thread.start()


def serve_until_stopped(options: ServeOptions, emit: Callable[[Event], None]) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals."""
    lock = threading.Lock()
    delay = LoopDelay()
    signals: list[int] = []
    previous = {
        s: signal.signal(s, lambda n, _: signals.append(n)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    sink = options.sink(delay, emit)
    idle = threading.Event()
    try:
        listener = socket.create_server((options.host, options.port), backlog=BACKLOG)
        acceptor = threading.Thread(target=accept_connections, args=(sink, lock, listener))
        acceptor.start()
        with lock:
            emit(options.listening(listener.getsockname()[1], "threads"))
        ticker = Ticker(delay, lock, sink.expire)
        ticker.run_until(lambda: bool(signals))
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); then stop accepting
        listener.close()
        acceptor.join()
        with lock:
            sink.when_idle(idle.set)
        # A second signal cuts the grace period short.
        ticker.run_until(lambda: idle.is_set() or len(signals) > 1, options.grace)
        if not idle.is_set():
            with lock:
                sink.abort_all()
            ticker.run_until(idle.is_set)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    with lock:
        emit(sink.stopped())


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Callable[[Event], None]) -> None:
    """Run the sink in this thread and its workers until a signal stops it."""
    serve_until_stopped(options, emit)


def main() -> None:
    """Serve on 127.0.0.1:1234 and print each connection until Ctrl-C, like the talk's server."""
    serve_until_stopped(ServeOptions(impl="blocking"), lambda e: print(describe(e)))


if __name__ == "__main__":
    main()
