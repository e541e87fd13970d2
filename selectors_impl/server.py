"""Sink server on our own selectors loop: non-blocking ``accept`` and ``recv_into``, and a
wait for readability whenever the socket has nothing (EAGAIN). In echo mode each read is
sent back, waiting for writability, before the next; over TLS the bytes pass through an
``ssl.SSLObject`` this loop drives (streams.py).
"""

from __future__ import annotations

import socket
import ssl

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from ..edge.tls import server_context, version_and_cipher
from . import loops
from .mainloop import Cancelled, Loop, Task, current_loop, sleep, wait_readable
from .streams import Tcp, Tls
from .ticker import start_ticker

__all__ = ["handle_connection", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes per recv_into(). One buffer serves every sink connection: a task reads into it and
#: counts what it read before it can wait again, so no two reads overlap.
READ_SIZE = 256 * 1024
#: Bytes per recv_into() of an echo connection, into a buffer of its own: it holds what was
#: read until the peer took it back.
ECHO_READ_SIZE = 64 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


async def handle_connection(sink: Sink, stream: Tcp, peer: str, buffer: memoryview) -> None:
    """Count one connection's bytes until EOF (echoing: send each read back before the
    next), answer the EOF with ours, then report it."""
    loop = current_loop()
    task = loop.current_task()
    # TLS: opened before the handshake, so a peer that never finishes it still counts.
    connection = sink.open(peer, loop.time(), task.cancel)  # abort: close, FIN, not RST
    if connection is None:  # --max-connections are open: reset, and reported
        stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        stream.close()
        return
    if sink.echo:  # what it read stays there until it went back: a buffer of its own
        buffer = memoryview(bytearray(ECHO_READ_SIZE))
    outcome = EOF
    burst = Burst()
    try:
        await stream.handshake()
        if isinstance(stream, Tls):
            connection.secured(*version_and_cipher(stream.ssl))
        while count := await stream.recv_into(buffer):
            connection.feed(buffer[:count], loop.time())
            if sink.echo:
                # No read before the peer took this back: a peer that stops reading its
                # answers stops our reads, and at its EOF everything is sent back already.
                await stream.send_all(buffer[:count])
                connection.echoed(count)
            if burst.add(count):  # data keeps coming: let the other tasks run
                await sleep(0)
        if isinstance(stream, Tls):  # over TCP our close is the receipt; over TLS, first
            await stream.send_eof()  # our close_notify, after theirs
    except ssl.SSLEOFError:  # a FIN without close_notify: what came may be cut short
        outcome = TRUNCATED
    except ConnectionResetError:
        outcome = RESET
    except OSError:  # a failed handshake too (ssl.SSLError)
        outcome = ERROR
    except Cancelled:
        pass  # the sink aborted us: it reports "aborted"
    finally:
        stream.close()
        sink.close(connection, outcome, loop.time())


# --- server -----------------------------------------------------------------------------


async def start_listening(sink: Sink, options: ServeOptions) -> tuple[socket.socket, Task]:
    """Listen on ``options.host:port``, and accept in a task of its own; return the listener
    and that task, whose cancel() stops accepting."""
    # The family of the host asked for (create_server alone would take IPv4 only); an IPv6
    # listener on "::" is IPv6 only, as asyncio's.
    family = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.create_server((options.host, options.port), family=family, backlog=BACKLOG)
    listener.setblocking(False)
    context = server_context(options.tls) if options.tls is not None else None
    return listener, current_loop().spawn(_accept_connections(sink, listener, context))


async def _accept_connections(
    sink: Sink, listener: socket.socket, context: ssl.SSLContext | None
) -> None:
    """Accept every pending connection whenever the listener is readable (over TLS with
    ``context``). When accept() fails (out of descriptors, say), stop accepting for the
    sink's back-off, then go on: the connections wait in the kernel's queue meanwhile."""
    loop = current_loop()
    buffer = memoryview(bytearray(READ_SIZE))
    try:
        while True:
            await wait_readable(listener)
            while True:
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except ConnectionAbortedError:  # gone before we accepted it
                    continue
                except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse: never stop
                    await sleep(sink.accept_failed(error_text(exc), loop.time()))
                    break
                sock.setblocking(False)
                stream = Tcp(sock) if context is None else Tls(sock, context, server_side=True)
                loop.spawn(handle_connection(sink, stream, format_peer(address), buffer))
    finally:
        listener.close()


async def serve_until_stopped(options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    loop = current_loop()
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    stop_ticker = start_ticker(loop, delay, sink.expire)
    signals = loops.Signals()
    acceptor: Task | None = None
    try:
        listener, acceptor = await start_listening(sink, options)
        port = listener.getsockname()[1]
        emit(options.listening(port, loops.loop_name(loop)))
        stopped_by = await signals.wait()
        acceptor.cancel()  # stop accepting; connections already accepted carry on
        if not await loops.wait_idle(sink, options.grace, signals):
            sink.abort_all()
            await loops.wait_idle(sink, None)
    finally:
        if acceptor is not None:
            acceptor.cancel()
        stop_ticker()
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink on the selector that ``options.loop`` names until a signal stops it;
    return that signal."""
    return loops.run(serve_until_stopped(options, emit), options.loop)


async def main(options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    await serve_until_stopped(options, standalone.print_event)


if __name__ == "__main__":
    standalone.run_server("selectors", lambda options: Loop().run(main(options)))
