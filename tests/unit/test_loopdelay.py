"""Loop-delay statistics, driven by a fake clock."""

from __future__ import annotations

import pytest

from common.loopdelay import LoopDelay


def _run(delay: LoopDelay, lateness_ms: list[float], start: float = 100.0) -> float:
    now = start + delay.start(start)
    for late in lateness_ms:
        now += late / 1000
        now += delay.tick(now)
    return now


def test_lateness_is_measured_from_when_each_tick_was_due() -> None:
    """A tick that fires 5 ms after it was due counts as 5 ms late."""
    delay = LoopDelay(0.010)
    _run(delay, [0, 5, 0, 20])
    stats = delay.stats()
    assert stats.ticks == 4
    assert stats.max_ms == pytest.approx(20)
    assert stats.p50_ms == pytest.approx(0)


def test_percentiles_are_nearest_rank() -> None:
    """p50 and p99 of 1..100 ms are 50 and 99 ms."""
    delay = LoopDelay()
    _run(delay, [float(i) for i in range(100, 0, -1)])
    stats = delay.stats()
    assert (stats.p50_ms, stats.p99_ms, stats.max_ms) == pytest.approx((50, 99, 100))


def test_a_span_sees_only_its_own_ticks_and_history_is_bounded() -> None:
    """stats(since=mark) covers one connection; forget_before() drops older samples."""
    delay = LoopDelay()
    now = _run(delay, [50, 50])
    mark = delay.mark()
    for late in (1.0, 2.0):
        now += late / 1000
        now += delay.tick(now)
    assert delay.stats(since=mark).max_ms == pytest.approx(2)
    delay.forget_before(mark)
    assert delay.ticks == 4
    assert delay.stats(since=mark).ticks == 2
    assert delay.stats().ticks == 2  # the first two are gone


def test_no_ticks_gives_zeros_and_tick_needs_start() -> None:
    """An empty span reports zeros; ticking before start is a programming error."""
    delay = LoopDelay()
    assert delay.stats().ticks == 0
    with pytest.raises(RuntimeError):
        delay.tick(0.0)
