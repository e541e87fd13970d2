"""The talk's ``other_task`` on the reactor: ``callLater`` every 10 ms, measuring how late
each call comes."""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    reactor: IReactorTime, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``reactor`` into ``delay`` (and call ``on_tick``) until the returned function
    is called."""
    call: IDelayedCall

    def schedule() -> None:
        nonlocal call
        call = reactor.callLater(delay.interval, tick)
        # The reactor's own due time is on reactor.seconds(), wall-clock time.time() even on
        # the asyncio reactor: move it onto time.monotonic()'s clock by the clocks' offset.
        delay.expect(call.getTime() - reactor.seconds() + time.monotonic())

    def tick() -> None:
        now = time.monotonic()
        delay.tick(now)
        schedule()
        if on_tick is not None:
            on_tick(now)

    def stop() -> None:
        call.cancel()
        delay.stop(time.monotonic())

    schedule()
    return stop
