"""Sink server on asyncio's Protocol API: a ``BufferedProtocol`` that asyncio reads into.

The same sink as server.py, one level down: no StreamReader, no task per connection, no
new bytes object per read. Siblings: server.py (streams), twisted_impl/server.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from asyncio_impl import loops
from asyncio_impl.server import BACKLOG, serve_until_stopped
from common.burst import Burst
from common.events import EOF, ERROR, RESET, Event, describe
from common.interface import ServeOptions, format_peer
from common.sink import Connection, Sink

__all__ = ["SinkProtocol", "main", "serve", "start_listening"]

#: Bytes asyncio may read per recv_into(); its own Protocol read size is 256 KiB too.
READ_SIZE = 256 * 1024

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


# The shutdown sequence is the streams server's: serve_until_stopped(start=start_listening).

# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Callable[[Event], None]) -> int:
    """Run the sink on the loop that ``options.loop`` names until a signal stops it; return
    that signal."""
    return loops.run(serve_until_stopped(options, emit, start_listening), options.loop)


async def main() -> None:
    """Serve on 127.0.0.1:1234 and print each connection until Ctrl-C, like the talk's server."""
    options = ServeOptions(impl="asyncio-protocol")
    await serve_until_stopped(options, lambda e: print(describe(e)), start_listening)


if __name__ == "__main__":
    asyncio.run(main())
