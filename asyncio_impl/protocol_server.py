"""Sink server on asyncio's Protocol API: a ``BufferedProtocol`` that asyncio reads into.

The same sink as server.py, one level down: no StreamReader, no task per connection, no
new bytes object per read. In echo mode each read is written back from the read callback,
and the transport's ``pause_writing()`` pauses our reading until ``resume_writing()``. The
server and run sections are server.py's, line for line: a deliberate copy, so that each
file reads whole beside its siblings in other frameworks.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from typing import cast

from ..common.burst import Burst
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
    "SinkProtocol",
    "handle_tls",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Bytes asyncio may read per recv_into(); its own Protocol read size is 256 KiB too.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept(); asyncio's default is 100.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


class SinkProtocol(asyncio.BufferedProtocol):
    """Counts one connection's bytes until EOF (echoing them in echo mode), then reports it."""

    def __init__(self, sink: Sink, buffer: memoryview) -> None:
        self._sink = sink
        # One buffer for every connection of the server: the loop calls get_buffer(),
        # recv_into() and buffer_updated() back to back, so no two reads overlap.
        self._buffer = buffer
        self._outcome = EOF
        self._connection: Connection | None = None
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] | None = None  # TLS: until connection_made()
        self._ssl_object: ssl.SSLObject | None = None
        self._writing_paused = False
        self._burst = Burst()

    def accepted(self, peer: str, handshake: asyncio.Future[None]) -> bool:
        """TLS: count this connection from its accept, while ``handshake`` runs (asyncio
        calls connection_made() only once it is done); False if the sink refuses it."""
        self._handshake = handshake
        self._connection = self._sink.open(peer, time.monotonic(), self.abort)
        return self._connection is not None

    def handshake_failed(self, exc: BaseException) -> None:
        """TLS: the handshake failed (no TLS, a reset) or was aborted: report it."""
        if self._connection is not None and self._transport is None:
            self._outcome = RESET if isinstance(exc, ConnectionResetError) else ERROR
            self._sink.close(self._connection, self._outcome, time.monotonic())

    def abort(self) -> None:
        """Close at once (FIN, not RST): a TLS handshake still running, or the transport."""
        if self._transport is not None:
            self._transport.abort()
        elif self._handshake is not None:
            self._handshake.cancel()  # connect_accepted_socket() closes the socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._ssl_object = transport.get_extra_info("ssl_object")
        if self._connection is not None:  # TLS: counted since its accept; now secured
            self._connection.secured(*version_and_cipher(self._ssl_object))
            return
        peer = format_peer(transport.get_extra_info("peername"))
        self._connection = self._sink.open(peer, time.monotonic(), self.abort)
        if self._connection is None:  # refused (too many, or output not read): reset, reported
            loops.reset(self._transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._connection is None or self._transport is None:
            return
        data = self._buffer[:nbytes]
        self._connection.feed(data, time.monotonic())
        if self._sink.echo:
            # A copy: the buffer is the next read's, and 3.12+ keeps a reference to what
            # write() could not send at once (selector_events.py, cpython#91166).
            self._transport.write(bytes(data))
            self._connection.echoed(nbytes)
        if self._burst.add(nbytes):
            # uvloop (libuv) reads up to 32 times per readiness event: 8 MiB, 9 ms late ticks
            # (measured). A pause ends that burst; the loop resumes us after one turn.
            self._transport.pause_reading()
            self._loop.call_soon(self._resume_reading)

    def pause_writing(self) -> None:
        # Echo: the peer is not reading its answers. Read no more of it until it does:
        # what it sends waits in the kernel, not in our memory.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._writing_paused and self._transport is not None:
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        # Let the transport close: once it has sent what it holds (the answers, in echo
        # mode). Over TLS the return value is ignored, and asyncio answers the peer's
        # close_notify with its own itself; on CPython a bare FIN also lands here.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionResetError):
            self._outcome = RESET
        elif exc is not None:
            self._outcome = ERROR
        elif not loops.close_notify_received(self._ssl_object):
            self._outcome = TRUNCATED  # TLS: a FIN without close_notify
        if self._connection is not None:
            self._sink.close(self._connection, self._outcome, time.monotonic())


async def handle_tls(
    sink: Sink, buffer: memoryview, context: ssl.SSLContext, sock: socket.socket, peer: str
) -> None:
    """A socket just accepted for TLS: a :class:`SinkProtocol` counts it from now, and
    asyncio's TLS takes it over (``connect_accepted_socket(ssl=)``), the handshake first."""
    protocol = SinkProtocol(sink, buffer)
    handshake = asyncio.current_task()
    assert handshake is not None
    if not protocol.accepted(peer, handshake):
        loops.reset(sock)  # refused (too many, or output not read): reset, and reported
        return
    try:
        await asyncio.get_running_loop().connect_accepted_socket(
            lambda: protocol, sock, ssl=context
        )
    except asyncio.CancelledError as exc:  # abort(): its outcome (timeout, aborted) is set
        protocol.handshake_failed(exc)
        raise
    except OSError as exc:  # no TLS (an SSLError), a reset, asyncio's 60 s handshake limit
        protocol.handshake_failed(exc)


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> asyncio.Server | loops.TlsServer:
    """Listen on ``options.host:port`` with a :class:`SinkProtocol` per connection (over
    TLS, on sockets we accept ourselves: see ``loops.TlsServer``)."""
    buffer = memoryview(bytearray(READ_SIZE))
    if options.tls is not None:
        context = server_context(options.tls)
        serve_one = functools.partial(handle_tls, sink, buffer, context)
        return await loops.start_tls_server(serve_one, sink, options.host, options.port, BACKLOG)
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
