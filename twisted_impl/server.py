"""Sink server on Twisted: a ``Protocol`` whose ``dataReceived`` counts and drops, built by
a ``Factory``, listening with ``reactor.listenTCP``.

RFC 863 Discard, counted, as ``twisted.protocols.wire.Discard`` does it in five lines. In
echo mode (RFC 862) the protocol writes back what it reads, and is its transport's push
producer, as a proxy is: a peer that does not read its answers stops us reading it. Over
TLS the factory is wrapped in Twisted's TLS layer, as ``listenSSL`` does (``loops.py``).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import cast

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.base import ReactorBase
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.events import EOF, ERROR, RESET, TRUNCATED, format_peer
from ..common.interface import Emit
from ..common.loopdelay import LoopDelay
from ..common.options import ServeOptions
from ..common.sink import Connection, Sink
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = [
    "EchoProtocol",
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


@implementer(IHandshakeListener)
class SinkProtocol(Protocol):
    """Counts one connection's bytes until EOF, then reports it. With ``check_errors``, it
    asks the socket for a pending error after each read (see :meth:`dataReceived`)."""

    def __init__(self, sink: Sink, check_errors: bool = False) -> None:
        self._sink = sink
        self._check_errors = check_errors
        self._connection: Connection | None = None

    def connectionMade(self) -> None:
        # Under TLS this runs as TCP accepts, before the handshake (protocols/tls.py:
        # makeConnection connects the protocol above, then starts the handshake), so a peer
        # that never finishes its handshake counts against --max-connections, and
        # --idle-timeout closes it.
        transport = cast(ITCPTransport, self.transport)
        address = cast(IPv4Address, transport.getPeer())
        peer = format_peer((address.host, address.port))
        # abortConnection() drops what is buffered and closes with SO_LINGER (1, 0): an RST.
        abort = transport.abortConnection
        self._connection = self._sink.open(peer, time.monotonic(), abort)
        if self._connection is None:  # --max-connections are open: refused and reported
            abort()

    def handshakeCompleted(self) -> None:
        # TLS only: the layer's handle is its pyOpenSSL Connection.
        tls = cast(SSL.Connection, cast(ISystemHandle, self.transport).getHandle())
        if self._connection is not None:
            self._connection.secured(tls.get_protocol_version_name(), tls.get_cipher_name())

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
        # Not IHalfCloseableProtocol: the peer's EOF arrives here, as ConnectionDone (the
        # echo protocol's too, once it has closed after the EOF it heard of first).
        if reason.check(error.ConnectionDone):
            outcome = EOF  # over TLS: the peer's close_notify, which the layer answered
        elif reason.check(error.ConnectionLost) and _fin_without_close_notify(self.transport):
            # A FIN with no close_notify before it. Mid-handshake it is a handshake that
            # failed; after it, what came may have been cut short by anyone who can send a FIN.
            secured = self._connection is not None and self._connection.tls_version is not None
            outcome = TRUNCATED if secured else ERROR
        elif reason.check(error.ConnectionLost):
            outcome = RESET
        else:
            outcome = ERROR  # a TLS handshake that failed (OpenSSL.SSL.Error) among them
        if self._connection is not None:
            self._sink.close(self._connection, outcome, time.monotonic())


def _fin_without_close_notify(transport: object) -> bool:
    """Whether the TCP connection under a TLS one ended with the peer's FIN and no
    close_notify: Twisted says ConnectionLost for it, as for a reset (see loops.TlsLayer)."""
    return isinstance(transport, loops.TlsLayer) and transport.truncated


@implementer(IHalfCloseableProtocol, IPushProducer)
class EchoProtocol(SinkProtocol):
    """Counts one connection's bytes and writes each back, in order, until EOF (RFC 862);
    it reads no more while its peer does not read the answers."""

    def connectionMade(self) -> None:
        super().connectionMade()
        if self._connection is not None:
            # As a proxy does: we produce what the transport writes, so it pauses us when its
            # buffer passes bufferSize (64 KiB), and pausing us stops reading this peer.
            cast(IConsumer, self.transport).registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._connection is not None:
            # Only appends to the transport's list; may call pauseProducing() from inside.
            cast(ITCPTransport, self.transport).write(data)
            self._connection.echoed(len(data))

    def pauseProducing(self) -> None:
        # The peer is not reading its answers: stop reading it (stopReading(), abstract.py),
        # so what we hold stays bounded; other connections go on.
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        # The reactor sent everything the transport held: read this peer again.
        cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        pass  # the connection is going away: connectionLost() follows

    def readConnectionLost(self) -> None:
        # The peer's EOF: a FIN, or over TLS its close_notify (loops.TlsLayer tells us; the
        # layer has answered it and is closing). Nothing more to echo: unregister first, as
        # loseConnection()'s docstring asks (abstract.py: with a producer registered the
        # connection is not closed until it is finished; doWrite resumes a paused one
        # instead of closing), then close once every answer is written.
        cast(IConsumer, self.transport).unregisterProducer()
        cast(ITCPTransport, self.transport).loseConnection()

    def writeConnectionLost(self) -> None:
        pass  # we never half-close: the peer's EOF ends the connection


class SinkFactory(Factory):
    """Builds a :class:`SinkProtocol` (or, for an echoing sink, an :class:`EchoProtocol`)
    per connection, all counting into one :class:`Sink`."""

    def __init__(self, sink: Sink, check_errors: bool = False) -> None:
        self._sink = sink
        self._check_errors = check_errors

    def buildProtocol(self, addr: IAddress | None) -> SinkProtocol:
        kind = EchoProtocol if self._sink.echo else SinkProtocol
        return kind(self._sink, self._check_errors)


# --- server -----------------------------------------------------------------------------


# Twisted's coding standard: the reactor is passed in (first), never imported.
def start_listening(reactor: ReactorBase, sink: Sink, options: ServeOptions) -> IListeningPort:
    """Listen on ``options.host:port`` with a :class:`SinkProtocol` per connection."""
    # On uvloop, the socket is asked for a pending error after each read: by our protocol,
    # or over TLS by the layer that reads the socket (loops.stops_reading_at_an_error).
    check_errors = loops.stops_reading_at_an_error(reactor)
    factory: IProtocolFactory = SinkFactory(sink, check_errors and options.tls is None)
    if options.tls is not None:
        # What listenSSL does (internet/posixbase.py): listenTCP with a TLS factory around
        # ours; this one builds loops.TlsLayer, on our reactor's clock.
        tls = loops.TlsFactory(loops.server_tls(options.tls), False, factory, reactor)
        tls.check_errors = check_errors
        factory = tls
    try:
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
