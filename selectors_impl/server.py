"""Sink server on our own selectors loop: non-blocking ``accept`` and ``recv_into``, and a
wait for readability whenever the socket has nothing (EAGAIN).
"""

from __future__ import annotations

import socket

from ..common.burst import Burst
from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.results import error_text
from ..common.sink import Sink
from ..edge import standalone
from ..edge.kernel import RESET_LINGER
from . import loops
from .mainloop import Cancelled, Loop, Task, current_loop, sleep, wait_readable
from .ticker import start_ticker

__all__ = ["handle_connection", "main", "serve", "serve_until_stopped", "start_listening"]

#: Bytes per recv_into(). One buffer serves every connection: a task reads into it and
#: counts what it read before it can wait again, so no two reads overlap.
READ_SIZE = 256 * 1024
#: Connections the kernel queues before accept().
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


async def handle_connection(sink: Sink, sock: socket.socket, peer: str, buffer: memoryview) -> None:
    """Count one connection's bytes until EOF, then report it."""
    loop = current_loop()
    task = loop.current_task()
    connection = sink.open(peer, loop.time(), task.cancel)  # abort: close, FIN, not RST
    if connection is None:  # --max-connections are open: reset, and reported
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        sock.close()
        return
    outcome = EOF
    burst = Burst()
    try:
        while True:
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:  # EAGAIN: nothing to read yet
                await wait_readable(sock)
                burst.reset()
                continue
            if not count:
                break
            connection.feed(buffer[:count], loop.time())
            if burst.add(count):  # data keeps coming: let the other tasks run
                await sleep(0)
    except ConnectionResetError:
        outcome = RESET
    except OSError:
        outcome = ERROR
    except Cancelled:
        pass  # the sink aborted us: it reports "aborted"
    finally:
        sock.close()
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
    return listener, current_loop().spawn(_accept_connections(sink, listener))


async def _accept_connections(sink: Sink, listener: socket.socket) -> None:
    """Accept every pending connection whenever the listener is readable. When accept()
    fails (out of descriptors, say), stop accepting for the sink's back-off, then go on:
    the connections wait in the kernel's queue meanwhile."""
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
                loop.spawn(handle_connection(sink, sock, format_peer(address), buffer))
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
