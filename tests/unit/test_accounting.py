"""Counting a stream: bytes, digest, timing, whatever the read sizes."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbio.common.accounting import ByteAccount, SendAccount
from nbio.edge.kernel import kernel_took


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


def test_send_account_counts_the_part_of_an_unfinished_chunk_the_kernel_took() -> None:
    """A sendall() that fails mid-chunk: what the kernel says it took beyond the whole
    chunks counts, never more than the chunk, and nothing when the kernel cannot say."""
    account = SendAccount()
    account.feed(b"x" * 100, 0.0)
    account.unfinished(50, kernel_took=130)
    assert account.handed_to_kernel == 130
    account.unfinished(50, kernel_took=1000)  # a FIN or more: never beyond the chunk
    assert account.handed_to_kernel == 150
    account.unfinished(50, kernel_took=None)
    assert account.handed_to_kernel == 150  # unchanged: the kernel could not say
    account.unfinished(0, kernel_took=400)  # no chunk was being sent
    assert account.handed_to_kernel == 100


@pytest.mark.timeout(10)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO and SIOCOUTQ are Linux")
def test_kernel_took_counts_queued_and_acknowledged_bytes() -> None:
    """Against a peer that does not read, the kernel's count is exactly what non-blocking
    send() calls handed it; once the peer reads everything, still exactly that."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname(), timeout=5)
        receiver, _ = listener.accept()
        with sender, receiver:
            assert kernel_took(sender) == 0
            sender.setblocking(False)
            sent = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    sent += sender.send(b"x" * 65536)
            assert sent > 0
            assert kernel_took(sender) == sent
            receiver.settimeout(5)
            got = 0
            while got < sent:
                got += len(receiver.recv(1 << 20))
            assert kernel_took(sender) == sent


def test_a_socket_timeout_inside_stalls_is_a_stall_timeout() -> None:
    """Clients whose sockets carry --stall-timeout as their timeout name what timed out:
    a TimeoutError inside ``stalls`` is a StallTimeout of those seconds; others pass."""
    from nbio.common.results import StallTimeout, stalls

    with pytest.raises(StallTimeout, match=r"no progress for 1\.5 s"), stalls(1.5):
        raise TimeoutError("timed out")
    with pytest.raises(ConnectionResetError), stalls(1.5):
        raise ConnectionResetError
