"""Counting a stream: bytes, digest, timing, whatever the read sizes."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from nbio.common.accounting import ByteAccount, SendAccount


@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_digest_is_the_same_however_the_stream_is_split(data: bytes, cuts: list[int]) -> None:
    """Feeding a stream in any pieces gives its sha256 and length."""
    account = ByteAccount("sha256")
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for now, (start, end) in enumerate(itertools.pairwise(bounds)):
        account.feed(memoryview(data)[start:end], float(now))
    assert account.bytes == len(data)
    assert account.sha256 == hashlib.sha256(data).hexdigest()


def test_seconds_run_from_first_byte_to_end() -> None:
    """Throughput time starts at the first byte, not at accept, and ends at EOF."""
    account = ByteAccount()
    account.feed(b"", 1.0)  # an empty read is not a first byte
    account.feed(b"abc", 2.0)
    account.feed(b"def", 3.0)
    assert account.seconds == 1.0
    account.end(4.5)
    assert account.seconds == 2.5
    assert account.sha256 is None


def test_send_account_separates_what_the_framework_still_held() -> None:
    """Bytes handed to the kernel are those fed minus those still buffered."""
    account = SendAccount()
    account.feed(b"x" * 100, 0.0)
    account.buffered = 30
    assert account.handed_to_kernel == 70
