"""The talk's ``other_task`` on asyncio's loop: ``call_later`` every 10 ms, measuring how
late each call comes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    loop: asyncio.AbstractEventLoop, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``loop`` into ``delay`` (and call ``on_tick``) until the returned function is
    called."""
    handle: asyncio.TimerHandle

    def schedule() -> None:
        nonlocal handle
        handle = loop.call_later(delay.interval, tick)
        # The loop's own due time, on time.monotonic()'s clock: asyncio's loop.time() is
        # that clock; uvloop's is too, but in whole milliseconds cached per iteration.
        delay.expect(handle.when())

    def tick() -> None:
        now = time.monotonic()
        delay.tick(now)
        schedule()
        if on_tick is not None:
            on_tick(now)

    def stop() -> None:
        handle.cancel()
        delay.stop(time.monotonic())

    schedule()
    return stop
