"""The talk's ``other_task`` on gevent: a greenlet that sleeps 10 ms at a time on the hub,
measuring how late it wakes against the hub's own clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
from gevent.hub import Hub

from ..common.loopdelay import LoopDelay, OnTick
from . import loops

__all__ = ["start_ticker"]


def start_ticker(hub: Hub, delay: LoopDelay, on_tick: OnTick | None = None) -> Callable[[], None]:
    """Tick on ``hub`` into ``delay`` (and call ``on_tick``) until the returned function is
    called."""

    def other_task() -> None:
        while True:
            # The hub's timer is due an interval after the loop's cached now: its own clock.
            delay.expect(hub.loop.now() + loops.clock_offset() + delay.interval)
            gevent.sleep(delay.interval)
            now = time.monotonic()
            delay.tick(now)
            if on_tick is not None:
                on_tick(now)

    greenlet = gevent.spawn(other_task)

    def stop() -> None:
        greenlet.kill()
        delay.stop(time.monotonic())

    return stop
