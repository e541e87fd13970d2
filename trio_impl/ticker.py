"""The talk's ``other_task`` on trio: a task that sleeps until the next 10 ms deadline with
``trio.sleep_until``, measuring how late it wakes against trio's own clock (``loops.now()``)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..common.loopdelay import LoopDelay, OnTick
from . import loops

__all__ = ["start_ticker"]


def start_ticker(
    nursery: trio.Nursery, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick in a task of ``nursery`` into ``delay`` (and call ``on_tick``) until the returned
    function is called."""
    scope = trio.CancelScope()

    async def other_task() -> None:
        with scope:
            while True:
                due = trio.current_time() + delay.interval
                # The deadline on trio's own clock, read on the monotonic scale.
                delay.expect(loops.now() + delay.interval)
                await trio.sleep_until(due)
                if scope.cancel_called:  # stopped while this wake-up was already due
                    return
                now = loops.now()
                delay.tick(now)
                if on_tick is not None:
                    on_tick(now)

    nursery.start_soon(other_task)

    def stop() -> None:
        scope.cancel()
        delay.stop(loops.now())

    return stop
