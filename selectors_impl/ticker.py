"""The talk's ``other_task`` on our own loop: a task that sleeps 10 ms at a time on the
timer heap, measuring how late it wakes. Siblings: asyncio_impl/ticker.py,
twisted_impl/ticker.py, tornado_impl/ticker.py."""

from __future__ import annotations

from collections.abc import Callable

from common.loopdelay import LoopDelay
from selectors_impl.loop import Loop, sleep

__all__ = ["start_ticker"]


def start_ticker(loop: Loop, delay: LoopDelay) -> Callable[[], None]:
    """Tick on ``loop`` into ``delay`` until the returned function is called."""

    async def other_task() -> None:
        wait = delay.start(loop.time())
        while True:
            await sleep(wait)
            wait = delay.tick(loop.time())

    task = loop.spawn(other_task())
    return task.cancel
