"""Sink server on gevent: a ``StreamServer`` runs ``handle_connection`` in a greenlet per
connection, which reads with ``recv_into`` until EOF: blocking-looking code, the hub under it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import gevent
from gevent.server import StreamServer

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
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

#: Bytes per recv_into(). One buffer serves every connection: a greenlet switches away only
#: inside a call that would block, so it counts what it read before another reads again.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


def handle_connection(sink: Sink, buffer: memoryview, sock: socket.socket, address: Any) -> None:
    """Count one connection's bytes until EOF, then report it (in its own greenlet)."""

    def abort() -> None:
        # Wakes our recv_into(), waiting in the hub, from another greenlet: it returns 0.
        sock.shutdown(socket.SHUT_RDWR)

    connection = sink.open(format_peer(address), time.monotonic(), abort)
    if connection is None:  # --max-connections are open: reset, and reported
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        sock.close()
        return
    outcome = EOF
    burst = Burst()
    try:
        # Blocks this greenlet only: recv_into() waits in the hub until the socket is readable.
        while count := sock.recv_into(buffer):
            connection.feed(buffer[:count], time.monotonic())
            if burst.add(count):
                # A socket that always has data never waits, so never switches: eager reads
                # starve the hub (gevent issue 892). Yield once per burst, until the loop
                # has run its timers (idle(): sleep(0) runs only other greenlets).
                gevent.idle()
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    finally:
        sink.close(connection, outcome, time.monotonic())
        sock.close()


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
    server = SinkServer(
        sink, (options.host, options.port), lambda s, a: handle_connection(sink, buffer, s, a)
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
