"""tornado_impl tested with Tornado's own tools: ``AsyncTestCase`` and ``gen_test`` (the
timeout raised from 5 s for big transfers) and ``bind_unused_port`` on 127.0.0.1.

Tornado's tools rather than plain pytest over asyncio: ``AsyncTestCase`` gives every test a
fresh IOLoop, and ``gen_test`` fails a test that outlives its timeout, which is what a
network test needs; they are unittest cases, so they share a process with pytest-twisted.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable
from typing import TypeVar

import pytest

pytest.importorskip("tornado", reason="needs the tornado extra")

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from nbio.common.events import TLS_FAILED, Event, Received, Rejected
from nbio.common.loopdelay import LoopDelay
from nbio.common.options import ClientTls, SendOptions
from nbio.common.payload import Payload
from nbio.common.results import SendFailed
from nbio.common.sink import Sink
from nbio.edge import tls
from nbio.edge.tls import client_context, throwaway
from nbio.tornado_impl import client, loops, server

TIMEOUT = 30
T = TypeVar("T")


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


class Recorder(TCPServer):
    """Reads every stream until it closes and records how: ``stream.error`` (None for a
    clean end), with ``refuse`` the ragged EOFs refused first (loops.refuse_ragged_eofs)."""

    def __init__(self, ssl_options: ssl.SSLContext, refuse: bool = False) -> None:
        super().__init__(ssl_options=ssl_options)
        self.refuse = refuse
        self.ended: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        assert isinstance(stream, SSLIOStream)
        if self.refuse:
            loops.refuse_ragged_eofs(stream.socket)
        buffer = bytearray(65536)
        try:
            while True:
                await stream.read_into(buffer, partial=True)
        except StreamClosedError:
            pass
        self.ended.put_nowait(stream.error)


class TlsEnds(AsyncTestCase):
    """How an SSLIOStream ends, which tornado_impl's TLS is built on: Tornado closes the
    socket on the peer's close_notify without answering, and reads a FIN without
    close_notify as a clean end, unless told otherwise."""

    def setUp(self) -> None:
        super().setUp()
        folder = tempfile.mkdtemp(prefix="nbio-test-tls-")
        self.addCleanup(shutil.rmtree, folder)
        self.server_tls = throwaway(folder)
        self.trusted = client_context(ClientTls(cafile=self.server_tls.cafile))
        self.servers: list[TCPServer] = []

    def tearDown(self) -> None:
        for tcp_server in self.servers:  # before the IOLoop closes their listeners
            tcp_server.stop()
        super().tearDown()

    def _serve(self, context: ssl.SSLContext, refuse: bool = False) -> tuple[Recorder, int]:
        listener, port = bind_unused_port()
        recorder = Recorder(context, refuse)
        recorder.add_sockets([listener])
        self.servers.append(recorder)
        return recorder, port

    async def _in_thread(self, peer: Callable[[], T]) -> T:
        """Run a blocking stdlib TLS peer beside the IOLoop."""
        return await asyncio.get_running_loop().run_in_executor(None, peer)

    def _send_then(self, port: int, end: Callable[[ssl.SSLSocket], object]) -> Callable[[], object]:
        def peer() -> object:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            with self.trusted.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"foobar\n" * 1000)
                return end(sock)

        return peer

    @gen_test(timeout=TIMEOUT)
    async def test_tornado_answers_no_close_notify_but_our_socket_does(self) -> None:
        """The peer's unwrap() (its close_notify, then waiting for ours) fails against a
        plain Tornado server, which just closes; with loops.server_context it completes."""

        def unwrap(sock: ssl.SSLSocket) -> object:
            try:
                sock.unwrap()
            except (ssl.SSLError, OSError) as exc:
                return exc
            return "answered"

        plain, plain_port = self._serve(tls.server_context(self.server_tls))
        outcome = await self._in_thread(self._send_then(plain_port, unwrap))
        self.assertIsInstance(outcome, OSError)  # EOF in violation of protocol
        self.assertIsNone(await plain.ended.get())  # the close_notify read as a clean end
        ours, port = self._serve(loops.server_context(self.server_tls))
        self.assertEqual(await self._in_thread(self._send_then(port, unwrap)), "answered")
        self.assertIsNone(await ours.ended.get())

    @gen_test(timeout=TIMEOUT)
    async def test_a_fin_without_close_notify_reads_as_a_clean_end_unless_refused(self) -> None:
        """A truncation attack looks like a clean close to SSLIOStream (SSLSocket suppresses
        ragged EOFs by default); with refuse_ragged_eofs it ends with SSLEOFError."""

        def fin(sock: ssl.SSLSocket) -> object:
            sock.shutdown(socket.SHUT_WR)  # the socket's own: a FIN, no close_notify
            return None

        context = loops.server_context(self.server_tls)
        lenient, port = self._serve(context)
        await self._in_thread(self._send_then(port, fin))
        self.assertIsNone(await lenient.ended.get())
        strict, port = self._serve(context, refuse=True)
        await self._in_thread(self._send_then(port, fin))
        self.assertIsInstance(await strict.ended.get(), ssl.SSLEOFError)

    @gen_test(timeout=TIMEOUT)
    async def test_a_peer_gone_before_the_wrap_is_rejected_not_raised(self) -> None:
        """A peer that sent bytes and reset before the server accepted it: CPython refuses
        to wrap its socket, TCPServer would let that escape into the loop, and our
        SinkServer reports it as a rejected connection instead."""
        events: list[Event] = []
        sink = Sink("none", LoopDelay(), events.append)
        listener, port = bind_unused_port()
        peer = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        peer.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's start
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # a reset, before anything accepted it
        sink_server = server.SinkServer(sink, loops.server_context(self.server_tls))
        sink_server.add_sockets([listener])  # accepts now, and wraps a socket already gone
        self.servers.append(sink_server)
        while not events:
            await asyncio.sleep(0.01)
        (rejected,) = events
        self.assertIsInstance(rejected, Rejected)
        assert isinstance(rejected, Rejected)
        self.assertEqual(rejected.reason, TLS_FAILED)
