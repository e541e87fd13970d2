"""Running Tornado: since Tornado 5 the IOLoop wraps the running asyncio loop, so the loop
is asyncio's (or uvloop) and so are running it and its signals; only the names differ."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from tornado.ioloop import IOLoop

from ..asyncio_impl import loops as asyncio_loops
from ..asyncio_impl.loops import Signals, run, wait_idle, wait_or_signal
from ..common.results import error_text
from ..common.sink import Sink, out_of_resources
from ..edge.kernel import RESET_LINGER

__all__ = [
    "Signals",
    "loop_name",
    "report_accept_trouble",
    "reset",
    "run",
    "wait_idle",
    "wait_or_signal",
]


def loop_name(io_loop: IOLoop) -> str:
    """Name the IOLoop and the asyncio loop under it: ``AsyncIOMainLoop/asyncio...``."""
    return f"{type(io_loop).__name__}/{asyncio_loops.loop_name(asyncio.get_running_loop())}"


def reset(sock: socket.socket | None) -> None:
    """Make the next ``close()`` of ``sock`` a reset: IOStream has no abort of its own."""
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)


def report_accept_trouble(io_loop: IOLoop, listeners: list[socket.socket], sink: Sink) -> None:
    """Stop watching ``listeners`` for the sink's back-off when accept() fails for want of
    descriptors or memory, report it once per episode, and watch them again after.

    Tornado's accept handler (``tornado.netutil.add_accept_handler``) lets such an error
    escape into the loop, which logs it and, the listener being still readable, calls the
    handler again at once: 100% CPU and about 160,000 traceback lines a second here. The
    loop's exception handler is where the error arrives; ``IOLoop.update_handler(fd, 0)``
    stops watching a listener, and ``IOLoop.READ`` watches it again."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    paused = [False]

    def resume() -> None:
        paused[0] = False
        for sock in listeners:
            if sock.fileno() >= 0:  # not closed by TCPServer.stop() meanwhile
                io_loop.update_handler(sock.fileno(), IOLoop.READ)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if out_of_resources(error):
            assert error is not None
            if not paused[0]:
                pause = sink.accept_failed(error_text(error), time.monotonic())
                for sock in listeners:
                    io_loop.update_handler(sock.fileno(), 0)
                io_loop.call_later(pause, resume)
                paused[0] = True
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
