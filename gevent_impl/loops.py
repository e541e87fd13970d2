"""Running gevent: on which loop under the hub (libev, or libuv), until which signal.

The hub is made on first use, and its loop kind is read from ``gevent.config.loop`` then:
:func:`run` sets it before anything of gevent runs. Code runs in greenlets; a call that
would block (``recv_into``, ``sendall``, ``sleep``) switches to the hub, which runs the loop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import gevent
import gevent.queue
from gevent.event import Event

from ..common.sink import Sink

__all__ = ["LOOPS", "Signals", "clock_offset", "loop_name", "run", "wait_idle", "wait_or_signal"]

T = TypeVar("T")

#: ``--loop`` names and the ``gevent.config.loop`` each means.
LOOPS = {"default": "libev-cext", "libuv": "libuv-cffi"}


def run(main: Callable[[], T], loop: str) -> T:
    """Run ``main`` in this (the main) greenlet, over a hub on the loop ``loop`` names."""
    gevent.config.loop = LOOPS[loop]  # read when the hub is made: before anything else
    return main()


def loop_name() -> str:
    """Name the hub's loop: ``gevent.libev.corecext.loop``, ``gevent.libuv.loop.loop``."""
    loop = gevent.get_hub().loop
    return f"{type(loop).__module__}.{type(loop).__name__}"


def clock_offset() -> float:
    """What to add to the hub's clock to read ``time.monotonic()``: libev keeps wall-clock
    time (``ev_now``), libuv monotonic milliseconds, both cached once per loop turn."""
    now = gevent.get_hub().loop.now()
    wall, mono = time.time(), time.monotonic()
    # Whichever the loop's clock is near; the difference of the two fresh clocks converts.
    return mono - wall if abs(now - wall) < abs(now - mono) else 0.0


class Signals:
    """SIGINT and SIGTERM, delivered by the hub's loop (``gevent.signal_handler``) into a
    queue, so that a second one can cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._queue: gevent.queue.Queue[int] = gevent.queue.Queue()
        self._handlers = [gevent.signal_handler(s, self._queue.put, s) for s in self.SIGNALS]

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the next signal, at most ``timeout`` seconds; return its number."""
        try:
            signum: int = self._queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return None
        return signum

    def close(self) -> None:
        for handler in self._handlers:
            handler.cancel()


def wait_or_signal(greenlets: list[gevent.Greenlet[Any, Any]], signals: Signals) -> int | None:
    """Wait until every greenlet is done, or one returns its failure (then kill the rest),
    or SIGINT or SIGTERM comes (then kill them all and return its number). Greenlets return
    their failure rather than raise it: the hub prints a traceback for every greenlet that
    dies of an exception."""
    waiter = gevent.spawn(signals.wait)
    try:
        pending = list(greenlets)
        while pending:
            done = gevent.wait([*pending, waiter], count=1)
            if waiter in done:
                gevent.killall(greenlets)
                return cast(int, waiter.value)
            pending = [g for g in pending if not g.ready()]
            if any(g.value is not None for g in greenlets if g.ready()):
                gevent.killall(greenlets)
                return None
        return None
    finally:
        waiter.kill()


def wait_idle(sink: Sink, timeout: float | None, signals: Signals | None = None) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle = Event()
    sink.when_idle(idle.set)
    waiters = [gevent.spawn(idle.wait)]
    if signals is not None:
        waiters.append(gevent.spawn(signals.wait))
    try:
        gevent.wait(waiters, timeout=timeout, count=1)
    finally:
        gevent.killall(waiters)
    return sink.live == 0
