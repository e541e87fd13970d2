"""anyio_impl tested in anyio's idiom: anyio's own pytest plugin runs each test on every
backend (``anyio_backend``: asyncio, asyncio on uvloop, trio), real sockets on 127.0.0.1
port 0, ``anyio.fail_after`` around every wait."""

from __future__ import annotations

import importlib.util
import itertools
import socket
import time
from typing import Any

import pytest

anyio = pytest.importorskip("anyio", reason="needs the anyio extra")

from anyio.abc import SocketAttribute  # noqa: E402

from nbio.anyio_impl import client, loops, server, ticker  # noqa: E402
from nbio.common.accounting import SendAccount  # noqa: E402
from nbio.common.events import Event, Received  # noqa: E402
from nbio.common.loopdelay import LoopDelay  # noqa: E402
from nbio.common.options import SendOptions, ServeOptions  # noqa: E402
from nbio.common.payload import Payload  # noqa: E402
from nbio.common.sink import Sink  # noqa: E402

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
