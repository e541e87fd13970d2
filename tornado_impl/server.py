"""Sink server on Tornado: a ``TCPServer`` whose ``handle_stream`` loops on
``read_into(buffer, partial=True)`` until ``StreamClosedError``.

Never ``read_until_close()`` in a sink: it buffers up to ``max_buffer_size`` (100 MB), then
fails.
"""

from __future__ import annotations

import asyncio
import socket
import time

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Sink
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = ["SinkServer", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes per read_into(); IOStream's own read_chunk_size is 64 KiB too. Each connection has
#: its own buffer: a pending read_into() owns it until the read completes.
READ_SIZE = 64 * 1024
#: Connections the kernel queues before accept(); bind_sockets' default is 128.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


class SinkServer(TCPServer):
    """Counts each stream's bytes until it closes, then reports it."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self._sink = sink
        self.listeners: list[socket.socket] = []  # what start_listening() added

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        # IOStream has no abort: close() drops what it buffered and sends FIN, not RST.
        connection = self._sink.open(format_peer(address), time.monotonic(), stream.close)
        if connection is None:  # --max-connections are open: reset, and reported
            loops.reset(stream.socket)
            stream.close()
            return
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        outcome = EOF
        burst = Burst()
        try:
            while True:
                count = await stream.read_into(buffer, partial=True)
                connection.feed(view[:count], time.monotonic())
                if burst.add(count):
                    # read_into() reads inline when data is there and returns a resolved
                    # future, which does not yield: yield once per burst so the loop runs.
                    await asyncio.sleep(0)
        except StreamClosedError:
            # No half-close in Tornado: a 0-byte read closes the whole stream, and the
            # read fails with StreamClosedError; stream.error says whether it was clean.
            if isinstance(stream.error, ConnectionResetError):
                outcome = RESET
            elif stream.error is not None:
                outcome = ERROR
        finally:
            self._sink.close(connection, outcome, time.monotonic())
            stream.close()


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> SinkServer:
    """Listen on ``options.host:port`` with a :class:`SinkServer` (a coroutine per stream)."""
    server = SinkServer(sink)
    server.listeners = bind_sockets(options.port, address=options.host, backlog=BACKLOG)
    server.add_sockets(server.listeners)
    return server


async def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    io_loop = IOLoop.current()
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    stop_ticker = start_ticker(io_loop, delay, sink.expire)
    signals = loops.Signals(asyncio.get_running_loop())
    try:
        server = await start_listening(sink, options)
        # After listening: Tornado's accept handler needs its listeners paused by hand.
        loops.report_accept_trouble(io_loop, server.listeners, sink)
        port = server.listeners[0].getsockname()[1]
        emit(options.listening(port, loops.loop_name(io_loop)))
        stopped_by = await signals.wait()
        server.stop()  # stop accepting; it leaves accepted streams open: the sink tracks them
        if not await loops.wait_idle(sink, options.grace, signals):
            sink.abort_all()
            await loops.wait_idle(sink, None)
    finally:
        stop_ticker()
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink on the loop that ``options.loop`` names until a signal stops it; return
    that signal."""
    return loops.run(serve_until_stopped(options, emit), options.loop)


async def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    await serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    standalone.run_server("tornado", lambda options: asyncio.run(main(options)))
