"""The talk's ``other_task`` with threads: the main thread ticks every 10 ms while worker
threads move the bytes. Its lateness measures how promptly a thread gets the GIL back from
busy workers (``sys.getswitchinterval()``, 5 ms), not how late a single-threaded loop runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..common.loopdelay import LoopDelay, OnTick

__all__ = ["Ticker", "start_ticker"]


# No loop keeps our timer: the calling thread ticks while it waits (Ticker.run_until), under
# the lock the worker threads take (where the others take their loop).
def start_ticker(lock: threading.RLock, delay: LoopDelay, on_tick: OnTick | None = None) -> Ticker:
    """Tick into ``delay`` (and call ``on_tick``) whenever the returned Ticker runs."""
    return Ticker(lock, delay, on_tick)


class Ticker:
    """Ticks into ``delay`` in the calling thread, whenever :meth:`run_until` runs."""

    def __init__(
        self, lock: threading.RLock, delay: LoopDelay, on_tick: OnTick | None = None
    ) -> None:
        self._delay = delay
        self._lock = lock  # the delay is read by worker threads when a connection ends
        self._on_tick = on_tick
        with lock:
            self._due = time.monotonic() + delay.interval
            delay.expect(self._due)  # no loop keeps our timer: this thread's sleep does

    def run_until(self, done: Callable[[], bool], timeout: float | None = None) -> bool:
        """Tick until ``done()`` or ``timeout`` seconds; return ``done()``. ``done`` is
        checked every tick, so a signal or a finished worker is seen within 10 ms."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, self._due - time.monotonic()))
            with self._lock:
                now = time.monotonic()
                self._delay.tick(now)
                self._due = now + self._delay.interval
                self._delay.expect(self._due)
                if self._on_tick is not None:
                    self._on_tick(now)
        return done()

    def stop(self) -> None:
        """Stop ticking: a tick overdue now is still counted."""
        with self._lock:
            self._delay.stop(time.monotonic())
