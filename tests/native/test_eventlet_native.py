"""eventlet_impl tested in Eventlet's idiom: server and clients as green threads of one
process on one hub, Eventlet's own green sockets on 127.0.0.1 port 0, ``eventlet.Timeout``
around every wait, no monkey-patching."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys

import pytest

pytest.importorskip("eventlet", reason="needs the eventlet extra")

import eventlet
from eventlet.green import socket as gsocket

from harness import run_nbio
from nbio.common.accounting import SendAccount
from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import SendOptions, ServeOptions
from nbio.common.payload import Payload
from nbio.common.sink import Sink
from nbio.edge.kernel import RESET_LINGER
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
                eventlet.spawn(client.send_one, options, a, lambda n: None) for a in accounts
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
    sender = eventlet.spawn(client.send_one, options, account, lambda n: None)
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
