"""trio_impl tested in trio's idiom: pytest-trio runs each test in its own ``trio.run``;
``trio.testing`` supplies memory streams for the sink and a ``MockClock`` whose virtual
time jumps forward whenever every task sleeps; real sockets bind 127.0.0.1 port 0."""

from __future__ import annotations

import itertools
import time

import pytest

pytest.importorskip("trio", reason="needs the trio extra")
pytest.importorskip("pytest_trio", reason="needs pytest-trio")

import trio
import trio.testing

from nbio.common.accounting import SendAccount
from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import SendOptions, ServeOptions
from nbio.common.payload import Payload
from nbio.common.sink import Sink
from nbio.trio_impl import client, loops, server, ticker

TIMEOUT = 30
#: In the interop env pytest-twisted's reactor holds the signal wake-up fd: trio then warns
#: that it shares it. Signals play no part in these tests.
pytestmark = pytest.mark.filterwarnings(
    "ignore:It looks like Trio's signal handling code:RuntimeWarning"
)


@pytest.mark.trio
async def test_tasks_of_one_run_deliver_every_byte() -> None:
    """The serve_tcp sink and three client tasks, in one run over real sockets: every
    byte, three connections, each reported once it ends."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
    accounts = [SendAccount("sha256") for _ in range(3)]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners, accepting = await server.start_listening(
                nursery, sink, ServeOptions(impl="test", port=0)
            )
            port = listeners[0].socket.getsockname()[1]
            options = SendOptions(payload, port=port, digest="sha256")
            async with trio.open_nursery() as senders:
                for account in accounts:
                    senders.start_soon(client.send_one, options, None, account, lambda n: None)
            while len(events) < 3:
                await trio.sleep(0.01)
            accepting.cancel()
    assert [a.sha256 for a in accounts] == [payload.sha256()] * 3
    received = [e for e in events if isinstance(e, Received)]
    assert [(r.bytes, r.sha256, r.outcome) for r in received] == [
        (payload.size, payload.sha256(), "eof")
    ] * 3


@pytest.mark.trio
async def test_the_sink_counts_a_memory_stream_to_its_eof() -> None:
    """handle_connection takes any trio stream: over a memory stream pair, whatever the
    write sizes, it counts and hashes every byte and reports EOF once the other side
    closes."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    sender, receiver = trio.testing.memory_stream_pair()
    payload = Payload(1024 * 1024 + 7, pattern="random")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, sink, None, receiver)
            for chunk in payload.chunks(1000):
                await sender.send_all(chunk)
            await sender.aclose()
    (received,) = [e for e in events if isinstance(e, Received)]
    assert (received.bytes, received.sha256, received.outcome) == (
        payload.size,
        payload.sha256(),
        "eof",
    )


@pytest.mark.trio
async def test_an_idle_connection_times_out_on_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a 30 s idle timeout, a peer that sends once and then nothing is closed by the
    sink after 30 s of the run's clock: virtual seconds (MockClock), no real wait."""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append, idle_timeout=30.0)
    sender, receiver = trio.testing.memory_stream_pair()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        stop = ticker.start_ticker(nursery, sink.delay, sink.expire)
        nursery.start_soon(server.handle_connection, sink, None, receiver)
        await sender.send_all(b"x" * 100)
        while not events:
            await trio.sleep(1)
        stop()
    (received,) = [e for e in events if isinstance(e, Received)]
    assert received.bytes == 100
    assert received.outcome == "timeout"
    assert 30.0 <= trio.current_time() - started < 32.0


@pytest.mark.trio
async def test_the_ticker_measures_against_trios_own_clock() -> None:
    """Each tick is expected at the run's clock plus 10 ms: the due times the ticker
    records are 10 ms apart, give or take a scheduler batch."""
    recorded: list[float] = []

    class Recording(LoopDelay):
        def expect(self, due: float) -> None:
            recorded.append(due)
            super().expect(due)

    async with trio.open_nursery() as nursery:
        stop = ticker.start_ticker(nursery, Recording())
        await trio.sleep(0.15)
        stop()
    gaps = [b - a for a, b in itertools.pairwise(recorded)]
    assert len(recorded) >= 5
    assert all(0.009 < gap < 0.05 for gap in gaps), gaps
    assert abs(loops.now() - time.monotonic()) < 0.01
