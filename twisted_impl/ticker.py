"""The talk's ``other_task`` on the reactor: ``callLater`` every 10 ms, measuring how late
each call comes. Siblings: asyncio_impl/ticker.py, tornado_impl/ticker.py."""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    reactor: IReactorTime, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``reactor`` into ``delay`` (and call ``on_tick``) until the returned function
    is called."""
    call: IDelayedCall

    def tick() -> None:
        nonlocal call
        now = time.monotonic()
        call = reactor.callLater(delay.tick(now), tick)
        if on_tick is not None:
            on_tick(now)

    call = reactor.callLater(delay.start(time.monotonic()), tick)
    return lambda: call.cancel()
