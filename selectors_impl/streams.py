"""A connection's bytes on our loop, over TCP or over TLS, behind the same few awaitables:
``recv_into`` (0 at the peer's EOF), ``send`` (what the kernel took), ``send_eof``, so the
server and the client read the same either way.

TLS is the standard library's ``ssl.SSLObject`` between two ``ssl.MemoryBIO``s
(``SSLContext.wrap_bio``), driven by this loop as the talk's last step drives a socket:
OpenSSL never touches the socket. An operation that needs the peer's bytes raises
``SSLWantReadError``: we send what it wrote (the outgoing BIO) with non-blocking sends,
wait until the socket is readable, feed what came to the incoming BIO, and try again. The
socket's EOF is the incoming BIO's ``write_eof()``; our close_notify is ``unwrap()``.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from ..common.results import StallTimeout
from .mainloop import Event, TooSlow, fail_after, wait_readable, wait_writable

__all__ = ["Tcp", "Tls"]

T = TypeVar("T")
Wait = Callable[[socket.socket], Awaitable[None]]


class Tcp:
    """A connected non-blocking TCP socket on our loop. A wait lasts at most ``patience``
    seconds (a client's --stall-timeout), then raises StallTimeout; None: as long as it
    takes."""

    def __init__(self, sock: socket.socket, patience: float | None = None) -> None:
        self.sock = sock
        self.patience = patience

    async def handshake(self) -> None:
        """Nothing to agree on over TCP."""

    async def recv_into(self, buffer: memoryview) -> int:
        """Read what came into ``buffer``, waiting until something has; 0 at the EOF."""
        while True:
            try:
                return self.sock.recv_into(buffer)
            except BlockingIOError:  # EAGAIN: nothing to read yet
                await self._wait(wait_readable)

    async def send(self, data: memoryview) -> int:
        """Send what the kernel takes of ``data``, waiting until it takes some; return how
        much it took."""
        while True:
            try:
                return self.sock.send(data)  # may send part of it
            except BlockingIOError:  # EAGAIN: the kernel's buffer is full
                await self._wait(wait_writable)

    async def send_all(self, data: memoryview) -> None:
        """Send all of ``data``."""
        while data:
            data = data[await self.send(data) :]

    async def send_eof(self) -> None:
        """Half-close: the kernel sends FIN after our bytes."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    async def _wait(self, wait: Wait) -> None:
        if self.patience is None:
            await wait(self.sock)
            return
        try:
            with fail_after(self.patience):
                await wait(self.sock)
        except TooSlow:
            raise StallTimeout(self.patience) from None


class Tls(Tcp):
    """TLS over a connected non-blocking TCP socket: an ``SSLObject`` between two
    ``MemoryBIO``s, its records sent and received through :class:`Tcp`'s calls.

    One task may read while another writes (an echo client's reader and writer), and
    either may need the other direction (a read that must answer, a write that must wait
    for the peer): whoever finds another task already sending or receiving waits for it
    to finish, so that records never cross and only one task waits on each direction."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        patience: float | None = None,
    ) -> None:
        super().__init__(sock, patience)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side, server_hostname)
        self._unsent = memoryview(b"")  # taken from the outgoing BIO, not yet by the kernel
        self._sending: Event | None = None  # set when the task sending now is done
        self._receiving: Event | None = None

    async def handshake(self) -> None:
        """Agree on a version, a cipher and keys (the client checks the certificate)."""
        await self._complete(self.ssl.do_handshake)

    async def recv_into(self, buffer: memoryview) -> int:
        """Decrypt what came into ``buffer``; 0 at the peer's close_notify. A FIN without
        it raises ``SSLEOFError``: whatever came may have been cut short."""
        try:
            return await self._complete(lambda: self._read_into(buffer))
        except ssl.SSLZeroReturnError:  # theirs after ours (CPython returns 0 only before)
            return 0

    def _read_into(self, buffer: memoryview) -> int:
        # Given a buffer, read() returns a count (typeshed says bytes, as without one).
        return cast(int, self.ssl.read(len(buffer), buffer))

    async def send(self, data: memoryview) -> int:
        """Encrypt all of ``data`` into the outgoing BIO (which grows), and wait until the
        kernel took its records."""
        return await self._complete(lambda: self.ssl.write(data))

    async def send_eof(self) -> None:
        """close_notify, TLS's EOF: ``unwrap()`` writes ours, and completes at once if
        theirs came first (a server answering a client); otherwise it wants to read
        theirs, which :meth:`recv_into` reads as its 0."""
        with contextlib.suppress(ssl.SSLWantReadError):  # ours is written, theirs to come
            self.ssl.unwrap()
        await self._flush()

    async def _complete(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` until it completes: send what it wrote; while it wants the
        peer's bytes, wait for them and feed them to it."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                await self._flush()  # what it wrote first (our part of the handshake)
                await self._fill()
            except ssl.SSLWantWriteError:  # not over a MemoryBIO, which grows: all the same
                await self._flush()
            except ssl.SSLError:
                self._flush_now()  # the alert that says why, if the kernel takes it now
                raise
            else:
                await self._flush()
                return result

    async def _fill(self) -> None:
        """Feed the incoming BIO what the socket has (its EOF as the BIO's), waiting until
        it has something."""
        if self._receiving is not None:  # another task waits for the socket: so do we
            await self._receiving.wait()
            return
        self._receiving = Event()
        try:
            received = _received()
            count = await super().recv_into(received)
            if count:
                self._incoming.write(received[:count])
            else:
                self._incoming.write_eof()
        finally:
            self._receiving.set()
            self._receiving = None

    async def _flush(self) -> None:
        """Send what the SSLObject wrote, in order, waiting until the kernel took it all."""
        while self._unsent or self._outgoing.pending:
            if self._sending is not None:  # another task is sending: ours go after
                await self._sending.wait()
                continue
            self._sending = Event()
            try:
                while self._unsent or self._outgoing.pending:
                    if not self._unsent:
                        self._unsent = memoryview(self._outgoing.read())
                    self._unsent = self._unsent[await super().send(self._unsent) :]
            finally:
                self._sending.set()
                self._sending = None

    def _flush_now(self) -> None:
        """Send what the SSLObject wrote if the kernel takes it now, or give up."""
        if self._sending is None and not self._unsent:
            with contextlib.suppress(OSError):
                self.sock.send(self._outgoing.read())


@functools.cache
def _received() -> memoryview:
    """What a socket had, on its way into an incoming BIO: one buffer for every TLS
    connection (made with the first), as each read is copied into its BIO with no wait in
    between."""
    return memoryview(bytearray(256 * 1024))
