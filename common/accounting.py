"""Counting a byte stream: how many bytes, their sha256 if asked, and when they came.

"When" is two clocks: ``time.monotonic()`` (passed in by the caller, the same clock in every
process of one machine, so spans of a server and a client can be compared) and the process's
own usage (``getrusage``: CPU seconds, user + system of every thread, and voluntary context
switches, the times it went to sleep waiting), read once at the first byte and once at the
end, so both can be charged to the span that moved the bytes.
"""

from __future__ import annotations

import hashlib
import resource

__all__ = ["DIGESTS", "Buffer", "ByteAccount", "SendAccount", "process_usage"]

DIGESTS = ("none", "sha256")
Buffer = bytes | bytearray | memoryview


def process_usage() -> tuple[float, int]:
    """This process's CPU seconds (user + system, every thread) and voluntary context
    switches so far: one ``getrusage`` call."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


class ByteAccount:
    """One connection's bytes, counted (and hashed) as they pass, never kept."""

    __slots__ = (
        "_hash",
        "bytes",
        "cpu_at_end",
        "cpu_at_first_byte",
        "ended_at",
        "first_byte_at",
        "last_byte_at",
        "reads",
        "waits_at_end",
        "waits_at_first_byte",
    )

    def __init__(self, digest: str = "none") -> None:
        if digest not in DIGESTS:
            raise ValueError(f"unknown digest {digest!r} (use {', '.join(DIGESTS)})")
        self._hash = hashlib.sha256() if digest == "sha256" else None
        self.bytes = 0
        self.reads = 0  # how many times bytes were fed: reads for a sink, writes for a client
        self.first_byte_at: float | None = None
        self.last_byte_at: float | None = None
        self.ended_at: float | None = None
        self.cpu_at_first_byte: float | None = None  # process CPU seconds then
        self.cpu_at_end: float | None = None
        self.waits_at_first_byte: int | None = None  # voluntary context switches then
        self.waits_at_end: int | None = None

    def feed(self, data: Buffer, now: float) -> None:
        """Count ``data``, which passed at time ``now``."""
        count = len(data)
        if not count:
            return
        if self.first_byte_at is None:
            self.first_byte_at = now
            self.cpu_at_first_byte, self.waits_at_first_byte = process_usage()
        self.last_byte_at = now
        self.bytes += count
        self.reads += 1
        if self._hash is not None:
            self._hash.update(data)

    def end(self, now: float) -> None:
        """Note that the stream ended (EOF, reset, abort) at ``now``."""
        if self.ended_at is None:
            self.ended_at = now
            self.cpu_at_end, self.waits_at_end = process_usage()

    @property
    def sha256(self) -> str | None:
        """The hex sha256 of every byte fed so far, or None without a digest."""
        return None if self._hash is None else self._hash.hexdigest()

    @property
    def seconds(self) -> float:
        """From the first byte to the end of the stream (or the last byte, if not ended)."""
        if self.first_byte_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.last_byte_at
        assert end is not None
        return max(0.0, end - self.first_byte_at)


class SendAccount(ByteAccount):
    """A client connection's bytes: fed when handed to the framework.

    ``buffered`` is what the framework still held when the connection failed, and
    ``partial`` the part of an unfinished chunk the kernel had taken (a ``sendall`` that
    fails does not say), so the bytes that really went out to the kernel are
    :attr:`handed_to_kernel`.
    """

    __slots__ = ("buffered", "connect_at", "partial", "tls")

    def __init__(self, digest: str = "none") -> None:
        super().__init__(digest)
        self.buffered = 0
        self.partial = 0
        self.connect_at: float | None = None  # when the client began to connect
        self.tls: tuple[str | None, str | None] | None = None  # TLS version and cipher

    def secured(self, version: str | None, cipher: str | None) -> None:
        """The TLS handshake agreed on ``version`` and ``cipher``."""
        self.tls = (version, cipher)

    def connecting(self, now: float) -> None:
        """The client begins to connect, at ``now``: the start of this connection's latency
        (connect to the sink's close)."""
        self.connect_at = now

    @property
    def latency(self) -> float | None:
        """Seconds from the start of the connect to the sink's close, once both happened."""
        if self.connect_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.connect_at

    def unfinished(self, size: int, kernel_took: int | None) -> None:
        """The connection failed while a chunk of ``size`` bytes was being sent, and the
        kernel says it took ``kernel_took`` bytes in all (None: it cannot say, and only
        whole chunks count): count the part of that chunk it took."""
        if kernel_took is not None:
            self.partial = max(0, min(size, kernel_took - self.bytes))

    @property
    def handed_to_kernel(self) -> int:
        return max(0, self.bytes - self.buffered + self.partial)
