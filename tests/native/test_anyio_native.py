"""anyio_impl tested in anyio's idiom: anyio's own pytest plugin runs each test on every
backend (``anyio_backend``: asyncio, asyncio on uvloop, trio), real sockets on 127.0.0.1
port 0, ``anyio.fail_after`` around every wait. The TLS facts the implementation relies on
are pinned on every backend: what a FIN without close_notify does to ``TLSStream``, and
that ``unwrap()`` waits for the peer's close_notify."""

from __future__ import annotations

import importlib.util
import itertools
import socket
import ssl
import time
from typing import Any

import pytest

anyio = pytest.importorskip("anyio", reason="needs the anyio extra")

from anyio.abc import SocketAttribute, SocketListener, SocketStream  # noqa: E402
from anyio.streams.tls import TLSStream  # noqa: E402

from nbio.anyio_impl import client, loops, server, ticker  # noqa: E402
from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import (  # noqa: E402
    ClientTls,
    Echo,
    SendOptions,
    ServeOptions,
    ServerTls,
)
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402
from nbio.edge.tls import client_context, server_context  # noqa: E402

TIMEOUT = 30
pytestmark = [
    pytest.mark.anyio,
    # In the interop env pytest-twisted's reactor holds the signal wake-up fd: trio then
    # warns that it shares it. Signals play no part in these tests.
    pytest.mark.filterwarnings("ignore:It looks like Trio's signal handling code:RuntimeWarning"),
]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(
            ("asyncio", {"use_uvloop": True}),
            id="uvloop",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("uvloop") is None, reason="needs uvloop"
            ),
        ),
        pytest.param(
            ("trio", {}),
            id="trio",
            marks=pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="needs trio"),
        ),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every backend nbio offers as a --loop (loops.BACKENDS)."""
    assert request.param in list(loops.BACKENDS.values())
    return request.param


async def test_tasks_of_one_task_group_deliver_every_byte() -> None:
    """The sink and three client tasks, in one run: every byte, three connections, each
    reported once it ends."""
    events: list[Event] = []
    sink = Sink("sha256", LoopDelay(), events.append)
    payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
    accounts = [SendAccount("sha256") for _ in range(3)]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            listeners, stop_accepting = await server.start_listening(
                group, sink, ServeOptions(impl="test", port=0)
            )
            port = listeners[0].extra(SocketAttribute.local_port)
            options = SendOptions(payload, port=port, digest="sha256")
            async with anyio.create_task_group() as senders:
                for account in accounts:
                    senders.start_soon(client.send_one, options, None, account, lambda n: None)
            while len(events) < 3:
                await anyio.sleep(0.01)
            await stop_accepting()
    assert [a.sha256 for a in accounts] == [payload.sha256()] * 3
    received = [e for e in events if isinstance(e, Received)]
    assert [(r.bytes, r.sha256, r.outcome) for r in received] == [
        (payload.size, payload.sha256(), "eof")
    ] * 3


async def test_a_reset_reads_as_a_reset() -> None:
    """A peer that resets: receive() raises BrokenResourceError whose cause is the reset,
    and the sink reports "reset", not EOF."""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            listeners, stop_accepting = await server.start_listening(
                group, sink, ServeOptions(impl="test", port=0)
            )
            port = listeners[0].extra(SocketAttribute.local_port)
            peer = socket.create_connection(("127.0.0.1", port))
            peer.sendall(b"x" * 1000)
            while sink.live == 0:
                await anyio.sleep(0.01)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            peer.close()
            while not events:
                await anyio.sleep(0.01)
            await stop_accepting()
    (received,) = [e for e in events if isinstance(e, Received)]
    assert received.outcome == "reset"


async def test_the_ticker_measures_against_the_backends_own_clock() -> None:
    """Each tick is expected at the backend's clock plus 10 ms, on the monotonic scale:
    the due times the ticker records are 10 ms apart, give or take a loop turn."""
    recorded: list[float] = []

    class Recording(LoopDelay):
        def expect(self, due: float) -> None:
            recorded.append(due)
            super().expect(due)

    async with anyio.create_task_group() as group:
        stop = ticker.start_ticker(group, Recording())
        await anyio.sleep(0.15)
        stop()
    gaps = [b - a for a, b in itertools.pairwise(recorded)]
    assert len(recorded) >= 5
    assert all(0.009 < gap < 0.05 for gap in gaps), gaps
    assert abs(anyio.current_time() + loops.clock_offset() - time.monotonic()) < 0.01


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    """A throwaway CA and a certificate for localhost (trustme)."""
    pytest.importorskip("trustme", reason="needs the tls extra")
    from nbio.edge.tls import throwaway

    return throwaway(str(tmp_path_factory.mktemp("tls")))


async def _tls_pair(
    tls: ServerTls, standard_compatible: bool = True
) -> tuple[TLSStream, TLSStream]:
    """A client and a server TLSStream over a real loopback connection, handshake done."""
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    (listener,) = multi.listeners
    assert isinstance(listener, SocketListener)
    async with listener:
        port = listener.extra(SocketAttribute.local_port)
        accepted: list[SocketStream] = []
        async with anyio.create_task_group() as group:

            async def accept() -> None:
                accepted.append(await listener.accept())

            group.start_soon(accept)
            near = await anyio.connect_tcp("127.0.0.1", port)
        wrapped: list[TLSStream] = []
        async with anyio.create_task_group() as group:

            async def wrap_theirs() -> None:
                theirs = await TLSStream.wrap(
                    accepted[0],
                    server_side=True,
                    ssl_context=server_context(tls),
                    standard_compatible=standard_compatible,
                )
                wrapped.append(theirs)

            group.start_soon(wrap_theirs)
            ours = await TLSStream.wrap(
                near,
                hostname="localhost",
                ssl_context=client_context(ClientTls(cafile=tls.cafile)),
                standard_compatible=standard_compatible,
            )
    return ours, wrapped[0]


@pytest.mark.parametrize("standard_compatible", [True, False], ids=["standard", "lenient"])
async def test_a_fin_without_close_notify_is_an_error_when_standard_compatible(
    tls: ServerTls, standard_compatible: bool
) -> None:
    """The fact the TLS sink relies on to report ``truncated``: with standard_compatible
    (anyio's default, and ours) a transport EOF before close_notify fails receive() with
    BrokenResourceError caused by SSLEOFError; without, it raises EndOfStream, the same as
    a clean close."""
    with anyio.fail_after(TIMEOUT):
        ours, theirs = await _tls_pair(tls, standard_compatible)
        await ours.send(b"cut short")
        # A FIN, no close_notify. (Not aclose(): the server's session tickets wait unread
        # in our socket, so closing it would send a reset.)
        await ours.transport_stream.send_eof()
        assert await theirs.receive() == b"cut short"
        if standard_compatible:
            with pytest.raises(anyio.BrokenResourceError) as raised:
                await theirs.receive()
            assert isinstance(raised.value.__cause__, ssl.SSLEOFError)
        else:
            with pytest.raises(anyio.EndOfStream):
                await theirs.receive()
        await anyio.aclose_forcefully(theirs)
        await anyio.aclose_forcefully(ours)


async def test_unwrap_waits_for_the_peers_close_notify(tls: ServerTls) -> None:
    """The fact the TLS client's receipt relies on: unwrap() sends our close_notify and
    returns only once the peer's came, which the peer sends after reading ours (and every
    byte before it); send_eof() is no half-close for TLS (NotImplementedError)."""
    with anyio.fail_after(TIMEOUT):
        ours, theirs = await _tls_pair(tls)
        with pytest.raises(NotImplementedError):
            await ours.send_eof()
        unwrapped = anyio.Event()

        async def unwrap() -> None:
            transport, _ = await ours.unwrap()
            unwrapped.set()
            await transport.aclose()

        async with anyio.create_task_group() as group:
            await ours.send(b"x" * 100_000)
            group.start_soon(unwrap)
            got = 0
            try:
                while True:
                    got += len(await theirs.receive())
            except anyio.EndOfStream:  # our close_notify
                pass
            assert got == 100_000
            await anyio.sleep(0.2)  # time for a reply that must not come
            assert not unwrapped.is_set()
            await theirs.aclose()  # their close_notify (unwrap()), then the close
        assert unwrapped.is_set()


@pytest.mark.parametrize("rate", [None, 500.0], ids=["closed-loop", "open-loop"])
async def test_echo_over_tls_in_one_task_group(tls: ServerTls, rate: float | None) -> None:
    """The TLS echo server and the TLS echo client as tasks of one run: every request
    answered and timed, each connection secured, ended ``eof`` after the client's
    close_notify, with every byte written back."""
    events: list[Event] = []
    sink = Sink("none", LoopDelay(), events.append, echo=True)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            listeners, stop_accepting = await server.start_listening(
                group, sink, ServeOptions(impl="test", port=0, mode="echo", tls=tls)
            )
            port = listeners[0].extra(SocketAttribute.local_port)
            options = SendOptions(
                Payload(100 * 3000, pattern="random"),
                port=port,
                echo=Echo(message_size=3000, requests=100, rate=rate),
                tls=ClientTls(cafile=tls.cafile),
            )
            account = SendAccount()
            context = client_context(ClientTls(cafile=tls.cafile))
            requests = await client.send_one(options, context, account, lambda n: None)
            while not events:
                await anyio.sleep(0.01)
            await stop_accepting()
    assert requests is not None and requests.answered_count == 100
    assert requests.histogram.get_total_count() == 100
    assert account.tls is not None and account.tls[0] == "TLSv1.3"
    (received,) = [e for e in events if isinstance(e, Received)]
    assert (received.outcome, received.bytes, received.bytes_out) == ("eof", 300_000, 300_000)
    assert received.tls_version == "TLSv1.3"
