"""How late the loop runs: the talk's ``other_task`` as a 10 ms timer, measured.

The same definition as Node's ``monitorEventLoopDelay``: a timer is due every ``interval``
seconds; each time it fires we record how late it is, and report p50, p99 and max lateness in
milliseconds with the number of ticks. Each implementation drives this with its own
framework's timer (``call_later``, ``callLater``, ``IOLoop.call_later``, a heap of timers).

Every implementation measures with ``time.monotonic()``, here and in its byte accounting,
not with its loop's clock: uvloop's ``loop.time()`` counts whole milliseconds, cached once
per loop iteration, which hides sub-millisecond lateness and can make a short transfer last
0 seconds; Twisted's ``reactor.seconds()`` is wall-clock time, which can jump.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TICK_INTERVAL", "DelayStats", "LoopDelay", "OnTick"]

TICK_INTERVAL = 0.010

#: Called with the time of each tick, after it is recorded: a server's ``Sink.expire``.
OnTick = Callable[[float], object]


@dataclass(frozen=True)
class DelayStats:
    """Lateness of the ticks in a span of time, in milliseconds."""

    ticks: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def to_json(self) -> dict[str, float]:
        return {
            "p50": round(self.p50_ms, 3),
            "p99": round(self.p99_ms, 3),
            "max": round(self.max_ms, 3),
        }


class LoopDelay:
    """Records the lateness of a periodic timer.

    The driver calls :meth:`start` once and :meth:`tick` each time its timer fires; both
    return how long to wait before the next tick. :meth:`mark` and ``stats(since=...)`` give
    the figures for one span (one connection's lifetime); :meth:`forget_before` drops samples
    no span still needs, so a long-running server keeps a bounded history.
    """

    def __init__(self, interval: float = TICK_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive: {interval}")
        self.interval = interval
        self._due: float | None = None
        self._samples = array("d")
        self._dropped = 0  # samples forgotten so far: marks stay absolute indexes

    def start(self, now: float) -> float:
        """Begin measuring at ``now``; return the delay until the first tick."""
        self._due = now + self.interval
        return self.interval

    def tick(self, now: float) -> float:
        """Record a tick that fired at ``now``; return the delay until the next one."""
        if self._due is None:
            raise RuntimeError("tick() before start()")
        self._samples.append(max(0.0, now - self._due))
        self._due = now + self.interval
        return self.interval

    @property
    def ticks(self) -> int:
        """All ticks recorded since the start."""
        return self._dropped + len(self._samples)

    def mark(self) -> int:
        """Return a position to measure from later with ``stats(since=...)``."""
        return self.ticks

    def stats(self, since: int = 0) -> DelayStats:
        """Return the lateness of the ticks recorded from position ``since`` on."""
        start = max(0, since - self._dropped)
        samples = sorted(self._samples[start:])
        if not samples:
            return DelayStats(ticks=0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0)
        return DelayStats(
            ticks=len(samples),
            p50_ms=_percentile(samples, 50) * 1000,
            p99_ms=_percentile(samples, 99) * 1000,
            max_ms=samples[-1] * 1000,
        )

    def forget_before(self, position: int) -> None:
        """Drop the samples before ``position``: no span will ask for them again."""
        count = min(len(self._samples), position - self._dropped)
        if count > 0:
            del self._samples[:count]
            self._dropped += count


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty list."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]
