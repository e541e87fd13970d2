"""trio_impl tested in trio's idiom: pytest-trio runs each test in its own ``trio.run``;
``trio.testing`` supplies memory streams for the sink (in lockstep for the echo's flow
control) and a ``MockClock`` whose virtual time jumps forward whenever every task sleeps;
real sockets bind 127.0.0.1 port 0. The TLS facts the implementation relies on are pinned
over memory streams: what a FIN without close_notify does, and that ``unwrap()`` waits."""

from __future__ import annotations

import itertools
import math
import ssl
import time
from typing import Any

import pytest

pytest.importorskip("trio", reason="needs the trio extra")
pytest.importorskip("pytest_trio", reason="needs pytest-trio")

import trio
import trio.testing

from nbio.common.accounting import SendAccount
from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import ClientTls, Echo, SendOptions, ServeOptions, ServerTls
from nbio.common.payload import Payload
from nbio.common.results import StallTimeout
from nbio.common.sink import Connection, Sink
from nbio.edge.tls import client_context, server_context
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


@pytest.mark.trio
async def test_echo_reads_no_more_until_its_answer_is_taken() -> None:
    """In echo mode each read is written back before the next read: over a lockstep
    stream (a send_all returns only once the other side received it all), a peer that does
    not read its answer finds the server no longer reading, and the sink counts nothing
    more until the answer is taken."""
    opened: list[Connection | None] = []

    class Recording(Sink):
        def open(self, *args: Any, **kwargs: Any) -> Connection | None:
            opened.append(connection := super().open(*args, **kwargs))
            return connection

    sink = Recording("none", LoopDelay(), lambda event: None, echo=True)
    peer, theirs = trio.testing.lockstep_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, sink, None, theirs)
            await peer.send_all(b"a" * 100)  # read by the server, which now writes it back
            nursery.start_soon(peer.send_all, b"b" * 100)
            await trio.testing.wait_all_tasks_blocked()
            (connection,) = opened
            assert connection is not None
            assert connection.account.bytes == 100  # the second message waits, unread
            assert await peer.receive_some(1000) == b"a" * 100
            assert await peer.receive_some(1000) == b"b" * 100
            await trio.testing.wait_all_tasks_blocked()
            assert connection.account.bytes == connection.bytes_out == 200
            await peer.aclose()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    """A throwaway CA and a certificate for localhost (trustme)."""
    pytest.importorskip("trustme", reason="needs the tls extra")
    from nbio.edge.tls import throwaway

    return throwaway(str(tmp_path_factory.mktemp("tls")))


def _client_context(tls: ServerTls) -> ssl.SSLContext:
    return client_context(ClientTls(cafile=tls.cafile))


async def _tls_pair(
    tls: ServerTls, https_compatible: bool = False
) -> tuple[trio.SSLStream[trio.abc.Stream], trio.SSLStream[trio.abc.Stream]]:
    """A client and a server SSLStream over a memory stream pair, handshake done."""
    near, far = trio.testing.memory_stream_pair()
    ours = trio.SSLStream(
        near, _client_context(tls), server_hostname="localhost", https_compatible=https_compatible
    )
    theirs = trio.SSLStream(
        far, server_context(tls), server_side=True, https_compatible=https_compatible
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.do_handshake)
        nursery.start_soon(theirs.do_handshake)
    return ours, theirs


@pytest.mark.trio
@pytest.mark.parametrize("https_compatible", [False, True], ids=["standard", "https"])
async def test_a_fin_without_close_notify_is_an_error_unless_https_compatible(
    tls: ServerTls, https_compatible: bool
) -> None:
    """The fact the TLS sink relies on to report ``truncated``: with https_compatible=False
    (trio's default, and ours) a transport EOF before close_notify fails receive_some()
    with BrokenResourceError caused by SSLEOFError; with True it reads as b"", the same as
    a clean close."""
    with trio.fail_after(TIMEOUT):
        ours, theirs = await _tls_pair(tls, https_compatible)
        await ours.send_all(b"cut short")
        await ours.transport_stream.aclose()  # a FIN, no close_notify
        assert await theirs.receive_some(100) == b"cut short"
        if https_compatible:
            assert await theirs.receive_some(100) == b""
        else:
            with pytest.raises(trio.BrokenResourceError) as raised:
                await theirs.receive_some(100)
            assert isinstance(raised.value.__cause__, ssl.SSLEOFError)


@pytest.mark.trio
async def test_unwrap_waits_for_the_peers_close_notify(tls: ServerTls) -> None:
    """The fact the TLS client's receipt relies on: unwrap() sends our close_notify and
    returns only once the peer's came, which the peer sends after reading ours (and every
    byte before it); and SSLStream has no send_eof() to half-close with instead."""
    assert not hasattr(trio.SSLStream, "send_eof")
    with trio.fail_after(TIMEOUT):
        ours, theirs = await _tls_pair(tls)
        unwrapped = trio.Event()

        async def unwrap() -> None:
            await ours.unwrap()
            unwrapped.set()

        async with trio.open_nursery() as nursery:
            await ours.send_all(b"x" * 100_000)
            nursery.start_soon(unwrap)
            await trio.testing.wait_all_tasks_blocked()
            assert not unwrapped.is_set()  # our close_notify went; theirs has not come
            got = 0
            while data := await theirs.receive_some(65536):  # b"" at our close_notify
                got += len(data)
            assert got == 100_000
            await trio.testing.wait_all_tasks_blocked()
            assert not unwrapped.is_set()
            await theirs.aclose()  # their close_notify, then the transport closes
        assert unwrapped.is_set()


@pytest.mark.trio
@pytest.mark.parametrize("ending", ["close_notify", "fin"])
async def test_the_tls_sink_tells_truncated_from_eof(tls: ServerTls, ending: str) -> None:
    """handle_connection with a server context over a memory stream: a client that ends
    with close_notify gets the sink's own in return and is reported ``eof``; one that ends
    with a bare FIN is ``truncated``. Both say what the handshake agreed."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    near, far = trio.testing.memory_stream_pair()
    ours = trio.SSLStream(near, _client_context(tls), server_hostname="localhost")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, sink, server_context(tls), far)
            await ours.send_all(b"t" * 70_000)
            if ending == "close_notify":
                await ours.unwrap()  # returns with the sink's close_notify: the receipt
            else:
                await ours.transport_stream.aclose()
    (received,) = [e for e in events if isinstance(e, Received)]
    assert received.bytes == 70_000
    assert received.outcome == ("eof" if ending == "close_notify" else "truncated")
    assert received.tls_version == "TLSv1.3" and received.tls_cipher


@pytest.mark.trio
async def test_the_stall_deadline_fails_between_one_and_17_16_timeouts_of_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client's stall timeout on the run's virtual clock: progress every 20 s keeps a
    30 s timeout from firing, however long it lasts; a wait with nothing awaited has no
    deadline; silence while waiting fails it after 30 s at least and 31.875 s at most (the
    deadline moves once per sixteenth of the timeout, and that much further)."""
    stall = client._Stall(30.0)
    with stall.scope:
        stall.arm(loops.now())
        for _ in range(10):
            await trio.sleep(20)
            stall.moved(loops.now())
        stall.off()
        await trio.sleep(1000)  # an open loop between requests: nothing awaited
        stall.arm(loops.now())
        started = trio.current_time()
        await trio.sleep(math.inf)
    waited = trio.current_time() - started
    # Give or take a float's rounding: the deadline is set from now()'s scale (the
    # monotonic clock's), less the offset of the run's clock.
    assert 30.0 - 1e-6 <= waited <= 30.0 * 17 / 16 + 1e-6, waited
    with pytest.raises(StallTimeout, match="no progress for 30 s"):
        stall.check()


@pytest.mark.trio
@pytest.mark.parametrize("rate", [None, 500.0], ids=["closed-loop", "open-loop"])
async def test_echo_over_tls_in_one_run(tls: ServerTls, rate: float | None) -> None:
    """The TLS echo server and the TLS echo client as tasks of one run over real sockets:
    every request answered and timed, each connection secured, ended ``eof`` after the
    client's close_notify, with every byte written back."""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append, echo=True)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners, accepting = await server.start_listening(
                nursery, sink, ServeOptions(impl="test", port=0, mode="echo", tls=tls)
            )
            port = listeners[0].socket.getsockname()[1]
            options = SendOptions(
                Payload(100 * 3000, pattern="random"),
                port=port,
                echo=Echo(message_size=3000, requests=100, rate=rate),
                tls=ClientTls(cafile=tls.cafile),
            )
            account = SendAccount()
            context = _client_context(tls)
            requests = await client.send_one(options, context, account, lambda n: None)
            while not events:
                await trio.sleep(0.01)
            accepting.cancel()
    assert requests is not None and requests.answered_count == 100
    assert requests.histogram.get_total_count() == 100
    assert account.tls is not None and account.tls[0] == "TLSv1.3"
    (received,) = [e for e in events if isinstance(e, Received)]
    assert (received.outcome, received.bytes, received.bytes_out) == ("eof", 300_000, 300_000)
    assert received.tls_version == "TLSv1.3"
