"""Sink server on Twisted: a ``Protocol`` whose ``dataReceived`` counts and drops, built by
a ``Factory``, listening with ``reactor.listenTCP``.

RFC 863 Discard, counted, as ``twisted.protocols.wire.Discard`` does it in five lines.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import cast

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.base import ReactorBase
from twisted.internet.interfaces import IAddress, IListeningPort, ISystemHandle, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from ..common.events import EOF, ERROR, RESET, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = [
    "SinkFactory",
    "SinkProtocol",
    "main",
    "serve",
    "serve_until_stopped",
    "start_listening",
]

#: Connections the kernel queues before accept(); listenTCP's default is 50.
BACKLOG = 1024

# --- connection -------------------------------------------------------------------------


class SinkProtocol(Protocol):
    """Counts one connection's bytes until EOF, then reports it. With ``check_errors``, it
    asks the socket for a pending error after each read (see :meth:`dataReceived`)."""

    def __init__(self, sink: Sink, check_errors: bool = False) -> None:
        self._sink = sink
        self._check_errors = check_errors
        self._connection: Connection | None = None

    def connectionMade(self) -> None:
        transport = cast(ITCPTransport, self.transport)
        address = cast(IPv4Address, transport.getPeer())
        peer = format_peer((address.host, address.port))
        # abortConnection() drops what is buffered and closes with SO_LINGER (1, 0): an RST.
        abort = transport.abortConnection
        self._connection = self._sink.open(peer, time.monotonic(), abort)
        if self._connection is None:  # --max-connections are open: refused and reported
            abort()

    def dataReceived(self, data: bytes) -> None:
        # One recv(bufferSize = 64 KiB) per readiness event (twisted/internet/tcp.py).
        if self._connection is None:
            return
        self._connection.feed(data, time.monotonic())
        if self._check_errors:
            # On uvloop this read may be the reactor's last on this socket: a reset behind
            # it would never be read (loops.stops_reading_at_an_error). So ask the socket
            # (SO_ERROR, which also clears it), and end the connection as it ended.
            handle = cast(socket.socket, cast(ISystemHandle, self.transport).getHandle())
            failed = handle.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if failed:
                self._connection.abort(RESET if failed == errno.ECONNRESET else ERROR)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Not IHalfCloseableProtocol: the peer's EOF arrives here, as ConnectionDone.
        if reason.check(error.ConnectionDone):
            outcome = EOF
        elif reason.check(error.ConnectionLost):
            outcome = RESET
        else:
            outcome = ERROR
        if self._connection is not None:
            self._sink.close(self._connection, outcome, time.monotonic())


class SinkFactory(Factory):
    """Builds a :class:`SinkProtocol` per connection, all counting into one :class:`Sink`."""

    def __init__(self, sink: Sink, check_errors: bool = False) -> None:
        self._sink = sink
        self._check_errors = check_errors

    def buildProtocol(self, addr: IAddress | None) -> SinkProtocol:
        return SinkProtocol(self._sink, self._check_errors)


# --- server -----------------------------------------------------------------------------


# Twisted's coding standard: the reactor is passed in (first), never imported.
def start_listening(reactor: ReactorBase, sink: Sink, options: ServeOptions) -> IListeningPort:
    """Listen on ``options.host:port`` with a :class:`SinkProtocol` per connection."""
    try:
        factory = SinkFactory(sink, loops.stops_reading_at_an_error(reactor))
        port: IListeningPort = reactor.listenTCP(  # type: ignore[attr-defined]
            options.port, factory, backlog=BACKLOG, interface=options.host
        )
    except error.CannotListenError as exc:
        raise exc.socketError from None  # the OSError underneath, as the other servers raise
    return port


async def serve_until_stopped(reactor: ReactorBase, options: ServeOptions, emit: Emit) -> int:
    """Serve until SIGINT or SIGTERM, then stop accepting, give open transfers
    ``options.grace`` seconds, abort the rest, and report the totals; return the signal."""
    delay = LoopDelay()
    sink = options.sink(delay, emit)
    stop_ticker = start_ticker(reactor, delay, sink.expire)
    signals = loops.Signals(reactor)
    try:
        port = start_listening(reactor, sink, options)
        # After listening: Twisted reports accept trouble in its log, and we pause the port.
        stop_watching = loops.report_accept_trouble(reactor, port, sink)
        try:
            address = cast(IPv4Address, port.getHost())
            emit(options.listening(address.port, loops.loop_name(reactor)))
            stopped_by = await signals.wait()
            # Stop accepting; connections already accepted carry on.
            await defer.maybeDeferred(port.stopListening)
            if not await loops.wait_idle(reactor, sink, options.grace, signals):
                sink.abort_all()
                await loops.wait_idle(reactor, sink, None)
        finally:
            stop_watching()
    finally:
        stop_ticker()
        signals.close()
    emit(sink.stopped())
    return stopped_by


# --- run --------------------------------------------------------------------------------


def serve(options: ServeOptions, emit: Emit) -> int:
    """Run the sink on the reactor that ``options.loop`` names until a signal stops it;
    return that signal."""
    return loops.run(lambda reactor: serve_until_stopped(reactor, options, emit), options.loop)


async def main(reactor: ReactorBase, options: ServeOptions) -> None:
    """Serve until Ctrl-C and print each connection, like the talk's server."""
    await serve_until_stopped(reactor, options, standalone.print_event)


if __name__ == "__main__":
    # loops.run is task.react that returns instead of exiting, so that a failure to listen
    # is one line, not the traceback react logs.
    standalone.run_server(
        "twisted", lambda options: loops.run(lambda reactor: main(reactor, options), options.loop)
    )
