"""Payloads streamed in chunks, never built whole in memory.

The default is the talk's ``foobar\\n`` repeated; ``random`` is a seeded pseudo-random
block of 1 MiB repeated (fast enough not to be the bottleneck, and not compressible);
``zeros`` is zeros; a file payload is that file's bytes. Every pattern is continuous across
chunk boundaries, so the bytes on the wire do not depend on the chunk size.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PATTERNS",
    "RANDOM_PERIOD",
    "TALK_LINE",
    "TALK_SIZE",
    "Payload",
    "PayloadError",
]

#: The line the talk sends, and how much of it: ``'foobar\n' * 10 * 1024 * 1024``.
TALK_LINE = b"foobar\n"
TALK_SIZE = len(TALK_LINE) * 10 * 1024 * 1024  # 73,400,320 bytes
PATTERNS = ("foobar", "random", "zeros")
RANDOM_PERIOD = 1024 * 1024
#: What a client hands its framework per write, unless told otherwise.
DEFAULT_CHUNK_SIZE = 256 * 1024
# Patterns shorter than this keep one ready-made chunk per phase, so a steady send
# allocates nothing; longer ones (random) slice a fresh chunk each time.
_CACHED_PERIOD = 64


class PayloadError(ValueError):
    """A payload that cannot be produced; the message says why, in one line."""


#: What a path is, when it is not a regular file: it cannot be a payload.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class Payload:
    """``size`` bytes of ``pattern`` (or of the file at ``path``), produced chunk by chunk."""

    size: int
    pattern: str = "foobar"
    seed: int = 0
    path: str | None = None
    #: Stop this many seconds after the first chunk (``size`` still caps it): a send that
    #: lasts long enough to measure, whatever the machine's speed.
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise PayloadError(f"size must not be negative: {self.size}")
        if self.duration is not None and not self.duration > 0:
            raise PayloadError(f"duration must be more than 0 s: {self.duration}")
        if self.path is None and self.pattern not in PATTERNS:
            raise PayloadError(f"unknown pattern {self.pattern!r} (use {', '.join(PATTERNS)})")

    @classmethod
    def from_file(cls, path: str) -> Payload:
        """Return the payload of a whole regular file; raise :class:`PayloadError` if it is
        unreadable, not a regular file (checked before it is opened: opening a FIFO waits for
        a writer), or says it is empty while it is not (the files of /proc)."""
        try:
            info = os.stat(path)
            kind = next((name for test, name in _KINDS if test(info.st_mode)), None)
            if kind is not None or not stat.S_ISREG(info.st_mode):
                raise PayloadError(f"not a regular file: {path!r} is {kind or 'something else'}")
            with open(path, "rb") as file:
                if info.st_size == 0 and file.read(1):
                    raise PayloadError(
                        f"{path!r} says it is empty but is not (a file of /proc?): its size "
                        "cannot be known before it is read"
                    )
        except OSError as exc:
            raise PayloadError(f"cannot read {path!r}: {exc.strerror or exc}") from None
        return cls(size=info.st_size, pattern="file", path=path)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> Iterator[bytes]:
        """Yield the payload in chunks of ``chunk_size`` bytes (the last may be shorter);
        with a ``duration``, until that many seconds of ``clock`` after the first."""
        if chunk_size <= 0:
            raise PayloadError(f"chunk size must be positive: {chunk_size}")
        if self.path is not None:
            chunks = self._file_chunks(chunk_size)
        else:
            chunks = _cycle(self.period(), self.size, chunk_size)
        if self.duration is None:
            return chunks
        # The clock is read once per MiB, or per 256 chunks for small ones: next to a
        # write, a read of the clock costs nothing.
        every = max(1, min(256, (1 << 20) // chunk_size))
        return _until(chunks, self.duration, every, clock)

    def messages(
        self, message_size: int, clock: Callable[[], float] = time.monotonic
    ) -> Iterator[bytes]:
        """The payload as echo requests of ``message_size`` bytes (the last may be shorter);
        with a ``duration``, none is begun that many seconds of ``clock`` after the first.
        Unlike :meth:`chunks`, the clock is read before every message: a request waits a
        round trip, or its turn in an open loop's schedule, beside which a clock read is
        nothing, while 256 requests at 100 a second would overrun a 1 s duration by 1.5 s."""
        if self.duration is None:
            return self.chunks(message_size)
        unbounded = replace(self, duration=None)
        return _until(unbounded.chunks(message_size), self.duration, 1, clock)

    def period(self) -> bytes:
        """Return the block that the pattern repeats."""
        if self.pattern == "foobar":
            return TALK_LINE
        if self.pattern == "zeros":
            return b"\0"
        if self.pattern == "random":
            return random.Random(self.seed).randbytes(RANDOM_PERIOD)
        raise PayloadError(f"a {self.pattern!r} payload has no period")

    def sha256(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
        """Return the hex sha256 of the whole payload, computed chunk by chunk."""
        digest = hashlib.sha256()
        for chunk in self.chunks(chunk_size):
            digest.update(chunk)
        return digest.hexdigest()

    def _file_chunks(self, chunk_size: int) -> Iterator[bytes]:
        """The file's bytes; it must still have exactly the size it had when the payload was
        made, or the transfer fails naming it (a file that grew would be sent cut short)."""
        assert self.path is not None
        left = self.size
        try:
            with open(self.path, "rb") as file:
                while left:
                    chunk = file.read(min(chunk_size, left))
                    if not chunk:
                        raise PayloadError(f"{self.path!r} shrank while it was being sent")
                    left -= len(chunk)
                    yield chunk
                if file.read(1):
                    raise PayloadError(f"{self.path!r} grew while it was being sent")
        except OSError as exc:
            raise PayloadError(f"cannot read {self.path!r}: {exc.strerror or exc}") from None


def _until(
    chunks: Iterator[bytes], duration: float, every: int, clock: Callable[[], float]
) -> Iterator[bytes]:
    """``chunks`` until ``duration`` seconds after the first, the clock read before every
    ``every``-th chunk."""
    deadline: float | None = None
    for count, chunk in enumerate(chunks):
        if count % every == 0:
            now = clock()
            if deadline is None:
                deadline = now + duration
            elif now >= deadline:
                return
        yield chunk


def _cycle(period: bytes, size: int, chunk_size: int) -> Iterator[bytes]:
    """Yield ``size`` bytes of ``period`` repeated, ``chunk_size`` at a time."""
    length = len(period)
    # A tile long enough that any chunk, starting at any phase of the period, is one slice.
    tile = period * (-(-(chunk_size + length) // length))
    cache: dict[int, bytes] = {}
    offset = 0
    while offset < size:
        count = min(chunk_size, size - offset)
        phase = offset % length
        if count == chunk_size and length <= _CACHED_PERIOD:
            chunk = cache.get(phase)
            if chunk is None:
                chunk = cache[phase] = tile[phase : phase + count]
        else:
            chunk = tile[phase : phase + count]
        yield chunk
        offset += count
