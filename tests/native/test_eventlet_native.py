"""eventlet_impl tested in Eventlet's idiom: server and clients as green threads of one
process on one hub, Eventlet's own green sockets on 127.0.0.1 port 0, ``eventlet.Timeout``
around every wait, no monkey-patching."""

from __future__ import annotations

import itertools
import random
import socket
import ssl
import subprocess
import sys

import pytest

pytest.importorskip("eventlet", reason="needs the eventlet extra")

import eventlet
from eventlet.green import socket as gsocket
from eventlet.green import ssl as gssl

from harness import run_nbio
from nbio.common.accounting import SendAccount
from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import ClientTls, SendOptions, ServeOptions, ServerTls
from nbio.common.payload import Payload
from nbio.common.sink import Sink
from nbio.edge.kernel import RESET_LINGER
from nbio.edge.tls import client_context, server_context, throwaway
from nbio.eventlet_impl import client, loops, server, ticker

TIMEOUT = 30


def test_green_threads_of_one_hub_deliver_every_byte() -> None:
    """The GreenPool sink and three client green threads, on one hub: every byte, three
    connections, each reported once it ends."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    listener, acceptor = server.start_listening(sink, ServeOptions(impl="test", port=0))
    try:
        payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
        options = SendOptions(payload, port=listener.getsockname()[1], digest="sha256")
        accounts = [SendAccount("sha256") for _ in range(3)]
        with eventlet.Timeout(TIMEOUT):
            senders = [
                eventlet.spawn(client.send_one, options, a, lambda n: None, None) for a in accounts
            ]
            for sender in senders:
                sender.wait()
            while len(events) < 3:
                eventlet.sleep(0.01)
    finally:
        acceptor.kill()
    assert [a.sha256 for a in accounts] == [payload.sha256()] * 3
    received = [e for e in events if isinstance(e, Received)]
    assert [(r.bytes, r.sha256, r.outcome) for r in received] == [
        (payload.size, payload.sha256(), "eof")
    ] * 3


def test_sendall_parks_the_green_thread_on_a_peer_that_does_not_read() -> None:
    """sendall() is the backpressure: against a peer that does not read, the sending green
    thread waits in the hub, with a few MiB in the kernel, while other green threads run."""
    listener = eventlet.listen(("127.0.0.1", 0))
    account = SendAccount()
    options = SendOptions(Payload(64 * 1024 * 1024), port=listener.getsockname()[1])
    sender = eventlet.spawn(client.send_one, options, account, lambda n: None, None)
    with eventlet.Timeout(TIMEOUT):
        peer, _ = listener.accept()
        last = -1
        while account.bytes != last:  # until the count stops moving
            last = account.bytes
            eventlet.sleep(0.05)
    assert not sender.dead
    assert account.bytes < 16 * 1024 * 1024
    sender.kill()
    peer.close()
    listener.close()


def test_a_reset_is_not_read_as_eof() -> None:
    """A green socket's recv_into() answers a reset with 0, as at EOF; loops.recv_into()
    raises ConnectionResetError, so the sink can tell a peer that reset from one that
    finished."""
    listener = eventlet.listen(("127.0.0.1", 0))
    peer = gsocket.create_connection(listener.getsockname())
    with eventlet.Timeout(TIMEOUT):
        sock, _ = listener.accept()
        peer.sendall(b"x" * 1000)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        peer.close()
        buffer = memoryview(bytearray(64))
        with pytest.raises(ConnectionResetError):
            while loops.recv_into(sock, buffer):
                pass
    sock.close()
    listener.close()


def test_the_ticker_measures_against_the_hubs_own_clock() -> None:
    """Each tick is expected at the hub's clock plus 10 ms: the due times the ticker records
    are 10 ms apart, give or take a hub turn."""
    recorded: list[float] = []

    class Recording(LoopDelay):
        def expect(self, due: float) -> None:
            recorded.append(due)
            super().expect(due)

    stop = ticker.start_ticker(eventlet.hubs.get_hub(), Recording())
    eventlet.sleep(0.15)
    stop()
    gaps = [b - a for a, b in itertools.pairwise(recorded)]
    assert len(recorded) >= 5
    assert all(0.009 < gap < 0.05 for gap in gaps), gaps


def test_the_deprecation_warning_is_said_once_in_impls_and_never_in_a_run() -> None:
    """Eventlet warns on import that it is deprecated: ``nbio impls`` says so once, in its
    note, and importing nbio's eventlet package (as serve and send do) prints nothing."""
    listed = run_nbio("impls")
    assert listed.stdout.count("deprecated") == 1, listed.stdout
    assert "Eventlet is deprecated" not in listed.stdout + listed.stderr
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import nbio.eventlet_impl.client"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


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
    listener, acceptor = server.start_listening(
        sink, ServeOptions(impl="test", port=0, mode="echo")
    )
    port = listener.getsockname()[1]
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
        with eventlet.Timeout(TIMEOUT):
            stuck = gsocket.create_connection(("127.0.0.1", port))
            written = [0]
            writer = eventlet.spawn(write, stuck, stuck_data, written)
            last = -1
            while written[0] != last:  # until the server reads no more of it
                last = written[0]
                eventlet.sleep(0.05)
            assert written[0] < len(stuck_data)
            other = gsocket.create_connection(("127.0.0.1", port))
            other_writer = eventlet.spawn(write, other, other_data, [0])
            other_back = read(other, len(other_data))
            stuck_back = read(stuck, len(stuck_data))
            writer.wait()
            other_writer.wait()
    finally:
        acceptor.kill()
    assert other_back == other_data
    assert stuck_back == stuck_data


def test_green_threads_of_one_hub_deliver_every_byte_over_tls(tls: ServerTls) -> None:
    """The GreenPool sink over GreenSSLSocket and a client green thread: every byte, the
    handshake's version on both sides, and ``eof`` at the client's close_notify, which the
    sink answers with its own before the client returns."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    listener, acceptor = server.start_listening(sink, ServeOptions(impl="test", port=0, tls=tls))
    try:
        payload = Payload(1024 * 1024 + 1, pattern="random")
        trust = ClientTls(cafile=tls.cafile)
        port = listener.getsockname()[1]
        options = SendOptions(payload, port=port, digest="sha256", tls=trust)
        account = SendAccount("sha256")
        with eventlet.Timeout(TIMEOUT):
            client.send_one(options, account, lambda n: None, client_context(trust))
            (received,) = [e for e in events if isinstance(e, Received)]  # before it returned
    finally:
        acceptor.kill()
    assert account.tls is not None and account.tls[0] == "TLSv1.3"
    assert (received.bytes, received.sha256, received.outcome) == (
        payload.size,
        payload.sha256(),
        "eof",
    )
    assert received.tls_version == "TLSv1.3"


def _tls_pair(tls: ServerTls) -> tuple[gssl.GreenSSLSocket, gssl.GreenSSLSocket]:
    """A connected client and server, each a GreenSSLSocket, their handshake done."""
    listener = eventlet.listen(("127.0.0.1", 0))
    trust = client_context(ClientTls(cafile=tls.cafile))
    raw = gsocket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    ours = gssl.GreenSSLSocket(
        raw,
        server_hostname="localhost",
        do_handshake_on_connect=False,
        suppress_ragged_eofs=False,
        _context=trust,
    )
    theirs = gssl.GreenSSLSocket(
        accepted,
        server_side=True,
        do_handshake_on_connect=False,
        suppress_ragged_eofs=False,
        _context=server_context(tls),
    )
    handshakes = [eventlet.spawn(s.do_handshake) for s in (ours, theirs)]
    for handshake in handshakes:
        handshake.wait()
    return ours, theirs


def test_a_fin_without_close_notify_is_no_end_of_stream(tls: ServerTls) -> None:
    """With suppress_ragged_eofs=False, a GreenSSLSocket reads a FIN that comes without
    close_notify as SSLEOFError (the stdlib's read under it raises, and Eventlet only waits
    on SSL_ERROR_WANT_READ and _WRITE), and close_notify as the end (0): the sink tells
    ``truncated`` from ``eof`` by it."""
    with eventlet.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        ours.sendall(b"x" * 1000)
        socket.socket.shutdown(ours, socket.SHUT_WR)  # a FIN under TLS
        buffer = memoryview(bytearray(64 * 1024))
        assert loops.recv_into(theirs, buffer) == 1000
        with pytest.raises(ssl.SSLEOFError):
            loops.recv_into(theirs, buffer)
        ours.close()
        theirs.close()


def test_unwrap_waits_for_the_peers_close_notify_and_a_fin_is_no_receipt(tls: ServerTls) -> None:
    """GreenSSLSocket.unwrap() sends close_notify, then waits in the hub for the peer's:
    it returns once the peer answers with its own, and raises SSLEOFError when the peer
    closes with a FIN and no close_notify (the stdlib's shutdown under it raises, and
    Eventlet only waits on SSL_ERROR_WANT_READ): the client's receipt can rely on it."""
    with eventlet.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        closing = eventlet.spawn(ours.unwrap)
        eventlet.sleep(0.1)
        assert not closing.dead  # waiting for the peer's close_notify
        assert theirs.recv(1024) == b""  # ours arrived: the stream's end
        theirs.unwrap()
        closing.wait()
        ours.close()
        theirs.close()

        ours, theirs = _tls_pair(tls)
        closing = eventlet.spawn(ours.unwrap)
        assert theirs.recv(1024) == b""
        socket.socket.shutdown(theirs, socket.SHUT_RDWR)  # a FIN, no close_notify
        with pytest.raises(ssl.SSLEOFError):
            closing.wait()
        ours.close()
        theirs.close()


def test_a_reset_under_tls_is_not_read_as_eof(tls: ServerTls) -> None:
    """Over TLS loops.recv_into() reads with the GreenSSLSocket's own recv_into(), whose
    stdlib read raises on a reset: an error (SSLEOFError on CPython 3.11, which loses the
    errno), never the 0 of a clean end."""
    with eventlet.Timeout(TIMEOUT):
        ours, theirs = _tls_pair(tls)
        ours.sendall(b"x" * 1000)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
        ours.close()
        buffer = memoryview(bytearray(64 * 1024))
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)):
            while loops.recv_into(theirs, buffer):
                pass
        theirs.close()
