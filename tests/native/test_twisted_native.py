"""twisted_impl tested in Twisted's idiom: pytest-twisted on the default reactor, the
protocol logic against ``twisted.internet.testing.StringTransport`` (no sockets), and real
round trips on the reactor over 127.0.0.1 port 0, every wait bounded by a timeout. The TLS
tests pin what ``twisted/protocols/tls.py`` does that the implementation relies on, against
stdlib ``ssl`` peers in a thread."""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest_twisted = pytest.importorskip("pytest_twisted", reason="needs the twisted extra")

from twisted.internet import defer, error, task, threads  # noqa: E402
from twisted.internet.endpoints import HostnameEndpoint  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener  # noqa: E402
from twisted.internet.protocol import Factory, Protocol, connectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from zope.interface import implementer  # noqa: E402

from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import ClientTls, Echo, SendOptions, ServerTls  # noqa: E402
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.results import SendFailed  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402
from nbio.twisted_impl import client, loops, server  # noqa: E402

TIMEOUT = 30
CHUNK = 1000

# Twisted 26.10's CertificateOptions hands pyOpenSSL the X509 and PKey objects its own API
# takes (use_certificate, add_cert), and pyOpenSSL 26 deprecates them: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


class ClogTransport(StringTransport):
    """A StringTransport that pauses its push producer the way a real one does: once more
    than ``limit`` bytes are buffered. :meth:`drain` plays the reactor sending them. It
    half-closes too (StringTransport has no ``loseWriteConnection``)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.states: list[str] = []
        self.write_closed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

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


def test_producer_gives_up_when_the_kernel_takes_nothing_for_stall_timeout() -> None:
    """The transport never resumes a paused producer: after stall_timeout seconds (on the
    reactor's clock) the watchdog aborts, and the transfer fails with a StallTimeout;
    each resume (the kernel took what was buffered) starts the count again."""
    clock = task.Clock()
    transport = ClogTransport(limit=3 * CHUNK)
    account = SendAccount()
    protocol = client.PayloadProtocol(
        Payload(100 * CHUNK).chunks(CHUNK), account, lambda n: None, clock, 5.0, 2.0
    )
    failures: list[Failure] = []
    protocol.done.addErrback(failures.append)
    protocol.makeConnection(transport)
    clock.advance(1.5)
    transport.drain()  # progress
    clock.advance(1.5)
    assert not transport.disconnecting
    clock.advance(0.6)
    assert transport.aborted  # abortConnection()
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert client._failure_text(failures[0]) == "no progress for 2 s: the peer took no byte"


def _echo_client(
    requests: int, transport: StringTransport
) -> tuple[client.EchoProtocol, list[bytes]]:
    messages = [bytes([65 + i]) * 3 for i in range(requests)]
    protocol = client.EchoProtocol(
        Echo(message_size=3, requests=requests), iter(messages), SendAccount(),
        lambda n: None, task.Clock(), close_timeout=5.0,
    )  # fmt: skip
    protocol.makeConnection(transport)
    return protocol, messages


def test_echo_client_sends_the_next_request_once_the_answer_is_whole() -> None:
    """Closed loop: one request in flight; an answer arriving in pieces completes it, the
    next goes out, and after the last answer the client half-closes and waits."""
    transport = ClogTransport(limit=1000)
    protocol, messages = _echo_client(2, transport)
    assert transport.value() == messages[0]
    protocol.dataReceived(messages[0][:1])
    assert transport.value() == messages[0]  # not whole yet: nothing more sent
    protocol.dataReceived(messages[0][1:])
    assert transport.value() == messages[0] + messages[1]
    protocol.dataReceived(messages[1])
    assert transport.write_closed and not protocol.done.called
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert protocol.done.called and protocol.requests.answered_count == 2


def test_echo_client_fails_on_an_answer_that_differs() -> None:
    """A wrong byte back aborts the connection, and the transfer fails saying which request."""
    transport = ClogTransport(limit=1000)
    protocol, _ = _echo_client(2, transport)
    failures: list[Failure] = []
    protocol.done.addErrback(failures.append)
    protocol.dataReceived(b"AAB")
    assert transport.aborted
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert client._failure_text(failures[0]) == "request 1's answer differs from it"


def test_echo_server_writes_back_and_stops_reading_a_peer_that_does_not_read() -> None:
    """The echo protocol writes back what it reads and is its transport's push producer:
    paused (the transport holds too much), it pauses the transport, which stops reading
    the peer; at the peer's EOF it unregisters, so that loseConnection() can close."""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append, echo=True)
    protocol = server.SinkFactory(sink).buildProtocol(None)
    assert isinstance(protocol, server.EchoProtocol)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.producer is protocol and transport.streaming
    protocol.dataReceived(b"ping")
    assert transport.value() == b"ping"
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"
    protocol.readConnectionLost()
    assert transport.producer is None and transport.disconnecting
    protocol.connectionLost(Failure(error.ConnectionDone()))
    (received,) = [e for e in events if isinstance(e, Received)]
    assert (received.bytes, received.bytes_out, received.outcome) == (4, 4, "eof")


# --- TLS: what twisted/protocols/tls.py does ------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> ServerTls:
    """A throwaway CA and a localhost certificate (trustme), as PEM files."""
    pytest.importorskip("trustme", reason="needs the tls extra")
    from nbio.edge.tls import throwaway

    return throwaway(str(tmp_path))


@implementer(IHandshakeListener)
class Peer(Protocol):
    """Records what a TLS connection delivers: the handshake, the bytes, how it ended."""

    def __init__(self) -> None:
        self.secured: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self.received = b""

    def handshakeCompleted(self) -> None:
        self.secured.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.ended.callback(None)


def _stdlib_tls_server(
    files: ServerTls, serve: Callable[[ssl.SSLSocket], str]
) -> tuple[int, queue.Queue[str], threading.Event]:
    """A one-connection stdlib TLS server in a thread: ``serve`` says how it ended; the
    server closes its socket once the returned event is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.certfile, files.keyfile)
    listener = socket.create_server(("127.0.0.1", 0))
    outcomes: queue.Queue[str] = queue.Queue()
    release = threading.Event()

    def run() -> None:
        with listener:
            raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        with context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as conn:
            try:
                outcomes.put(serve(conn))
            except ssl.SSLEOFError:
                outcomes.put("truncated")
            release.wait(TIMEOUT)

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], outcomes, release


def _read_until_eof(conn: ssl.SSLSocket) -> str:
    while conn.recv(65536):
        pass
    return "eof"  # recv() returned b"": the peer's close_notify


async def _connect_tls(port: int, files: ServerTls) -> Peer:
    from twisted.internet import reactor

    peer = Peer()
    creator = loops.client_tls(ClientTls(cafile=files.cafile))
    factory = loops.TlsFactory(creator, True, Factory.forProtocol(lambda: peer), reactor)
    await HostnameEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await peer.secured.addTimeout(TIMEOUT, reactor)
    return peer


async def _outcome(outcomes: queue.Queue[str]) -> str:
    return await threads.deferToThread(outcomes.get, timeout=TIMEOUT)


@pytest_twisted.ensureDeferred
async def test_lose_write_connection_over_tls_is_tcps_fin_with_no_close_notify(
    tls_files: ServerTls,
) -> None:
    """The TLS layer has no loseWriteConnection(): ProtocolWrapper.__getattr__ hands it to
    the TCP transport, which sends a FIN and no close_notify, a truncation to the peer.
    So the client half-closes a TLS connection with loseConnection() instead."""
    port, outcomes, release = _stdlib_tls_server(tls_files, _read_until_eof)
    peer = await _connect_tls(port, tls_files)
    assert not hasattr(loops.TlsLayer, "loseWriteConnection")
    peer.transport.loseWriteConnection()  # type: ignore[union-attr]
    try:
        assert await _outcome(outcomes) == "truncated"
    finally:
        # Before the peer closes: an alert from it now would find the TLS layer reading on
        # over a TCP connection half-closed under it, which Twisted does not survive (the
        # layer closes, TCP's loseConnection() runs connectionLost() at once, and
        # _flushReceiveBIO goes on with no OpenSSL connection: AttributeError).
        peer.transport.abortConnection()  # type: ignore[union-attr]
        await peer.ended
        release.set()


@pytest_twisted.ensureDeferred
async def test_lose_connection_over_tls_sends_close_notify_and_reads_until_the_peers(
    tls_files: ServerTls,
) -> None:
    """loseConnection() on the TLS layer is a half-close: close_notify after what was
    written, then the layer delivers what the peer still sends until its close_notify,
    and only that ends the connection with ConnectionDone: the client's receipt."""

    def answer_after_eof(conn: ssl.SSLSocket) -> str:
        outcome = _read_until_eof(conn)
        conn.sendall(b"read it all")
        conn.unwrap()  # our close_notify
        return outcome

    port, outcomes, release = _stdlib_tls_server(tls_files, answer_after_eof)
    release.set()
    peer = await _connect_tls(port, tls_files)
    peer.transport.write(b"x" * 100_000)  # type: ignore[union-attr]
    peer.transport.loseConnection()  # type: ignore[union-attr]
    assert await _outcome(outcomes) == "eof"
    await peer.ended
    assert peer.reason is not None and peer.reason.check(error.ConnectionDone)
    assert peer.received == b"read it all"


@pytest_twisted.ensureDeferred
async def test_a_fin_without_close_notify_and_a_reset_both_end_as_connection_lost(
    tls_files: ServerTls,
) -> None:
    """Through the TLS layer, a peer's FIN with no close_notify and a peer's reset reach
    the protocol alike, as ConnectionLost (_tlsShutdownFinished squashes OpenSSL's
    "unexpected eof" into CONNECTION_LOST); only the TCP connection under it knew which,
    which loops.TlsLayer.truncated keeps. A close_notify ends it with ConnectionDone."""
    from twisted.internet import reactor

    peers: list[Peer] = []

    def build() -> Peer:
        peers.append(Peer())
        return peers[-1]

    options = loops.server_tls(tls_files)
    factory = loops.TlsFactory(options, False, Factory.forProtocol(build), reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    context = ssl.create_default_context(cafile=tls_files.cafile)

    def close_notify(sock: ssl.SSLSocket) -> None:
        sock.unwrap()

    def fin(sock: ssl.SSLSocket) -> None:
        sock.shutdown(socket.SHUT_WR)  # drops the TLS state unsent: no close_notify

    def reset(sock: ssl.SSLSocket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def send_then(end: Callable[[ssl.SSLSocket], None]) -> None:
        raw = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=TIMEOUT)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"data")
            end(sock)

    try:
        ended = []
        for count, end in enumerate((close_notify, fin, reset), 1):
            await threads.deferToThread(send_then, end)
            while len(peers) < count:
                await task.deferLater(reactor, 0.01, lambda: None)
            await peers[-1].ended.addTimeout(TIMEOUT, reactor)
            reason, layer = peers[-1].reason, peers[-1].transport
            assert reason is not None and isinstance(layer, loops.TlsLayer)
            ended.append((reason.type, layer.truncated))
    finally:
        await port.stopListening()
    assert ended == [
        (error.ConnectionDone, False),
        (error.ConnectionLost, True),
        (error.ConnectionLost, False),
    ]


class EchoBack(Protocol):
    """Writes back what it reads: the simplest echo, to compare TLS layers."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("layer", "answered"),
    [(TLSMemoryBIOFactory, b""), (loops.TlsFactory, b"ping")],
    ids=["BufferingTLSTransport", "TlsLayer"],
)
@pytest_twisted.ensureDeferred
async def test_an_answer_written_as_close_notify_arrives_is_dropped_by_buffered_tls(
    tls_files: ServerTls, layer: type[TLSMemoryBIOFactory], answered: bytes
) -> None:
    """A request and its close_notify arrive in one read: the echo written in that turn
    reaches the peer through TLSMemoryBIOProtocol (loops.TlsLayer), but Twisted's default,
    BufferingTLSTransport, holds it for the next turn, by which time the layer has answered
    the close_notify and shut TLS down, and drops it (_write returns once
    _lostTLSConnection)."""
    from twisted.internet import reactor

    factory = layer(loops.server_tls(tls_files), False, Factory.forProtocol(EchoBack), reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        peer = Peer()
        creator = loops.client_tls(ClientTls(cafile=tls_files.cafile))
        # The client writes, then closes at once: both wait in its layer for the handshake,
        # then leave in one turn, so in one TCP segment.
        connecting = TLSMemoryBIOFactory(creator, True, Factory.forProtocol(lambda: peer), reactor)
        endpoint = HostnameEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await endpoint.connect(connecting)
        peer.transport.write(b"ping")  # type: ignore[union-attr]
        peer.transport.loseConnection()  # type: ignore[union-attr]
        await peer.ended.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
    assert peer.reason is not None and peer.reason.check(error.ConnectionDone)
    assert peer.received == answered
