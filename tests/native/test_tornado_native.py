"""tornado_impl tested with Tornado's own tools: ``AsyncTestCase`` and ``gen_test`` (the
timeout raised from 5 s for big transfers) and ``bind_unused_port`` on 127.0.0.1.

Tornado's tools rather than plain pytest over asyncio: ``AsyncTestCase`` gives every test a
fresh IOLoop, and ``gen_test`` fails a test that outlives its timeout, which is what a
network test needs; they are unittest cases, so they share a process with pytest-twisted.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

pytest.importorskip("tornado", reason="needs the tornado extra")

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import SendOptions
from nbio.common.payload import Payload
from nbio.common.results import SendFailed
from nbio.common.sink import Sink
from nbio.tornado_impl import client, server

TIMEOUT = 30


class SinkRoundTrip(AsyncTestCase):
    """The Tornado client and sink, in one process, on one IOLoop."""

    @gen_test(timeout=TIMEOUT)
    async def test_three_streams_deliver_every_byte(self) -> None:
        """Awaited writes into read_into(partial=True): every byte, three connections."""
        events: list[Event] = []
        all_received = asyncio.get_running_loop().create_future()

        def emit(event: Event) -> None:
            events.append(event)
            if len(events) == 3:
                all_received.set_result(None)

        delay = LoopDelay()
        sink = Sink("sha256", delay, emit)
        listener, port = bind_unused_port()
        sink_server = server.SinkServer(sink)
        sink_server.add_sockets([listener])
        payload = Payload(3 * 1024 * 1024 + 1, pattern="random")
        options = SendOptions(payload, port=port, connections=3, digest="sha256")
        result = await client.send_all(options, lambda n: None)
        await all_received  # the sink reports each stream as it closes
        sink_server.stop()
        self.assertEqual((result.bytes, result.sha256), (3 * payload.size, payload.sha256()))
        received = [e for e in events if isinstance(e, Received)]
        self.assertEqual(
            [(r.bytes, r.sha256, r.outcome) for r in received],
            [(payload.size, payload.sha256(), "eof")] * 3,
        )

    @gen_test(timeout=TIMEOUT)
    async def test_refused_connection_fails_with_zero_bytes(self) -> None:
        """Nobody listening: send_all raises SendFailed('connection refused', 0)."""
        listener, port = bind_unused_port()
        listener.close()
        with self.assertRaises(SendFailed) as failed:
            await client.send_all(SendOptions(Payload(1024), port=port), lambda n: None)
        self.assertEqual(
            (failed.exception.message, failed.exception.bytes_sent), ("connection refused", 0)
        )


class Replier(TCPServer):
    """Reads until the peer's EOF, then tries to answer: what a half-closing protocol needs."""

    outcome: str = ""

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        buffer = bytearray(1024)
        try:
            while True:
                await stream.read_into(buffer, partial=True)
        except StreamClosedError:
            pass
        try:
            await stream.write(b"thanks")
            Replier.outcome = "replied"
        except StreamClosedError:
            Replier.outcome = "closed"


class NoHalfClose(AsyncTestCase):
    """Tornado's IOStream has no half-close: the peer's EOF closes the whole socket."""

    @gen_test(timeout=TIMEOUT)
    async def test_a_server_cannot_reply_after_the_peer_half_closes(self) -> None:
        """The client shuts down its write side and waits for a reply that never comes:
        on the 0-byte read IOStream closed the socket, so the write fails."""
        listener, port = bind_unused_port()
        replier = Replier()
        replier.add_sockets([listener])
        peer = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        peer.setblocking(False)
        stream = IOStream(peer)  # a Tornado stream only to wait on the socket without blocking
        await stream.write(b"foobar\n")
        peer.shutdown(socket.SHUT_WR)  # half-close: we will not send, but we can still read
        with self.assertRaises(StreamClosedError):
            await stream.read_bytes(1)  # the server closed without a reply
        self.assertEqual(Replier.outcome, "closed")
        replier.stop()
