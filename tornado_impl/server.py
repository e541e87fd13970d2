"""Sink server on Tornado: a ``TCPServer`` whose ``handle_stream`` loops on
``read_into(buffer, partial=True)`` until ``StreamClosedError``; in echo mode each read is
written back with ``await stream.write()`` before the next; over TLS (``ssl_options``) the
stream is an ``SSLIOStream``.

Never ``read_until_close()`` in a sink: it buffers up to ``max_buffer_size`` (100 MB), then
fails.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable

from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, TLS_FAILED, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from ..edge.tls import version_and_cipher
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
    """Counts each stream's bytes until it closes, then reports it; in echo mode, writes
    each read back before the next."""

    def __init__(self, sink: Sink, ssl_options: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_options=ssl_options)  # TLS: every stream is an SSLIOStream
        self._sink = sink
        self.listeners: list[socket.socket] = []  # what start_listening() added

    def _handle_connection(self, connection: socket.socket, address: tuple[str, int]) -> None:
        # The one private method we override. Over TLS, TCPServer wraps each accepted
        # socket before it makes a stream, and re-raises any error of that wrap but
        # SSL_ERROR_EOF (tcpserver.py _handle_connection) into the loop: a traceback, and
        # the connection gone unreported. CPython raises one for a peer that sent bytes
        # and left before the wrap (ssl.py SSLSocket._create, CVE-2023-40217: "Closed
        # before TLS handshake with data in recv buffer"), or its reset.
        try:
            super()._handle_connection(connection, address)
        except OSError:
            self._sink.reject(format_peer(address), TLS_FAILED)

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        # IOStream has no abort: close() drops what it buffered and sends FIN, not RST.
        # TLS: opened before the handshake, so a peer that never finishes it still counts.
        connection = self._sink.open(format_peer(address), time.monotonic(), stream.close)
        if connection is None:  # --max-connections are open: reset, and reported
            loops.reset(stream.socket)
            stream.close()
            return
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        burst = Burst()
        try:
            if isinstance(stream, SSLIOStream):
                # A FIN without close_notify ends the stream with SSLEOFError: truncated.
                loops.refuse_ragged_eofs(stream.socket)
                # The first read drives the handshake, as in Tornado's HTTPServer: a stream
                # that only awaited it would never be watched if its peer reset before it
                # was made (SSLIOStream.__init__ starts the handshake only if getpeername()
                # works); its failure fails the read, and stream.error says why.
                stream.wait_for_handshake().add_done_callback(_secured(connection, stream))
            while True:
                count = await stream.read_into(buffer, partial=True)
                connection.feed(view[:count], time.monotonic())
                if self._sink.echo:
                    # The write future is the flow control: no read until the kernel took
                    # this one, so a peer that stops reading its answers stops our reads.
                    # So at its EOF, which closes the whole stream (IOStream has no
                    # half-close), everything read is written back already.
                    await stream.write(view[:count])
                    connection.echoed(count)
                if burst.add(count):
                    # read_into() reads inline when data is there and returns a resolved
                    # future, which does not yield: yield once per burst so the loop runs.
                    await asyncio.sleep(0)
        except StreamClosedError:
            # No half-close in Tornado: a 0-byte read closes the whole stream, and the
            # read fails with StreamClosedError; stream.error says whether it was clean.
            pass
        except Exception as exc:  # what closed the stream: the handshake's, an inline read's
            if exc is not stream.error:
                raise
        finally:
            self._sink.close(connection, _outcome(stream.error), time.monotonic())
            stream.close()


def _secured(connection: Connection, stream: SSLIOStream) -> Callable[[Future[SSLIOStream]], None]:
    """What to do once the handshake is over: say what it agreed, if it succeeded."""

    def done(handshake: Future[SSLIOStream]) -> None:
        if handshake.exception() is None:  # else the read fails too, with stream.error
            connection.secured(*version_and_cipher(stream.socket))

    return done


def _outcome(error: BaseException | None) -> str:
    """How a stream that closed with ``error`` (``stream.error``) ended."""
    if error is None:  # a 0-byte read: a FIN, or over TLS a close_notify, answered
        return EOF
    if isinstance(error, ssl.SSLEOFError):  # a FIN without close_notify: cut short
        return TRUNCATED
    if isinstance(error, ConnectionResetError):
        return RESET
    return ERROR


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> SinkServer:
    """Listen on ``options.host:port`` with a :class:`SinkServer` (a coroutine per stream)."""
    server = SinkServer(sink, loops.server_context(options.tls) if options.tls else None)
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
    loops.quiet_handshake_warnings()  # a failed handshake is reported as its connection's end
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
