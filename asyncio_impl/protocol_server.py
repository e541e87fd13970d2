"""Sink server on asyncio's Protocol API: a ``BufferedProtocol`` that asyncio reads into.

The same sink as server.py, one level down: no StreamReader, no task per connection, no
new bytes object per read. The server and run sections are server.py's, line for line: a
deliberate copy, so that each file reads whole beside its siblings in other frameworks.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = ["SinkProtocol", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes asyncio may read per recv_into(); its own Protocol read size is 256 KiB too.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept(); asyncio's default is 100.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


class SinkProtocol(asyncio.BufferedProtocol):
    """Counts one connection's bytes until EOF, then reports it."""

    def __init__(self, sink: Sink, buffer: memoryview) -> None:
        self._sink = sink
        # One buffer for every connection of the server: the loop calls get_buffer(),
        # recv_into() and buffer_updated() back to back, so no two reads overlap.
        self._buffer = buffer
        self._outcome = EOF
        self._connection: Connection | None = None
        self._burst = Burst()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._loop = asyncio.get_running_loop()
        peer = format_peer(transport.get_extra_info("peername"))
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connection = self._sink.open(peer, time.monotonic(), self._transport.abort)
        if self._connection is None:  # --max-connections are open: reset, and reported
            loops.reset(self._transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._connection is None:
            return
        self._connection.feed(self._buffer[:nbytes], time.monotonic())
        if self._burst.add(nbytes):
            # uvloop (libuv) reads up to 32 times per readiness event: 8 MiB, 9 ms late ticks
            # (measured). A pause ends that burst; the loop resumes us after one turn.
            self._transport.pause_reading()
            self._loop.call_soon(self._transport.resume_reading)

    def eof_received(self) -> bool:
        return False  # nothing to say back: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionResetError):
            self._outcome = RESET
        elif exc is not None:
            self._outcome = ERROR
        if self._connection is not None:
            self._sink.close(self._connection, self._outcome, time.monotonic())


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> asyncio.Server:
    """Listen on ``options.host:port`` with a :class:`SinkProtocol` per connection."""
    buffer = memoryview(bytearray(READ_SIZE))
    return await asyncio.get_running_loop().create_server(
        lambda: SinkProtocol(sink, buffer), options.host, options.port, backlog=BACKLOG
    )


async def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    loop = asyncio.get_running_loop()
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    loops.report_accept_trouble(loop, sink)
    stop_ticker = start_ticker(loop, delay, sink.expire)
    signals = loops.Signals(loop)
    try:
        server = await start_listening(sink, options)
        port = server.sockets[0].getsockname()[1]
        emit(options.listening(port, loops.loop_name(loop)))
        stopped_by = await signals.wait()
        await loops.stop_accepting(server)  # connections already accepted carry on
        if not await loops.wait_idle(sink, options.grace, signals):
            sink.abort_all()
            await loops.wait_idle(sink, None)
        # Only now: on 3.12+ wait_closed() waits for every connection, on 3.11 for none.
        await server.wait_closed()
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
    standalone.run_server("asyncio-protocol", lambda options: asyncio.run(main(options)))
