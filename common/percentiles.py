"""Nearest-rank percentiles: the one definition every figure of nbio uses.

Nearest rank: the p-th percentile of ``n`` ordered values is the value at rank
``ceil(p / 100 * n)`` (1-based). It is always a value that was measured, never an
interpolation between two. Below :data:`MIN_COUNT_FOR_P99` values, p99 is the maximum
(rank ``ceil(0.99 n) = n``), so it is not reported: it would only repeat the max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_COUNT_FOR_P99", "Percentiles", "nearest_rank", "rounded"]

#: Below this many values, nearest-rank p99 (rank ceil(0.99 n)) is the maximum.
MIN_COUNT_FOR_P99 = 100


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The ``percent``-th nearest-rank percentile of ``ordered`` (sorted, not empty)."""
    if not ordered:
        raise ValueError("no values")
    rank = min(len(ordered), max(1, math.ceil(percent / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Percentiles:
    """``count`` measurements as p50, p99 and max, in milliseconds; no p99 below
    :data:`MIN_COUNT_FOR_P99` of them. A request's latencies, from a histogram, carry p90
    and p99.9 too."""

    count: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    p90_ms: float | None = None
    p999_ms: float | None = None

    @classmethod
    def of_seconds(cls, seconds: Sequence[float]) -> Percentiles | None:
        """The percentiles of durations given in seconds; None for none."""
        if not seconds:
            return None
        ordered = sorted(seconds)
        return cls(
            count=len(ordered),
            p50_ms=nearest_rank(ordered, 50) * 1000,
            p99_ms=nearest_rank(ordered, 99) * 1000 if len(ordered) >= MIN_COUNT_FOR_P99 else None,
            max_ms=ordered[-1] * 1000,
        )

    def to_json(self) -> dict[str, float | None]:
        """``{"p50", "p99", "max"}`` in milliseconds, and ``"p90"``, ``"p99.9"`` if known."""
        data = {"p50": rounded(self.p50_ms), "p99": rounded(self.p99_ms)}
        if self.p90_ms is not None or self.p999_ms is not None:
            data |= {"p90": rounded(self.p90_ms), "p99.9": rounded(self.p999_ms)}
        return data | {"max": rounded(self.max_ms)}

    @classmethod
    def from_json(cls, data: dict[str, float | None] | None, count: int) -> Percentiles | None:
        """The reverse of :meth:`to_json`, given the count stored beside it."""
        if data is None:
            return None
        return cls(
            count,
            data.get("p50"),
            data.get("p99"),
            data.get("max"),
            data.get("p90"),
            data.get("p99.9"),
        )


def rounded(value: float | None) -> float | None:
    """Milliseconds as stored: to the microsecond."""
    return None if value is None else round(value, 3)
