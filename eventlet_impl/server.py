"""Sink server on Eventlet: an accepting green thread spawns ``handle_connection`` into a
``GreenPool``, a green thread per connection, which reads with ``recv_into`` until EOF:
blocking-looking code, the hub under it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import eventlet
from eventlet.greenpool import GreenPool
from eventlet.greenthread import GreenThread

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from . import loops
from .ticker import start_ticker

__all__ = [
    "handle_connection",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Bytes per recv_into(). One buffer serves every connection: a green thread switches away
#: only inside a call that would block, so it counts what it read before another reads.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(sink: Sink, buffer: memoryview, sock: Any, address: Any) -> None:
    """Count one connection's bytes until EOF, then report it (in its own green thread)."""

    def abort() -> None:
        # Wakes our recv_into(), waiting in the hub, from another green thread: it returns 0.
        sock.shutdown(socket.SHUT_RDWR)

    connection = sink.open(format_peer(address), time.monotonic(), abort)
    if connection is None:  # --max-connections are open: reset, and reported
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        sock.close()
        return
    outcome = EOF
    burst = Burst()
    try:
        # Blocks this green thread only: it waits in the hub until the socket is readable.
        while count := loops.recv_into(sock, buffer):
            connection.feed(buffer[:count], time.monotonic())
            if burst.add(count):
                # A socket that always has data never waits, so never switches to the hub:
                # yield once per burst. sleep(0) goes through the hub, which runs its
                # timers and polls before it comes back.
                eventlet.sleep(0)
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    finally:
        sink.close(connection, outcome, time.monotonic())
        sock.close()


def _accept_connections(sink: Sink, listener: Any, pool: GreenPool) -> None:
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
            pool.spawn_n(handle_connection, sink, buffer, sock, address)
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
    return listener, eventlet.spawn(_accept_connections, sink, listener, pool)


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
