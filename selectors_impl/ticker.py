"""The talk's ``other_task`` on our own loop: a task that sleeps 10 ms at a time on the
timer heap, measuring how late it wakes."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..common.loopdelay import LoopDelay, OnTick
from .mainloop import Loop, sleep_until

__all__ = ["start_ticker"]


def start_ticker(loop: Loop, delay: LoopDelay, on_tick: OnTick | None = None) -> Callable[[], None]:
    """Tick on ``loop`` into ``delay`` (and call ``on_tick``) until the returned function is
    called."""

    async def other_task() -> None:
        while True:
            due = loop.time() + delay.interval
            delay.expect(due)  # the deadline our loop's timer heap keeps for us
            await sleep_until(due)
            now = time.monotonic()
            delay.tick(now)
            if on_tick is not None:
                on_tick(now)

    task = loop.spawn(other_task())

    def stop() -> None:
        task.cancel()
        delay.stop(time.monotonic())

    return stop
