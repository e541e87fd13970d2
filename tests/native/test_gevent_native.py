"""gevent_impl tested in gevent's idiom: server and clients as greenlets of one process on
one hub, gevent's own sockets on 127.0.0.1 port 0, ``gevent.Timeout`` around every wait."""

from __future__ import annotations

import itertools
import random
import socket
import ssl

import pytest

gevent = pytest.importorskip("gevent", reason="needs the gevent extra")

from gevent import socket as gsocket  # noqa: E402
from gevent import ssl as gssl  # noqa: E402

from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import ClientTls, SendOptions, ServeOptions, ServerTls  # noqa: E402
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402
from nbio.edge.tls import client_context, server_context, throwaway  # noqa: E402
from nbio.gevent_impl import client, server, ticker  # noqa: E402

TIMEOUT = 30


def test_greenlets_of_one_hub_deliver_every_byte() -> None:
    """The StreamServer sink and three client greenlets, on one hub: every byte, three
    connections, each reported once it ends."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    listener = server.start_listening(sink, ServeOptions(impl="test", port=0))
    try:
        payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
        options = SendOptions(payload, port=listener.server_port, digest="sha256")
        accounts = [SendAccount("sha256") for _ in range(3)]
        with gevent.Timeout(TIMEOUT):
            gevent.joinall(
                [gevent.spawn(client.send_one, options, a, lambda n: None, None) for a in accounts],
                raise_error=True,
            )
            while len(events) < 3:
                gevent.sleep(0.01)
    finally:
        listener.close()
    assert [a.sha256 for a in accounts] == [payload.sha256()] * 3
    received = [e for e in events if isinstance(e, Received)]
    assert [(r.bytes, r.sha256, r.outcome) for r in received] == [
        (payload.size, payload.sha256(), "eof")
    ] * 3


def test_sendall_blocks_the_greenlet_on_a_peer_that_does_not_read() -> None:
    """sendall() is the backpressure: against a peer that does not read, the sending
    greenlet waits, with a few MiB in the kernel, while the hub runs other greenlets."""
    listener = gsocket.socket()  # gevent's own: its accept() waits in the hub
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    account = SendAccount()
    options = SendOptions(Payload(64 * 1024 * 1024), port=listener.getsockname()[1])
    sender = gevent.spawn(client.send_one, options, account, lambda n: None, None)
    with gevent.Timeout(TIMEOUT):
        peer, _ = listener.accept()
        last = -1
        while account.bytes != last:  # until the count stops moving
            last = account.bytes
            gevent.sleep(0.05)
    assert not sender.ready()
    assert account.bytes < 16 * 1024 * 1024
    sender.kill()
    peer.close()
    listener.close()


def test_the_ticker_measures_against_the_hubs_own_clock() -> None:
    """Each tick is expected at the hub's cached now plus 10 ms, on the monotonic clock:
    the due times the ticker records are 10 ms apart, give or take a loop turn."""
    recorded: list[float] = []

    class Recording(LoopDelay):
        def expect(self, due: float) -> None:
            recorded.append(due)
            super().expect(due)

    stop = ticker.start_ticker(gevent.get_hub(), Recording())
    gevent.sleep(0.15)
    stop()
    gaps = [b - a for a, b in itertools.pairwise(recorded)]
    assert len(recorded) >= 5
    assert all(0.009 < gap < 0.05 for gap in gaps), gaps


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    """A throwaway CA and a localhost certificate it signed."""
    pytest.importorskip("trustme", reason="needs the tls extra")
    return throwaway(str(tmp_path_factory.mktemp("tls")))


def test_echo_answers_stay_apart_while_a_sendall_waits() -> None:
    """One connection sends 16 MiB and reads nothing back, until the server, its answers
    unread, parks in sendall() and stops reading it; then another echoes 4 MiB, and only
    then the first reads. Each gets back exactly what it sent. (With the one read buffer
    the sink mode shares, the parked write would send what the second connection read.)"""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append, echo=True)
    listener = server.start_listening(sink, ServeOptions(impl="test", port=0, mode="echo"))
    port = listener.server_port
    chunk = 256 * 1024
    stuck_data, other_data = (
        random.Random(n).randbytes(k * 4 * chunk) for n, k in ((1, 16), (2, 4))
    )

    def write(sock: gsocket.socket, data: bytes, written: list[int]) -> None:
        for start in range(0, len(data), chunk):
            sock.sendall(data[start : start + chunk])
            written[0] += chunk

    def read(sock: gsocket.socket, size: int) -> bytes:
        back = bytearray()
        while len(back) < size:
            back += sock.recv(chunk)
        return bytes(back)

    try:
        with gevent.Timeout(TIMEOUT):
            stuck = gsocket.create_connection(("127.0.0.1", port))
            written = [0]
            writer = gevent.spawn(write, stuck, stuck_data, written)
            last = -1
            while written[0] != last:  # until the server reads no more of it
                last = written[0]
                gevent.sleep(0.05)
            assert written[0] < len(stuck_data)
            other = gsocket.create_connection(("127.0.0.1", port))
            other_writer = gevent.spawn(write, other, other_data, [0])
            other_back = read(other, len(other_data))
            stuck_back = read(stuck, len(stuck_data))
            gevent.joinall([writer, other_writer], raise_error=True)
    finally:
        listener.close()
    assert other_back == other_data
    assert stuck_back == stuck_data


def test_greenlets_of_one_hub_deliver_every_byte_over_tls(tls: ServerTls) -> None:
    """The StreamServer sink over gevent's SSLSocket and a client greenlet: every byte, the
    handshake's version on both sides, and ``eof`` at the client's close_notify, which the
    sink answers with its own before the client returns."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    listener = server.start_listening(sink, ServeOptions(impl="test", port=0, tls=tls))
    try:
        payload = Payload(1024 * 1024 + 1, pattern="random")
        trust = ClientTls(cafile=tls.cafile)
        options = SendOptions(payload, port=listener.server_port, digest="sha256", tls=trust)
        account = SendAccount("sha256")
        with gevent.Timeout(TIMEOUT):
            client.send_one(options, account, lambda n: None, client_context(trust))
            (received,) = [e for e in events if isinstance(e, Received)]  # before it returned
    finally:
        listener.close()
    assert account.tls is not None and account.tls[0] == "TLSv1.3"
    assert (received.bytes, received.sha256, received.outcome) == (
        payload.size,
        payload.sha256(),
        "eof",
    )
    assert received.tls_version == "TLSv1.3"


def _tls_pair(tls: ServerTls) -> tuple[gssl.SSLSocket, gssl.SSLSocket]:
    """A connected client and server, each gevent's SSLSocket, their handshake done."""
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    raw = gsocket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    trust = client_context(ClientTls(cafile=tls.cafile))
    ours = gssl.SSLSocket(
        raw,
        server_hostname="localhost",
        do_handshake_on_connect=False,
        suppress_ragged_eofs=False,
        _context=trust,
    )
    theirs = gssl.SSLSocket(
        accepted,
        server_side=True,
        do_handshake_on_connect=False,
        suppress_ragged_eofs=False,
        _context=server_context(tls),
    )
    gevent.joinall([gevent.spawn(s.do_handshake) for s in (ours, theirs)], raise_error=True)
    return ours, theirs


def test_a_fin_without_close_notify_is_no_end_of_stream(tls: ServerTls) -> None:
    """With suppress_ragged_eofs=False, gevent's SSLSocket reads a FIN that comes without
    close_notify as SSLEOFError (gevent/ssl.py, read), and close_notify as the end (0): the
    sink tells ``truncated`` from ``eof`` by it."""
    with gevent.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        ours.sendall(b"x" * 1000)
        gsocket.socket.shutdown(ours, socket.SHUT_WR)  # a FIN under TLS
        buffer = memoryview(bytearray(64 * 1024))
        assert theirs.recv_into(buffer) == 1000
        with pytest.raises(ssl.SSLEOFError):
            theirs.recv_into(buffer)
        ours.close()
        theirs.close()


def test_unwrap_takes_a_fin_for_the_peers_close_notify(tls: ServerTls) -> None:
    """gevent's SSLSocket.unwrap() returns when the peer closes with a FIN and no
    close_notify, as when it answers with one (gevent/ssl.py: ``except SSLEOFError:
    break``). So it cannot be a TLS client's receipt: the client waits on the SSL object
    under it instead (the next test)."""
    with gevent.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        closing = gevent.spawn(ours.unwrap)
        assert theirs.recv(1024) == b""  # our close_notify: the end of the stream
        gsocket.socket.shutdown(theirs, socket.SHUT_RDWR)  # a FIN, no close_notify
        closing.join()
        assert closing.successful()  # no error: the FIN passed for a close_notify
        ours.close()
        theirs.close()


def test_the_clients_close_waits_for_the_close_notify_and_a_fin_is_no_receipt(
    tls: ServerTls,
) -> None:
    """The client's close sends our close_notify and waits in the hub until the sink
    answers with its own; a FIN without one raises SSLEOFError, which the transfer
    reports, where gevent's unwrap() would have returned."""
    with gevent.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        closing = gevent.spawn(client._close_notify, ours)
        assert theirs.recv(1024) == b""
        gevent.sleep(0.1)
        assert not closing.ready()  # still waiting for the sink's close_notify
        theirs.unwrap()
        closing.join()
        assert closing.successful()
        ours.close()
        theirs.close()

        ours, theirs = _tls_pair(tls)

        def end_with_a_fin() -> None:
            assert theirs.recv(1024) == b""
            gsocket.socket.shutdown(theirs, socket.SHUT_RDWR)  # no close_notify

        peer = gevent.spawn(end_with_a_fin)
        with pytest.raises(ssl.SSLEOFError):
            client._close_notify(ours)
        peer.join()
        assert peer.successful()
        ours.close()
        theirs.close()
