"""Sink server on asyncio streams: ``start_server``, then ``reader.read(n)`` until EOF.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept. In
echo mode (RFC 862) every read is written back, ``write()`` then ``drain()``, before the
next: a peer that stops reading its answers stops being read. Over TLS asyncio's own layer
(``ssl=``) does the handshake and the close_notify exchange, on a socket we accept (see
``loops.TlsServer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time

from ..common.events import EOF, ERROR, RESET, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = [
    "handle_connection",
    "handle_tls",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

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
    """Count one connection's bytes until EOF (echoing them in echo mode), then report it."""
    peer = format_peer(writer.get_extra_info("peername"))
    # Streams have no abort of their own: the transport's abort() closes at once (FIN, not RST).
    connection = sink.open(peer, time.monotonic(), writer.transport.abort)
    if connection is None:  # refused (too many, or output not read): reset, reported
        loops.reset(writer.transport)
        return
    await _serve(sink, connection, reader, writer)


async def handle_tls(sink: Sink, context: ssl.SSLContext, sock: socket.socket, peer: str) -> None:
    """The same over TLS, for a socket just accepted: it counts from now, and asyncio's
    TLS takes it over (``connect_accepted_socket(ssl=)``), the handshake first."""
    loop = asyncio.get_running_loop()
    handshake = asyncio.current_task()
    assert handshake is not None
    writer: asyncio.StreamWriter | None = None

    def abort() -> None:
        if writer is None:  # still in the handshake: cancelling it closes the socket
            handshake.cancel()
        else:
            writer.transport.abort()

    connection = sink.open(peer, time.monotonic(), abort)
    if connection is None:  # refused (too many, or output not read): reset, reported
        loops.reset(sock)
        return
    # What start_server() builds for each connection (streams.py), given our socket.
    reader = asyncio.StreamReader(STREAM_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    try:
        # Not the protocol it returns: uvloop's is its own SSLProtocol (loop.pyx).
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=context)
    except asyncio.CancelledError:  # abort(): its outcome (timeout, aborted) is set
        sink.close(connection, ERROR, time.monotonic())
        raise
    except OSError as exc:  # no TLS (an SSLError), a reset, asyncio's 60 s handshake limit
        outcome = RESET if isinstance(exc, ConnectionResetError) else ERROR
        sink.close(connection, outcome, time.monotonic())
        return
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await _serve(sink, connection, reader, writer)


async def _serve(
    sink: Sink, connection: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    ssl_object = writer.get_extra_info("ssl_object")  # TLS: the handshake is done
    if ssl_object is not None:
        connection.secured(*version_and_cipher(ssl_object))
    outcome = EOF
    try:
        # Never read() with no size: that reads until EOF into memory.
        while data := await reader.read(READ_SIZE):
            connection.feed(data, time.monotonic())
            # TLS: once the peer's close_notify came, asyncio has sent ours and drops what
            # is written (sslproto.py _write_appdata): asyncio has no TLS half-close.
            if sink.echo and not writer.transport.is_closing():
                writer.write(data)
                connection.echoed(len(data))
                # Until the peer reads its answers, wait here, and so read no more of it.
                await writer.drain()
        if not loops.close_notify_received(ssl_object):  # read() says b"" at a bare FIN too
            outcome = TRUNCATED
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    finally:
        sink.close(connection, outcome, time.monotonic())
        # Once what it holds is sent (echo: the last answers). Over TLS asyncio answered the
        # peer's close_notify as it read it (sslproto.py; 3.10's drops its own: no receipt).
        writer.close()
    # wait_closed() re-raises the error that ended the connection: it is already reported.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> asyncio.Server | loops.TlsServer:
    """Listen on ``options.host:port`` with a streams handler per connection (over TLS, on
    sockets we accept ourselves: see ``loops.TlsServer``)."""
    if options.tls is not None:
        serve_one = functools.partial(handle_tls, sink, server_context(options.tls))
        return await loops.start_tls_server(serve_one, sink, options.host, options.port, BACKLOG)
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
