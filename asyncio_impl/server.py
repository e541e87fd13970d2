"""Sink server on asyncio streams: ``start_server``, then ``reader.read(n)`` until EOF.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Sink
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = ["handle_connection", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes asked of each read(): more than the StreamReader ever holds (it pauses the socket
#: above 2 * limit, limit = 64 KiB, plus one recv of 256 KiB), so each read() takes the whole
#: buffer. Asking 64 KiB instead makes read() memmove what remains on every call: a quarter
#: of the speed and five times the server's CPU (docs/results/tuning-1gib.json).
READ_SIZE = 1024 * 1024
#: The StreamReader's limit, asyncio's default (``streams._DEFAULT_LIMIT``): it pauses the
#: socket once it holds more than twice this. Named here so ``--tune`` can reach it.
STREAM_LIMIT = 64 * 1024
#: Connections the kernel queues before accept(); asyncio's default is 100.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


async def handle_connection(
    sink: Sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Count one connection's bytes until EOF, then report it."""
    peer = format_peer(writer.get_extra_info("peername"))
    # Streams have no abort of their own: the transport's abort() closes at once (FIN, not RST).
    connection = sink.open(peer, time.monotonic(), writer.transport.abort)
    if connection is None:  # --max-connections are open: reset, and reported
        loops.reset(writer.transport)
        return
    outcome = EOF
    try:
        # Never read() with no size: that reads until EOF into memory.
        while data := await reader.read(READ_SIZE):
            connection.feed(data, time.monotonic())
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    finally:
        sink.close(connection, outcome, time.monotonic())
        writer.close()
    # wait_closed() re-raises the error that ended the connection: it is already reported.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> asyncio.Server:
    """Listen on ``options.host:port`` with a streams handler per connection."""
    return await asyncio.start_server(
        functools.partial(handle_connection, sink),
        options.host,
        options.port,
        limit=STREAM_LIMIT,
        backlog=BACKLOG,
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
    standalone.run_server("asyncio-streams", lambda options: asyncio.run(main(options)))
