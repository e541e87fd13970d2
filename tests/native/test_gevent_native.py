"""gevent_impl tested in gevent's idiom: server and clients as greenlets of one process on
one hub, gevent's own sockets on 127.0.0.1 port 0, ``gevent.Timeout`` around every wait."""

from __future__ import annotations

import itertools

import pytest

gevent = pytest.importorskip("gevent", reason="needs the gevent extra")

from gevent import socket as gsocket  # noqa: E402

from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import SendOptions, ServeOptions  # noqa: E402
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402
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
                [gevent.spawn(client.send_one, options, a, lambda n: None) for a in accounts],
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
    sender = gevent.spawn(client.send_one, options, account, lambda n: None)
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
