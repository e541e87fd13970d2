"""The talk's ``other_task`` on the IOLoop: ``IOLoop.call_later`` every 10 ms, measuring how
late each call comes. Siblings: asyncio_impl/ticker.py, twisted_impl/ticker.py."""

from __future__ import annotations

import time
from collections.abc import Callable

from tornado.ioloop import IOLoop

from common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    io_loop: IOLoop, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``io_loop`` into ``delay`` (and call ``on_tick``) until the returned function
    is called."""
    handle: object

    def tick() -> None:
        nonlocal handle
        now = time.monotonic()
        handle = io_loop.call_later(delay.tick(now), tick)
        if on_tick is not None:
            on_tick(now)

    handle = io_loop.call_later(delay.start(time.monotonic()), tick)
    return lambda: io_loop.remove_timeout(handle)
