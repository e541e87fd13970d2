"""Running Tornado: since Tornado 5 the IOLoop wraps the running asyncio loop, so the loop
is asyncio's (or uvloop) and so are running it and its signals; only the names differ."""

from __future__ import annotations

import asyncio

from tornado.ioloop import IOLoop

from asyncio_impl import loops as asyncio_loops
from asyncio_impl.loops import Signals, run, wait_idle

__all__ = ["Signals", "describe", "run", "wait_idle"]


def describe(io_loop: IOLoop) -> str:
    """Name the IOLoop and the asyncio loop under it: ``AsyncIOMainLoop/asyncio...``."""
    return f"{type(io_loop).__name__}/{asyncio_loops.describe(asyncio.get_running_loop())}"
