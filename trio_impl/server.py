"""Sink server on trio: ``trio.serve_tcp`` starts a task per connection, which reads with
``receive_some`` until EOF (``b""``). Stopping is cancelling: the accept loop's scope stops
accepting, each connection's own scope aborts it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept. In
echo mode (RFC 862) each read is written back with ``send_all`` before the next read: a
peer that stops reading its answers stops this connection's reads, and nothing piles up.
TLS: each connection's handler wraps its stream in a ``trio.SSLStream``.
"""

from __future__ import annotations

import functools
import socket
import ssl

import trio

from ..common.events import EOF, ERROR, RESET, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context
from . import loops
from .ticker import start_ticker

__all__ = ["handle_connection", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes asked of each receive_some(). trio's streams have no receive_into: each call
#: returns new bytes (trio's own default asks 64 KiB). Over TLS a call returns at most one
#: record (16 KiB): SSLObject.read() decrypts one at a time.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept() (trio's default is 0xFFFF, capped by
#: the kernel's somaxconn); the same as every other sink here.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


async def handle_connection(
    sink: Sink, context: ssl.SSLContext | None, stream: trio.abc.Stream
) -> None:
    """Count one connection's bytes until EOF (in echo mode writing each back), then report
    it (in its own task); with a ``context``, over TLS. Any trio stream will do:
    ``serve_tcp`` hands a ``SocketStream``, a test a memory stream."""
    # The connection's own scope: the sink's abort (grace over, idle too long) cancels it.
    scope = trio.CancelScope()
    connection = sink.open(_peer(stream), loops.now(), scope.cancel)
    if connection is None:  # --max-connections are open: reset, and reported
        if isinstance(stream, trio.SocketStream):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        await stream.aclose()
        return
    outcome = EOF
    try:
        with scope:
            if context is not None:
                # Wrapped here, in the connection's task and scope, not by an SSLListener
                # around the listener: the sink has counted the connection already, so a
                # peer that never finishes its handshake holds one of --max-connections
                # and --idle-timeout ends it. https_compatible=False (the default): an EOF
                # without close_notify fails receive_some() with BrokenResourceError caused
                # by SSLEOFError, where True would return b"" as if the peer had closed
                # cleanly (trio/_ssl.py, receive_some): truncated is told from eof.
                stream = trio.SSLStream(stream, context, server_side=True)
                await stream.do_handshake()
                connection.secured(*loops.agreed(stream))
            while data := await stream.receive_some(READ_SIZE):
                connection.feed(data, loops.now())
                if sink.echo:
                    # Returns once the kernel took it all: until then no more is read from
                    # this peer, which is the echo's flow control (other tasks run on).
                    await stream.send_all(data)
                    connection.echoed(len(data))
            # The peer's EOF (over TLS its close_notify: receive_some() returns b"" only
            # then), after everything was read and written back. TLS: aclose() sends our
            # close_notify, the client's receipt, then closes; TCP: the close is.
            await stream.aclose()
    except trio.BrokenResourceError as exc:  # the socket's or TLS's error is its cause
        outcome = _ended_by(exc.__cause__, connection)
    finally:
        sink.close(connection, outcome, loops.now())
        await trio.aclose_forcefully(stream)  # close now, even if we are being cancelled


def _ended_by(cause: BaseException | None, connection: Connection) -> str:
    """The outcome of a connection that broke with ``cause``: a reset, an EOF without
    close_notify once TLS was up (a handshake cut short is an error), or another error
    (a plaintext peer: "wrong version number", or any TLS alert)."""
    if isinstance(cause, ConnectionResetError | BrokenPipeError):  # echo: writing to a reset
        return RESET
    if connection.tls_version is not None and _is_eof(cause):
        return TRUNCATED
    return ERROR


def _is_eof(exc: BaseException | None) -> bool:
    """An EOF where TLS wanted a record: SSLEOFError, or on 3.10 a plain SSLError naming
    it, as trio's own check reads it (trio/_ssl.py, _is_eof)."""
    return isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF_WHILE_READING" in str(exc.strerror)
    )


def _peer(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return type(stream).__name__
    try:
        return format_peer(stream.socket.getpeername())
    except OSError:  # the peer already reset: None, as asyncio's "peername" is then
        return format_peer(None)


# --- server -----------------------------------------------------------------------------


async def start_listening(
    nursery: trio.Nursery, sink: Sink, options: ServeOptions
) -> tuple[list[trio.SocketListener], trio.CancelScope]:
    """Listen on ``options.host:port``, accepting in a task of ``nursery`` whose
    connections are tasks of ``nursery`` too; return the listeners and the scope whose
    cancel() stops accepting (the connections carry on)."""
    accepting = trio.CancelScope()
    context = server_context(options.tls) if options.tls is not None else None

    async def accept(*, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        with accepting:
            await trio.serve_tcp(
                functools.partial(handle_connection, sink, context),
                options.port,
                host=options.host,
                backlog=BACKLOG,
                handler_nursery=nursery,
                task_status=task_status,
            )

    listeners: list[trio.SocketListener] = await nursery.start(accept)
    return listeners, accepting


async def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    signals = loops.Signals()
    try:
        with loops.report_accept_trouble(sink):
            async with trio.open_nursery() as nursery:
                stop_ticker = start_ticker(nursery, delay, sink.expire)
                listeners, accepting = await start_listening(nursery, sink, options)
                port = listeners[0].socket.getsockname()[1]
                emit(options.listening(port, loops.loop_name()))
                stopped_by = await signals.wait()
                accepting.cancel()  # stop accepting; connections already accepted carry on
                if not await loops.wait_idle(sink, options.grace, signals):
                    sink.abort_all()
                    await loops.wait_idle(sink, None)
                stop_ticker()
    finally:
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink under trio until a signal stops it; return that signal."""
    return loops.run(functools.partial(serve_until_stopped, options, emit), options.loop)


async def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    await serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    # loops.run is trio.run that raises a nursery's one failure as itself, not in a group.
    standalone.run_server(
        "trio", lambda options: loops.run(functools.partial(main, options), options.loop)
    )
