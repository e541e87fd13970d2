"""The talk's ``other_task`` on asyncio's loop: ``call_later`` every 10 ms, measuring how
late each call comes. Siblings: twisted_impl/ticker.py, tornado_impl/ticker.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from common.loopdelay import LoopDelay

__all__ = ["start_ticker"]


def start_ticker(loop: asyncio.AbstractEventLoop, delay: LoopDelay) -> Callable[[], None]:
    """Tick on ``loop`` into ``delay`` until the returned function is called."""
    handle: asyncio.TimerHandle

    def tick() -> None:
        nonlocal handle
        handle = loop.call_later(delay.tick(time.monotonic()), tick)

    handle = loop.call_later(delay.start(time.monotonic()), tick)
    return lambda: handle.cancel()
