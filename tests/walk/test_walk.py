"""The talk's five steps, each showing what it teaches, against the neutral counting sink
(which never prints: the talk's 45-second run came from printing)."""

from __future__ import annotations

from harness import NeutralSink
from nbio.walk import (
    BIG,
    SMALL,
    step1_blocking,
    step2_nonblocking,
    step3_eagain,
    step4_select,
    step5_scheduler,
)


def test_step1_blocking_send_takes_everything() -> None:
    """A blocking send() returns only once the kernel took every byte."""
    with NeutralSink() as sink:
        sent, _ = step1_blocking.run("127.0.0.1", sink.port)
        (arrival,) = sink.wait()
    assert sent == arrival.bytes == len(BIG)


def test_step2_nonblocking_send_returns_short() -> None:
    """One non-blocking send() of a large buffer takes fewer bytes than asked."""
    with NeutralSink() as sink:
        sent = step2_nonblocking.run("127.0.0.1", sink.port)
        (arrival,) = sink.wait()
    assert 0 < sent < len(BIG)
    assert arrival.bytes == sent


def test_step3_delivers_everything_but_spins_on_eagain_and_step4_waits_instead() -> None:
    """Retrying on EAGAIN delivers every byte after many failed calls; waiting in select()
    delivers the same bytes with far fewer wake-ups than step 3 had retries."""
    with NeutralSink() as sink:
        sent3, retries = step3_eagain.run("127.0.0.1", sink.port, BIG)
        sent4, wakeups = step4_select.run("127.0.0.1", sink.port, BIG)
        arrivals = sink.wait(2)
    assert sent3 == sent4 == len(BIG)
    assert sorted(a.bytes for a in arrivals) == [len(BIG)] * 2
    assert retries >= 10
    assert wakeups * 5 <= retries, (wakeups, retries)


def test_step5_other_task_ticks_while_the_payload_goes_out() -> None:
    """The generator scheduler runs other_task beside the send, and every byte arrives."""
    data = SMALL * 30
    with NeutralSink() as sink:
        sent, ticks, (start, end) = step5_scheduler.run("127.0.0.1", sink.port, data, 1000)
        (arrival,) = sink.wait()
    assert sent == arrival.bytes == len(data)
    during = [tick for tick in ticks if start < tick < end]
    assert len(during) >= max(3, (end - start) / 0.01 / 3), (len(during), end - start)
