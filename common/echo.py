"""An echo client's requests on one connection, sans I/O: the message each request sends,
when it was due, and the answers, checked byte for byte and timed into a histogram.

Closed loop (no rate): each request is due when it is sent, and the next is sent once its
answer is whole. Open loop (a rate, as wrk2 and sockperf's under-load mode): request ``i``
is due at ``start + i / rate`` whatever the answers do, and its latency runs from that
schedule, not from when it could be sent: a stalled server delays every request scheduled
during the stall, and a closed-loop client would hide them (coordinated omission).

Latencies go into an HdrHistogram (1 µs to an hour, 3 significant digits, as vmbench's is
10 µs buckets): a fixed size whatever the count, mergeable across connections, and kept
whole in the report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .accounting import Buffer
from .options import Echo
from .percentiles import Percentiles

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = ["EchoMismatch", "Requests", "latency_of", "new_histogram"]

#: The histogram's range, in µs: 1 µs to an hour, 3 significant digits.
LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3


class EchoMismatch(ValueError):
    """An answer that is not what the request sent (or more than was asked)."""


def new_histogram() -> HdrHistogram:
    """An empty latency histogram, in µs."""
    from hdrh.histogram import HdrHistogram  # only an echo client needs it

    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


class Requests:
    """The requests of one connection: :meth:`next` gives each message to send (and
    records when it was due), :meth:`answered` takes what comes back, in order."""

    def __init__(self, echo: Echo, messages: Iterator[bytes], start: float) -> None:
        self.echo = echo
        self.start = start  # the schedule's origin (open loop)
        self.histogram = new_histogram()
        self.sent = 0
        self.answered_count = 0
        self._messages = messages
        self._waiting: deque[tuple[memoryview, float]] = deque()  # sent, not answered whole
        self._offset = 0  # bytes of the oldest waiting message already answered
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._exhausted = False  # the payload ended first (a send that lasts --duration)

    @property
    def all_sent(self) -> bool:
        """Every request asked for sent, or the payload's messages (its duration) ran out."""
        return self._exhausted or self.sent >= self.echo.requests

    @property
    def done(self) -> bool:
        """Every request sent and answered whole."""
        return self.all_sent and not self._waiting

    @property
    def outstanding(self) -> int:
        """Requests sent whose answer is not whole yet."""
        return len(self._waiting)

    def due(self) -> float:
        """When the next request is due: on a schedule with a rate; now, without."""
        if self.echo.rate is None:
            raise ValueError("a closed loop has no schedule: a request is due when it is sent")
        return self.start + self.sent / self.echo.rate

    def next(self, due: float) -> bytes | None:
        """The next request's message, due at ``due`` (its send time in a closed loop, its
        scheduled time in an open one); None once every request is sent."""
        if self.all_sent:
            return None
        message = next(self._messages, None)
        if message is None:
            self._exhausted = True
            return None
        self.sent += 1
        self._waiting.append((memoryview(message), due))
        if self.first_at is None:
            self.first_at = due
        return message

    def answered(self, data: Buffer, now: float) -> int:
        """Take answer bytes that arrived at ``now``; return how many requests they
        completed. Raises :class:`EchoMismatch` if they differ from what was sent."""
        view = memoryview(data).cast("B")
        done = 0
        while view:
            if not self._waiting:
                raise EchoMismatch(f"{len(view)} bytes came back that no request sent")
            message, due = self._waiting[0]
            take = min(len(view), len(message) - self._offset)
            if view[:take] != message[self._offset : self._offset + take]:
                raise EchoMismatch(f"request {self.answered_count + 1}'s answer differs from it")
            view = view[take:]
            self._offset += take
            if self._offset == len(message):
                self._waiting.popleft()
                self._offset = 0
                self.answered_count += 1
                done += 1
                self.histogram.record_value(max(LOWEST_US, round((now - due) * 1e6)))
                self.last_at = now
        return done


def latency_of(connections: Sequence[Requests]) -> tuple[Percentiles, str]:
    """Every connection's latencies merged: p50, p90, p99, p99.9 and max in ms (no p99
    below 100 requests, no p99.9 below 1000, as nearest rank would only repeat the max),
    and the merged histogram's base64 encoding."""
    merged = new_histogram()
    for requests in connections:
        merged.add(requests.histogram)
    count = merged.get_total_count()

    def at(percent: float, least: int) -> float | None:
        return merged.get_value_at_percentile(percent) / 1000 if count >= least else None

    encoded = merged.encode()
    return (
        Percentiles(
            count=count,
            p50_ms=at(50, 1),
            p99_ms=at(99, 100),
            max_ms=merged.get_max_value() / 1000 if count else None,
            p90_ms=at(90, 10),
            p999_ms=at(99.9, 1000),
        ),
        encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded),
    )
