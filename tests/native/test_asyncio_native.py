"""asyncio_impl tested in asyncio's own idiom: ``unittest.IsolatedAsyncioTestCase``, a fresh
loop per test, real sockets on 127.0.0.1 port 0, ``asyncio.wait_for`` for every wait.

(The stdlib's own case rather than pytest-asyncio: it needs no plugin, so it lives beside
pytest-twisted in the interop env without either taking over the other's tests.)
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import unittest
from typing import Any, cast

from nbio.asyncio_impl import client, loops, protocol_client, protocol_server, server, ticker
from nbio.common.accounting import SendAccount
from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import SendOptions, ServeOptions
from nbio.common.payload import Payload
from nbio.common.sink import Sink

TIMEOUT = 30


class SinkRoundTrip(unittest.IsolatedAsyncioTestCase):
    """Both servers and both clients, in one process, on one loop."""

    async def _round_trip(self, start: Any, send_all: Any) -> list[Event]:
        events: list[Event] = []
        delay = LoopDelay()
        sink = Sink("sha256", delay, events.append)
        listener = await start(sink, ServeOptions(impl="test", port=0))
        port = listener.sockets[0].getsockname()[1]
        payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
        options = SendOptions(payload, port=port, connections=3, digest="sha256")
        result = await asyncio.wait_for(send_all(options, lambda n: None), TIMEOUT)
        idle = asyncio.get_running_loop().create_future()
        sink.when_idle(lambda: idle.set_result(None))
        await asyncio.wait_for(idle, TIMEOUT)
        listener.close()
        await listener.wait_closed()
        self.assertEqual(result.bytes, 3 * payload.size)
        self.assertEqual(result.sha256, payload.sha256())
        received = [e for e in events if isinstance(e, Received)]
        self.assertEqual(
            [(r.bytes, r.sha256, r.outcome) for r in received],
            [(payload.size, payload.sha256(), "eof")] * 3,
        )
        return events

    async def test_streams_client_to_streams_server(self) -> None:
        """write()+drain() into start_server's read(n) loop: every byte, three connections."""
        await self._round_trip(server.start_listening, client.send_all)

    async def test_protocol_client_to_buffered_protocol_server(self) -> None:
        """pause_writing/resume_writing into a BufferedProtocol sharing one buffer."""
        await self._round_trip(protocol_server.start_listening, protocol_client.send_all)


class Backpressure(unittest.IsolatedAsyncioTestCase):
    """A sink that stops reading: the clients must wait, not buffer the payload."""

    async def asyncSetUp(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]

    async def asyncTearDown(self) -> None:
        self.listener.close()

    async def _clogged_then_drained(self, send_one: Any) -> None:
        loop = asyncio.get_running_loop()
        payload = Payload(64 * 1024 * 1024)
        account = SendAccount()
        task = asyncio.ensure_future(
            send_one(SendOptions(payload, port=self.port), account, lambda n: None)
        )
        peer, _ = await asyncio.wait_for(loop.sock_accept(self.listener), TIMEOUT)
        # Nobody reads: once the kernel's buffers are full, the client stops being given
        # chunks. Wait until the count stops moving (a deadline, not a fixed sleep).
        last = -1
        while account.bytes != last:
            last = account.bytes
            await asyncio.sleep(0.05)
        self.assertFalse(task.done())
        self.assertLess(account.bytes, 16 * 1024 * 1024)  # kernel buffers + one high-water mark
        # Now read everything: the client resumes by itself and finishes exactly.
        received = 0
        with peer:
            peer.setblocking(False)
            while chunk := await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), TIMEOUT):
                received += len(chunk)
        await asyncio.wait_for(task, TIMEOUT)
        self.assertEqual(received, payload.size)

    async def test_streams_client_waits_in_drain(self) -> None:
        """drain() holds the streams client while the peer does not read."""
        await self._clogged_then_drained(client.send_one)

    async def test_protocol_client_waits_for_resume_writing(self) -> None:
        """pause_writing() stops the protocol client until resume_writing()."""
        await self._clogged_then_drained(protocol_client.send_one)


class ProtocolWithoutSockets(unittest.TestCase):
    """The BufferedProtocol sink driven by hand, the way the loop drives it."""

    def test_sink_protocol_counts_what_is_read_into_its_buffer(self) -> None:
        """get_buffer/buffer_updated/eof_received/connection_lost report one connection."""
        events: list[Event] = []
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)

        class Transport:
            def get_extra_info(self, name: str) -> Any:
                return ("127.0.0.1", 4242) if name == "peername" else None  # TCP: no ssl_object

            def abort(self) -> None:
                raise AssertionError("not aborted")

        async def drive() -> None:
            delay = LoopDelay()
            sink = Sink("none", delay, events.append)
            protocol = protocol_server.SinkProtocol(sink, memoryview(bytearray(16)))
            protocol.connection_made(cast(asyncio.Transport, Transport()))
            for piece in (b"foobar\n", b"foo"):
                buffer = protocol.get_buffer(-1)
                buffer[: len(piece)] = piece
                protocol.buffer_updated(len(piece))
            self.assertFalse(protocol.eof_received())  # let the transport close
            protocol.connection_lost(None)

        loop.run_until_complete(drive())
        (received,) = events
        assert isinstance(received, Received)
        self.assertEqual(
            (received.peer, received.bytes, received.outcome), ("127.0.0.1:4242", 10, "eof")
        )


class TickerDueTimes(unittest.TestCase):
    """The ticker measures lateness against the time the loop itself scheduled."""

    def _due_times(self, loop_name: str) -> list[float]:
        recorded: list[float] = []

        class Recording(LoopDelay):
            def expect(self, due: float) -> None:
                recorded.append(due)
                super().expect(due)

        async def tick_a_while() -> None:
            stop = ticker.start_ticker(asyncio.get_running_loop(), Recording())
            await asyncio.sleep(0.1)
            stop()

        loops.run(tick_a_while(), loop_name)
        return recorded

    def test_uvloop_ticks_are_due_on_its_whole_millisecond_clock(self) -> None:
        """uvloop schedules on a clock of whole milliseconds: the due times the ticker
        measures against are those, not now + 10 ms, so no tick looks early by rounding."""
        if importlib.util.find_spec("uvloop") is None:
            self.skipTest("needs the uvloop extra")
        due = self._due_times("uvloop")
        self.assertGreaterEqual(len(due), 5)
        self.assertTrue(all(abs(d * 1000 - round(d * 1000)) < 1e-6 for d in due), due)

    def test_the_default_loop_schedules_on_the_monotonic_clock(self) -> None:
        """asyncio's own loop keeps time.monotonic(): its due times are not whole ms."""
        due = self._due_times("default")
        self.assertGreaterEqual(len(due), 5)
        self.assertFalse(all(abs(d * 1000 - round(d * 1000)) < 1e-6 for d in due), due)


if __name__ == "__main__":
    unittest.main()
