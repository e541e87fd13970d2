"""The talk's ``other_task`` on anyio: a task that sleeps until the next 10 ms deadline with
``anyio.sleep_until``, measuring how late it wakes against the backend's own clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ..common.loopdelay import LoopDelay, OnTick
from . import loops

__all__ = ["start_ticker"]


def start_ticker(
    task_group: TaskGroup, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick in a task of ``task_group`` into ``delay`` (and call ``on_tick``) until the
    returned function is called."""
    scope = anyio.CancelScope()

    async def other_task() -> None:
        with scope:
            while True:
                due = anyio.current_time() + delay.interval  # the backend's clock
                delay.expect(due + loops.clock_offset())
                await anyio.sleep_until(due)
                if scope.cancel_called:  # stopped while this wake-up was already due
                    return
                now = time.monotonic()
                delay.tick(now)
                if on_tick is not None:
                    on_tick(now)

    task_group.start_soon(other_task)

    def stop() -> None:
        scope.cancel()
        delay.stop(time.monotonic())

    return stop
