"""The talk's ``other_task`` on Eventlet: a green thread that sleeps 10 ms at a time on the
hub, measuring how late it wakes against the hub's own clock (``hub.clock``, which is
``time.monotonic``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import eventlet
from eventlet.hubs.hub import BaseHub

from ..common.loopdelay import LoopDelay, OnTick

__all__ = ["start_ticker"]


def start_ticker(
    hub: BaseHub, delay: LoopDelay, on_tick: OnTick | None = None
) -> Callable[[], None]:
    """Tick on ``hub`` into ``delay`` (and call ``on_tick``) until the returned function is
    called."""

    def other_task() -> None:
        while True:
            # sleep() schedules its timer an interval after the hub's clock, read now.
            delay.expect(hub.clock() + delay.interval)
            eventlet.sleep(delay.interval)
            now = time.monotonic()
            delay.tick(now)
            if on_tick is not None:
                on_tick(now)

    thread = eventlet.spawn(other_task)

    def stop() -> None:
        thread.kill()
        delay.stop(time.monotonic())

    return stop
