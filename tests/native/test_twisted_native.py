"""twisted_impl tested in Twisted's idiom: pytest-twisted on the default reactor, the
protocol logic against ``twisted.internet.testing.StringTransport`` (no sockets), and real
round trips on the reactor over 127.0.0.1 port 0, every wait bounded by a timeout."""

from __future__ import annotations

from typing import Any

import pytest

pytest_twisted = pytest.importorskip("pytest_twisted", reason="needs the twisted extra")

from twisted.internet import defer, error, task  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import SendOptions  # noqa: E402
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.results import SendFailed  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402
from nbio.twisted_impl import client, server  # noqa: E402

TIMEOUT = 30
CHUNK = 1000


class ClogTransport(StringTransport):
    """A StringTransport that pauses its push producer the way a real one does: once more
    than ``limit`` bytes are buffered. :meth:`drain` plays the reactor sending them. It
    half-closes too (StringTransport has no ``loseWriteConnection``)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.states: list[str] = []
        self.write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > self.limit:
            self.states.append("paused")
            self.producer.pauseProducing()

    def drain(self) -> int:
        sent = len(self.value())
        self.clear()
        if self.producer is not None:
            self.states.append("resumed")
            self.producer.resumeProducing()
        return sent


def _protocol(
    size: int, transport: StringTransport, clock: task.Clock | None = None
) -> tuple[client.PayloadProtocol, SendAccount]:
    account = SendAccount()
    chunks = Payload(size).chunks(CHUNK)
    protocol = client.PayloadProtocol(
        chunks, account, lambda n: None, clock or task.Clock(), close_timeout=5.0
    )
    protocol.makeConnection(transport)
    return protocol, account


def test_producer_starts_itself_and_pauses_on_a_clogged_transport() -> None:
    """connectionMade registers a push producer that writes until the transport pauses it."""
    transport = ClogTransport(limit=3 * CHUNK)
    protocol, account = _protocol(100 * CHUNK, transport)
    assert transport.producer is protocol and transport.streaming is True
    assert account.bytes == 4 * CHUNK  # wrote past the limit once, then was paused
    assert transport.states == ["paused"]


def test_producer_resumes_when_drained_and_half_closes_after_the_last_chunk() -> None:
    """Each drain resumes the producer; at the end it unregisters and half-closes, and the
    sink's close (ConnectionDone) is the receipt that completes the transfer."""
    transport = ClogTransport(limit=3 * CHUNK)
    protocol, account = _protocol(10 * CHUNK + 1, transport)
    delivered = 0
    while not transport.write_closed:
        delivered += transport.drain()
    delivered += transport.drain()  # the half-close still sends what is buffered
    assert delivered == account.bytes == 10 * CHUNK + 1
    assert transport.producer is None  # unregistered before loseWriteConnection()
    assert transport.states.count("resumed") >= 2
    assert not protocol.done.called  # not sent until the sink closes in turn
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert protocol.done.called


def test_producer_gives_up_when_the_sink_never_closes() -> None:
    """After the half-close the producer waits close_timeout seconds (on the reactor's
    clock) for the sink to close, then aborts: the transfer fails with a timeout."""
    clock = task.Clock()
    transport = ClogTransport(limit=100 * CHUNK)
    protocol, _ = _protocol(CHUNK, transport, clock)
    failures: list[Failure] = []
    protocol.done.addErrback(failures.append)
    clock.advance(4.9)
    assert not transport.disconnecting and not failures
    clock.advance(0.2)
    assert transport.disconnecting  # abortConnection()
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert client._failure_text(failures[0]) == "no close from the sink within 5 s of the last byte"


def test_producer_stopped_mid_transfer_fails_with_what_was_buffered() -> None:
    """stopProducing then connectionLost(ConnectionLost): the transfer fails, and the bytes
    still in the transport are not counted as sent."""
    transport = ClogTransport(limit=3 * CHUNK)
    protocol, account = _protocol(100 * CHUNK, transport)
    failures: list[Failure] = []
    protocol.done.addErrback(failures.append)
    protocol.stopProducing()
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert account.bytes == 4 * CHUNK
    assert [f.type for f in failures] == [error.ConnectionLost]
    assert client._failure_text(failures[0]) == "connection reset by peer"


def test_sink_protocol_counts_and_reports_eof_and_reset() -> None:
    """dataReceived counts; ConnectionDone reports eof, ConnectionLost reports reset."""
    events: list[Event] = []
    delay = LoopDelay()
    sink = Sink("sha256", delay, events.append)
    factory = server.SinkFactory(sink)
    for reason in (error.ConnectionDone(), error.ConnectionLost()):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"foobar\n")
        protocol.dataReceived(b"foo")
        protocol.connectionLost(Failure(reason))
    assert [(e.bytes, e.outcome) for e in events if isinstance(e, Received)] == [
        (10, "eof"),
        (10, "reset"),
    ]


@pytest_twisted.ensureDeferred
async def test_round_trip_on_the_reactor() -> None:
    """The Twisted client sends three connections to the Twisted sink on the real reactor."""
    from twisted.internet import reactor

    events: list[Event] = []
    delay = LoopDelay()
    sink = Sink("sha256", delay, events.append)
    port = reactor.listenTCP(0, server.SinkFactory(sink), interface="127.0.0.1")
    try:
        payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
        options = SendOptions(payload, port=port.getHost().port, connections=3, digest="sha256")
        sending = defer.Deferred.fromCoroutine(client.send_all(reactor, options, lambda n: None))
        result = await sending.addTimeout(TIMEOUT, reactor)
        idle: defer.Deferred[None] = defer.Deferred()
        sink.when_idle(lambda: idle.callback(None))
        await idle.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
    assert result.sha256 == payload.sha256() and result.bytes == 3 * payload.size
    received = [e for e in events if isinstance(e, Received)]
    assert [(r.bytes, r.sha256, r.outcome) for r in received] == [
        (payload.size, payload.sha256(), "eof")
    ] * 3


class Stalled(Protocol):
    """A peer that stops reading as soon as it connects, until told to go on."""

    def connectionMade(self) -> None:
        self.received = 0
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.factory.connected.callback(self)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)


@pytest_twisted.ensureDeferred
async def test_client_waits_for_a_stalled_peer_then_finishes() -> None:
    """Against a peer that does not read, the producer stays paused with bounded buffers;
    when the peer reads again, the transfer completes exactly."""
    from twisted.internet import reactor

    factory = Factory.forProtocol(Stalled)
    factory.connected = defer.Deferred()  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        payload = Payload(64 * 1024 * 1024)
        account = SendAccount()
        options = SendOptions(payload, port=port.getHost().port)
        sending = defer.Deferred.fromCoroutine(
            client.send_one(reactor, options, account, lambda n: None)
        )
        peer: Any = await factory.connected.addTimeout(TIMEOUT, reactor)  # type: ignore[attr-defined]
        last = -1
        while account.bytes != last:  # until the producer stops being resumed
            last = account.bytes
            await task.deferLater(reactor, 0.05, lambda: None)
        assert not sending.called
        assert account.bytes < 16 * 1024 * 1024
        peer.transport.resumeProducing()
        await sending.addTimeout(TIMEOUT, reactor)
        assert account.bytes == payload.size
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_refused_connection_fails_with_zero_bytes() -> None:
    """Nobody listening: send_all raises SendFailed('connection refused', 0)."""
    from twisted.internet import reactor

    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    options = SendOptions(Payload(1024), port=number)
    with pytest.raises(SendFailed) as failed:
        await defer.Deferred.fromCoroutine(client.send_all(reactor, options, lambda n: None))
    assert (failed.value.message, failed.value.bytes_sent) == ("connection refused", 0)
