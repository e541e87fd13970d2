"""Payloads: streamed in chunks, continuous across chunk boundaries, never built whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbio.common.payload import RANDOM_PERIOD, TALK_LINE, TALK_SIZE, Payload, PayloadError


def _whole(payload: Payload, chunk_size: int) -> bytes:
    return b"".join(payload.chunks(chunk_size))


def test_default_payload_is_the_talks() -> None:
    """The default is 'foobar\\n' * 10 * 1024 * 1024, as the talk sends it."""
    payload = Payload(TALK_SIZE)
    assert payload.sha256() == hashlib.sha256(TALK_LINE * 10 * 1024 * 1024).hexdigest()


@settings(deadline=None, max_examples=60)
@given(
    pattern=st.sampled_from(["foobar", "zeros", "random"]),
    size=st.integers(min_value=0, max_value=3 * RANDOM_PERIOD),
    chunk_size=st.integers(min_value=1, max_value=RANDOM_PERIOD + 17),
)
def test_pattern_is_continuous_across_chunk_boundaries(
    pattern: str, size: int, chunk_size: int
) -> None:
    """Any chunk size yields the same bytes, in chunks of exactly that size but the last."""
    size = min(size, chunk_size * 5000)  # keep one-byte chunks from taking minutes
    payload = Payload(size, pattern=pattern, seed=5)
    chunks = list(payload.chunks(chunk_size))
    assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
    assert b"".join(chunks) == _whole(payload, 65536)
    assert sum(map(len, chunks)) == size


def test_random_pattern_depends_on_its_seed() -> None:
    """The same seed gives the same bytes; another seed other bytes."""
    one, other = Payload(1000, "random", seed=1), Payload(1000, "random", seed=2)
    assert _whole(one, 7) == _whole(one, 64)
    assert _whole(one, 64) != _whole(other, 64)


def test_file_payload_is_the_files_bytes(tmp_path: Path) -> None:
    """A file is sent whole, chunk by chunk."""
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 1000)
    payload = Payload.from_file(str(path))
    assert payload.size == 256_000
    assert _whole(payload, 999) == path.read_bytes()


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing file or a directory gives one line, not a traceback."""
    with pytest.raises(PayloadError, match="cannot read"):
        Payload.from_file(str(tmp_path / "missing"))
    with pytest.raises(PayloadError):
        Payload.from_file(str(tmp_path))


def test_chunks_are_produced_lazily() -> None:
    """A 1 TiB payload yields its first chunk at once: nothing is built whole."""
    first = next(Payload(1024**4).chunks(4096))
    assert first == (TALK_LINE * 600)[:4096]


def test_bad_payloads_are_refused() -> None:
    """A negative size, an unknown pattern or a non-positive chunk size are errors."""
    with pytest.raises(PayloadError):
        Payload(-1)
    with pytest.raises(PayloadError):
        Payload(1, pattern="lorem")
    with pytest.raises(PayloadError):
        next(Payload(1).chunks(0))


class _Clock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_duration_ends_a_stream_within_a_mib_of_its_deadline() -> None:
    """With ``duration`` the chunks stop once the clock passes it; the clock is read once
    per MiB (per 256 chunks for small ones), so the stream ends within that much."""
    payload = Payload(size=1 << 40, duration=10.0)
    sent = sum(len(chunk) for chunk in payload.chunks(64 * 1024, clock=_Clock(1.0)))
    # Read at chunks 0 (the start), 16, 32, ...: 1 s a read, the 11th read is past 10 s.
    assert sent == 10 * 16 * 64 * 1024


def test_a_duration_ends_echo_requests_at_the_first_message_past_it() -> None:
    """Echo requests read the clock before every message: at 1 s a request (a slow open
    loop), a 3 s duration sends 3 of them, not the 256 a stream's check would allow."""
    payload = Payload(size=1 << 30, duration=3.0)
    assert len(list(payload.messages(1024, clock=_Clock(1.0)))) == 3
    assert len(list(Payload(size=4096).messages(1024))) == 4  # no duration: all of it
