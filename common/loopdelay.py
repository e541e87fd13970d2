"""How late the loop runs: the talk's ``other_task`` as a 10 ms timer, measured.

The same definition as Node's ``monitorEventLoopDelay``: a timer is due every ``interval``
seconds; each time it fires we record how late it is, and report p50, p99 and max lateness in
milliseconds with the number of ticks. Each implementation drives this with its own
framework's timer (``call_later``, ``callLater``, ``IOLoop.call_later``, a heap of timers).

Three rules keep the figure honest:

- **Lateness is measured against the time the loop itself scheduled the tick**
  (``TimerHandle.when()``, ``DelayedCall.getTime()``), on ``time.monotonic()``'s clock, not
  against ``now + interval`` as we would like it. uvloop schedules on a whole-millisecond
  clock cached once per iteration, so its timers may fire before ``now + interval``: such
  early fires are counted (:attr:`DelayStats.early`) and kept as negative lateness, never
  clamped to 0, which would flatter the loop.
- **A late tick is only seen when it fires**, so :meth:`LoopDelay.sample` takes a provisional
  sample of the pending tick when a connection closes and when the ticker stops: a stall
  that ends with the transfer still shows. When the tick does fire, its real lateness
  replaces the provisional one (one tick, one sample).
- **Nearest-rank p99 of fewer than 100 samples is the maximum**, so :class:`DelayStats` gives
  no p99 below :data:`MIN_TICKS_FOR_P99` ticks, and no figures at all without ticks.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .percentiles import MIN_COUNT_FOR_P99, nearest_rank, rounded

__all__ = ["MIN_TICKS_FOR_P99", "TICK_INTERVAL", "DelayStats", "LoopDelay", "OnTick"]

TICK_INTERVAL = 0.010
#: Below this many ticks, nearest-rank p99 (rank ceil(0.99 n)) is the maximum: not reported.
MIN_TICKS_FOR_P99 = MIN_COUNT_FOR_P99

#: Called with the time of each tick, after it is recorded: a server's ``Sink.expire``.
OnTick = Callable[[float], object]


@dataclass(frozen=True)
class DelayStats:
    """Lateness of the ticks in a span of time, in milliseconds (negative: early).

    ``p50_ms`` and ``max_ms`` are None without ticks; ``p99_ms`` is None with fewer than
    :data:`MIN_TICKS_FOR_P99` ticks, where it would only repeat the maximum."""

    ticks: int
    early: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    def to_json(self) -> dict[str, float | None] | None:
        """``{"p50", "p99", "max"}`` in milliseconds, or None when nothing ticked."""
        if not self.ticks:
            return None
        return {
            "p50": rounded(self.p50_ms),
            "p99": rounded(self.p99_ms),
            "max": rounded(self.max_ms),
        }

    @classmethod
    def from_json(cls, event: Mapping[str, Any]) -> DelayStats:
        """The loop delay an event carries as ``loop_delay_ms``, ``ticks`` and
        ``early_ticks`` (see :func:`nbio.common.events.to_json`)."""
        delay = event.get("loop_delay_ms") or {}
        return cls(
            ticks=int(event.get("ticks", 0)),
            early=int(event.get("early_ticks", 0)),
            p50_ms=delay.get("p50"),
            p99_ms=delay.get("p99"),
            max_ms=delay.get("max"),
        )

    def text(self) -> str:
        """For people: ``p99 1.2 ms (340 ticks)``, ``max 3.0 ms (12 ticks)``, ``no ticks``."""
        if not self.ticks:
            return "no ticks"
        if self.p99_ms is None:
            return f"max {self.max_ms:.1f} ms ({self.ticks} ticks, too few for a p99)"
        return f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms ({self.ticks} ticks)"


class LoopDelay:
    """Records the lateness of a periodic timer.

    The driver (a ticker) schedules a tick on its loop every :attr:`interval` seconds and
    tells :meth:`expect` when the loop will fire it; when it fires it calls :meth:`tick`.
    :meth:`mark` and ``stats(since=...)`` give the figures for one span (one connection's
    lifetime); :meth:`forget_before` drops samples no span still needs, so a long-running
    server keeps a bounded history.
    """

    def __init__(self, interval: float = TICK_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive: {interval}")
        self.interval = interval
        self._due: float | None = None  # when the pending tick is due, as the loop scheduled
        self._provisional: int | None = None  # absolute index of its provisional sample
        self._samples = array("d")
        self._dropped = 0  # samples forgotten so far: marks stay absolute indexes

    def expect(self, due: float) -> None:
        """The loop will fire the next tick at ``due`` (``time.monotonic()`` seconds)."""
        self._due = due
        self._provisional = None

    def tick(self, now: float) -> None:
        """The expected tick fired at ``now``: record how late it is."""
        if self._due is None:
            raise RuntimeError("tick() without expect()")
        lateness = now - self._due
        self._due = None
        provisional, self._provisional = self._provisional, None
        if provisional is None:
            self._samples.append(lateness)
        elif provisional >= self._dropped:
            self._samples[provisional - self._dropped] = lateness
        # else: a span already reported this tick's provisional sample and it was forgotten.

    def sample(self, now: float) -> None:
        """Take a provisional sample of the pending tick if it is overdue at ``now``: called
        when a connection closes and when the ticker stops, so that a stall that ends with
        the transfer is not lost because its tick had not fired yet."""
        if self._due is None or now <= self._due:
            return
        lateness = now - self._due
        if self._provisional is None:
            self._provisional = self.ticks
            self._samples.append(lateness)
        elif self._provisional >= self._dropped:
            self._samples[self._provisional - self._dropped] = lateness

    def stop(self, now: float) -> None:
        """The ticker stops: sample the pending tick, expect no more."""
        self.sample(now)
        self._due = None
        self._provisional = None

    @property
    def ticks(self) -> int:
        """All ticks recorded since the start (provisional samples included)."""
        return self._dropped + len(self._samples)

    def mark(self) -> int:
        """Return a position to measure from later with ``stats(since=...)``."""
        return self.ticks

    def stats(self, since: int = 0) -> DelayStats:
        """Return the lateness of the ticks recorded from position ``since`` on."""
        start = max(0, since - self._dropped)
        samples = sorted(self._samples[start:])
        if not samples:
            return DelayStats(ticks=0)
        return DelayStats(
            ticks=len(samples),
            early=sum(1 for sample in samples if sample < 0),
            p50_ms=nearest_rank(samples, 50) * 1000,
            p99_ms=nearest_rank(samples, 99) * 1000 if len(samples) >= MIN_TICKS_FOR_P99 else None,
            max_ms=samples[-1] * 1000,
        )

    def forget_before(self, position: int) -> None:
        """Drop the samples before ``position``: no span will ask for them again."""
        count = min(len(self._samples), position - self._dropped)
        if count > 0:
            del self._samples[:count]
            self._dropped += count
