"""Loop-delay statistics, driven by a fake clock."""

from __future__ import annotations

import pytest

from nbio.common.loopdelay import MIN_TICKS_FOR_P99, LoopDelay


def _run(delay: LoopDelay, lateness_ms: list[float], start: float = 100.0) -> float:
    """Fire one tick per lateness, each due one interval after the last fired."""
    now = start
    for late in lateness_ms:
        due = now + delay.interval
        delay.expect(due)
        now = due + late / 1000
        delay.tick(now)
    return now


def test_lateness_is_measured_from_when_the_loop_scheduled_each_tick() -> None:
    """A tick that fires 5 ms after the time its loop scheduled counts as 5 ms late."""
    delay = LoopDelay(0.010)
    _run(delay, [0, 5, 0, 20])
    stats = delay.stats()
    assert stats.ticks == 4
    assert stats.max_ms == pytest.approx(20)
    assert stats.p50_ms == pytest.approx(0)
    assert stats.p99_ms is None  # four ticks: a p99 would only repeat the max


def test_early_fires_are_counted_not_clamped() -> None:
    """A loop on a coarse clock (uvloop's whole milliseconds) may fire before the due time
    it was given: that tick counts as early and negative, not as 0."""
    delay = LoopDelay()
    _run(delay, [-0.4, -0.2, 1.0])
    stats = delay.stats()
    assert stats.early == 2
    assert stats.p50_ms == pytest.approx(-0.2)
    assert stats.max_ms == pytest.approx(1.0)


def test_percentiles_are_nearest_rank_from_100_ticks_on() -> None:
    """p50 and p99 of 1..100 ms are 50 and 99 ms; with 99 ticks there is no p99."""
    delay = LoopDelay()
    _run(delay, [float(i) for i in range(100, 0, -1)])
    stats = delay.stats()
    assert MIN_TICKS_FOR_P99 == 100
    assert (stats.p50_ms, stats.p99_ms, stats.max_ms) == pytest.approx((50, 99, 100))
    fewer = LoopDelay()
    _run(fewer, [float(i) for i in range(99)])
    assert fewer.stats().p99_ms is None


def test_a_stall_that_ends_before_its_tick_fires_is_sampled() -> None:
    """The tick due at 100.01 has not fired when the connection closes at 100.31: the
    close samples it (300 ms late), and when it fires at 100.32 that tick's real lateness
    replaces the provisional one: one tick, one sample."""
    delay = LoopDelay()
    delay.expect(100.01)
    mark = delay.mark()
    delay.sample(100.31)
    assert delay.stats(since=mark).ticks == 1
    assert delay.stats(since=mark).max_ms == pytest.approx(300)
    delay.tick(100.32)
    assert delay.stats().ticks == 1
    assert delay.stats().max_ms == pytest.approx(310)


def test_stopping_samples_the_pending_tick() -> None:
    """A client that stops its ticker after a stall still reports it."""
    delay = LoopDelay()
    _run(delay, [0.0])
    delay.expect(200.0)
    delay.stop(200.25)
    assert delay.stats().max_ms == pytest.approx(250)
    delay.stop(300.0)  # nothing pending any more: nothing added
    assert delay.stats().ticks == 2


def test_a_sample_before_the_due_time_adds_nothing() -> None:
    """A connection that closes before the pending tick is due has nothing to sample."""
    delay = LoopDelay()
    delay.expect(100.01)
    delay.sample(100.005)
    assert delay.stats().ticks == 0


def test_a_span_sees_only_its_own_ticks_and_history_is_bounded() -> None:
    """stats(since=mark) covers one connection; forget_before() drops older samples."""
    delay = LoopDelay()
    now = _run(delay, [50, 50])
    mark = delay.mark()
    _run(delay, [1.0, 2.0], start=now)
    assert delay.stats(since=mark).max_ms == pytest.approx(2)
    delay.forget_before(mark)
    assert delay.ticks == 4
    assert delay.stats(since=mark).ticks == 2
    assert delay.stats().ticks == 2  # the first two are gone


def test_no_ticks_gives_no_figures_and_tick_needs_a_due_time() -> None:
    """An empty span reports no figures (not zeros); a tick nobody expected is a bug."""
    delay = LoopDelay()
    stats = delay.stats()
    assert (stats.ticks, stats.p50_ms, stats.max_ms) == (0, None, None)
    assert stats.to_json() is None and stats.text() == "no ticks"
    with pytest.raises(RuntimeError):
        delay.tick(0.0)
