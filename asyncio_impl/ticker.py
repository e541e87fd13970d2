"""The talk's ``other_task`` on asyncio's loop: ``call_later`` every 10 ms, measuring how
late each call comes. Siblings: twisted_impl/ticker.py, tornado_impl/ticker.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    loop: asyncio.AbstractEventLoop, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``loop`` into ``delay`` (and call ``on_tick``) until the returned function is
    called."""
    handle: asyncio.TimerHandle

    def tick() -> None:
        nonlocal handle
        now = time.monotonic()
        handle = loop.call_later(delay.tick(now), tick)
        if on_tick is not None:
            on_tick(now)

    handle = loop.call_later(delay.start(time.monotonic()), tick)
    return lambda: handle.cancel()
