"""The talk's ``other_task`` on the IOLoop: ``IOLoop.call_later`` every 10 ms, measuring how
late each call comes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from tornado.ioloop import IOLoop

from ..common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    io_loop: IOLoop, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``io_loop`` into ``delay`` (and call ``on_tick``) until the returned function
    is called."""
    handle: asyncio.TimerHandle

    def schedule() -> None:
        nonlocal handle
        # The IOLoop hands timers to the asyncio loop under it, and returns its handle.
        handle = cast(asyncio.TimerHandle, io_loop.call_later(delay.interval, tick))
        # The loop's own due time, on time.monotonic()'s clock (uvloop's in whole ms).
        delay.expect(handle.when())

    def tick() -> None:
        now = time.monotonic()
        delay.tick(now)
        schedule()
        if on_tick is not None:
            on_tick(now)

    def stop() -> None:
        io_loop.remove_timeout(handle)
        delay.stop(time.monotonic())

    schedule()
    return stop
