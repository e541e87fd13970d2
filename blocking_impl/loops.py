"""Running without a loop: threads block in their sockets, and the main thread ticks and
watches for signals (Python runs signal handlers in the main thread only)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from ..common.events import Received, Stopped
from ..common.sink import Connection, Sink

__all__ = ["SharedSink", "Signals", "loop_name", "run"]

T = TypeVar("T")


def run(main: Callable[[], T], loop: str) -> T:
    """No loop to run: call ``main`` in this thread, whose workers are threads of their own
    (``loop`` is always "default")."""
    return main()


def loop_name() -> str:
    """What runs: no loop, a thread per connection."""
    return "threads"


class Signals:
    """SIGINT and SIGTERM, noted as they arrive; the main thread looks at each tick."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.arrived.append(signum)

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# No wait_or_signal, no wait_idle: with no loop, the main thread waits by ticking (Ticker).


# Only here: the other implementations run every connection on one thread.
class SharedSink(Sink):
    """A sink every thread uses: each call takes its lock, and so do the events it emits.
    The ticker takes it too, so the loop delay it records is read whole."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.RLock()

    def open(self, peer: str, now: float, abort: Callable[[], None]) -> Connection | None:
        with self.lock:
            return super().open(peer, now, abort)

    def close(self, connection: Connection, outcome: str, now: float) -> Received:
        with self.lock:
            return super().close(connection, outcome, now)

    def reject(self, peer: str, reason: str) -> None:
        with self.lock:
            super().reject(peer, reason)

    def accept_failed(self, reason: str, now: float, retry_in: float | None = None) -> float:
        with self.lock:
            return super().accept_failed(reason, now, retry_in)

    def expire(self, now: float) -> int:
        with self.lock:
            return super().expire(now)

    def when_idle(self, callback: Callable[[], None]) -> None:
        with self.lock:
            super().when_idle(callback)

    def abort_all(self) -> int:
        with self.lock:
            return super().abort_all()

    def stopped(self) -> Stopped:
        with self.lock:
            return super().stopped()
