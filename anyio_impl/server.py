"""Sink server on anyio: a TCP listener whose accepted ``SocketStream``, a task each, is
read with ``receive`` until ``EndOfStream``. Stopping is cancelling: the accepting task's
scope stops accepting, each connection's own scope aborts it.

RFC 863 Discard, counted: every byte is counted (and hashed) as it is read, never kept. In
echo mode (RFC 862) each read is written back with ``send`` before the next read: a peer
that stops reading its answers stops this connection's reads, and nothing piles up. TLS:
each connection's task wraps its stream with ``TLSStream.wrap``.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import cast

import anyio
from anyio.abc import (
    ByteStream,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
    TaskStatus,
)
from anyio.streams.tls import TLSAttribute, TLSStream

from ..common.events import EOF, ERROR, RESET, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Connection, Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = ["handle_connection", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes asked of each receive(). On asyncio each returns what one recv() of the transport
#: read (at most 256 KiB) and is split only above this; on trio it is the recv() size.
#: Over TLS a call returns at most one record (16 KiB): SSLObject.read() decrypts one.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept() (anyio's default is 65536, capped by the
#: kernel's somaxconn); the same as every other sink here.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


async def handle_connection(
    sink: Sink,
    context: ssl.SSLContext | None,
    stream: SocketStream,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Count one connection's bytes until EOF (in echo mode writing each back), then report
    it (in its own task, which is started once the sink knows of the connection); with a
    ``context``, over TLS."""
    # The connection's own scope: the sink's abort (grace over, idle too long) cancels it.
    scope = anyio.CancelScope()
    # None if the peer already reset (getpeername fails), as asyncio's "peername" is then.
    peer = format_peer(stream.extra(SocketAttribute.remote_address, None))
    connection = sink.open(peer, time.monotonic(), scope.cancel)
    task_status.started()  # the sink knows of it: a stop from now on covers it
    if connection is None:  # --max-connections are open: reset, and reported
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        await anyio.aclose_forcefully(stream)
        return
    _pause_until_read(stream)
    outcome = EOF
    conversation: ByteStream = stream  # or TLS over it
    try:
        with scope:
            if context is not None:
                # Wrapped here, in the connection's task and scope, not by a TLSListener
                # (whose serve() shakes hands before the handler runs): the sink has
                # counted the connection already, so a peer that never finishes its
                # handshake holds one of --max-connections and --idle-timeout ends it.
                # standard_compatible=True (the default): an EOF without close_notify
                # fails receive() with BrokenResourceError caused by SSLEOFError, where
                # False would raise EndOfStream as at a clean close (anyio/streams/tls.py,
                # _call_sslobject_method): truncated is told from eof.
                conversation = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=context, standard_compatible=True
                )
                ssl_object = conversation.extra(TLSAttribute.ssl_object)
                connection.secured(*version_and_cipher(ssl_object))
            while True:
                try:
                    data = await conversation.receive(READ_SIZE)
                except anyio.EndOfStream:  # anyio's EOF is an exception, not b""
                    break
                connection.feed(data, time.monotonic())
                if sink.echo:
                    # Returns once the transport has no byte left to send (on asyncio anyio
                    # waits for it to drain): until then no more is read from this peer,
                    # which is the echo's flow control (other tasks run on).
                    await conversation.send(data)
                    connection.echoed(len(data))
            # The peer's EOF (over TLS its close_notify: only then does receive() raise
            # EndOfStream), after everything was read and written back. TLS: aclose()
            # sends our close_notify, the client's receipt (unwrap(), which returns at once:
            # the peer's came already), then closes; TCP: the close is.
            await conversation.aclose()
    # The socket's error is the cause of BrokenResourceError; a TLS failure (a plaintext
    # peer, a bad record) is raised as the ssl.SSLError itself, an OSError.
    except (anyio.BrokenResourceError, OSError) as exc:
        outcome = _ended_by(exc, connection)
    finally:
        sink.close(connection, outcome, time.monotonic())
        await anyio.aclose_forcefully(conversation)  # close now, even if being cancelled


def _ended_by(exc: BaseException, connection: Connection) -> str:
    """The outcome of a connection that broke with ``exc``: a reset, an EOF without
    close_notify once TLS was up (a handshake cut short is an error), or another error
    (a plaintext peer: "http request", "wrong version number", or any TLS alert)."""
    cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc
    if isinstance(cause, ConnectionResetError | BrokenPipeError):  # echo: writing to a reset
        return RESET
    if connection.tls_version is not None and _is_eof(cause):
        return TRUNCATED
    return ERROR


def _is_eof(exc: BaseException | None) -> bool:
    """An EOF where TLS wanted a record: SSLEOFError, or on 3.10 a plain SSLError naming
    it, as anyio's own check reads it (anyio/streams/tls.py)."""
    return isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF_WHILE_READING" in str(exc.strerror)
    )


def _pause_until_read(stream: SocketStream) -> None:
    """Pause an accepted asyncio transport until the first receive() asks for data.

    anyio's asyncio backend reads only while a receive() waits: it resumes the transport
    then, and pauses it after. But its listener hands over accepted transports still
    reading (``connect_tcp`` pauses its own; ``TCPSocketListener.accept`` does not, in
    anyio/_backends/_asyncio.py), and receive() pauses only after a wait, which never comes
    while bytes are queued. So the transport reads without limit as long as its queue is
    not empty. On uvloop, which reads up to 32 times 64 KiB per loop turn against one chunk
    taken per receive(), a fast sender grew this server to 458 MB
    (test_server_memory_stays_bounded_under_a_fast_sender, measured before this). anyio has
    no public call for it: this is the transport's own pause_reading(), reached privately,
    and only where there is one (not on the trio backend)."""
    transport = getattr(stream, "_transport", None)
    if transport is not None and not transport.is_closing():
        transport.pause_reading()


async def _accept_connections(
    sink: Sink, context: ssl.SSLContext | None, listener: SocketListener, group: TaskGroup
) -> None:
    """Accept connections into ``group`` until cancelled, and only ever cancelled while it
    holds no connection. Not ``listener.serve()``: it has no error handling
    (anyio/abc/_sockets.py), so accept() failing for want of descriptors would end it, and
    the server would stop accepting for good. Here it pauses for the sink's back-off
    instead: the connections wait in the kernel's queue."""
    raw = listener.extra(SocketAttribute.raw_socket)
    async with listener:
        while True:
            # Cancelled here, the loop holds nothing: the kernel keeps what it queued. On
            # asyncio a cancel is delivered only to a task whose wait is not over yet, so
            # with connections queued (the listener readable at once) it could miss
            # every turn and the loop would accept on through the grace (seen on
            # uvloop): ask first.
            await anyio.lowlevel.checkpoint_if_cancelled()
            await anyio.wait_readable(raw)
            # But not from here until the sink knows of the connection: accept() is not
            # safe to cancel. Under a SIGTERM amid a burst, the last connection accept4
            # returned was neither received nor rejected (6 of 12 runs on each of asyncio's
            # loops): on the selector loop, _sock_accept accepts for a future already
            # cancelled and drops the socket on set_result's InvalidStateError (CPython
            # gh-153761); on uvloop, anyio's accept() is cancelled in the
            # connect_accepted_socket() it awaits after accept4 (TCPSocketListener.accept,
            # anyio/_backends/_asyncio.py), which closes the socket. Readable, accept()
            # does not wait: a connection is queued (Linux keeps even a reset one there).
            with anyio.CancelScope(shield=True):
                try:
                    stream = await listener.accept()
                # EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse: never stop. The asyncio
                # backend raises the OSError, the trio backend a BrokenResourceError
                # caused by it.
                except (OSError, anyio.BrokenResourceError) as exc:
                    retry_in = sink.accept_failed(error_text(loops.cause(exc)), time.monotonic())
                else:
                    await group.start(handle_connection, sink, context, stream)
                    continue
            await anyio.sleep(retry_in)  # the back-off, cancellable: it holds nothing


# --- server -----------------------------------------------------------------------------


async def start_listening(
    task_group: TaskGroup, sink: Sink, options: ServeOptions
) -> tuple[list[SocketListener], Callable[[], Awaitable[None]]]:
    """Listen on ``options.host:port``, accepting in tasks of ``task_group`` whose
    connections are tasks of ``task_group`` too; return the listeners and a function that
    stops accepting and returns once every connection accepted is known to the sink (the
    connections carry on)."""
    multi = await anyio.create_tcp_listener(
        local_host=options.host, local_port=options.port, backlog=BACKLOG
    )
    # A listener per address the host resolves to: TCP SocketListeners, which MultiListener
    # types only as Listeners.
    listeners = [cast(SocketListener, listener) for listener in multi.listeners]
    accepting = anyio.CancelScope()
    accepted_all = anyio.Event()
    context = server_context(options.tls) if options.tls is not None else None

    async def accept_on_all() -> None:
        try:
            with accepting:
                async with anyio.create_task_group() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(
                            _accept_connections, sink, context, listener, task_group
                        )
        finally:
            accepted_all.set()

    async def stop_accepting() -> None:
        accepting.cancel()
        await accepted_all.wait()  # an accept under way ends first, and is in the sink

    task_group.start_soon(accept_on_all)
    return listeners, stop_accepting


async def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    signals = loops.Signals()
    try:
        async with anyio.create_task_group() as group:
            stop_ticker = start_ticker(group, delay, sink.expire)
            listeners, stop_accepting = await start_listening(group, sink, options)
            port = listeners[0].extra(SocketAttribute.local_port)
            emit(options.listening(port, loops.loop_name()))
            stopped_by = await signals.wait()
            await stop_accepting()  # connections already accepted carry on
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
    """Run the sink on the backend that ``options.loop`` names until a signal stops it;
    return that signal."""
    return loops.run(functools.partial(serve_until_stopped, options, emit), options.loop)


async def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    await serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    # loops.run is anyio.run that raises a task group's one failure as itself, not in a group.
    standalone.run_server(
        "anyio", lambda options: loops.run(functools.partial(main, options), options.loop)
    )
