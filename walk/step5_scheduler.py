"""Step 5: a generator scheduler. Tasks are generators that yield what they wait for; one
loop runs them all and sleeps in ``select()`` until a socket is writable or a timer is due.
``other_task`` keeps ticking while the payload goes out: this is what a mainloop is.

Fixed from the talk: it polled ``select()`` with timeout 0, spinning whenever tasks
waited; its ``other_task`` called ``time.sleep()``, blocking every other task; and its
readable branch used an undefined name. Here ``other_task`` yields ``("sleep", seconds)``
and the loop computes the ``select()`` timeout from the earliest timer.
"""

from __future__ import annotations

import heapq
import select
import socket
import time
from collections.abc import Generator
from typing import Any

from . import SMALL, arguments

Task = Generator[tuple[str, Any] | None, None, None]


def other_task(ticks: list[float], count: int = 500) -> Task:
    """Tick every 10 ms, ``count`` times, recording when each tick ran."""
    for _ in range(count):
        ticks.append(time.monotonic())
        yield ("sleep", 0.01)


def send_data_task(host: str, port: int, data: bytes, sent: list[float]) -> Task:
    """Send ``data``, yielding ("write", sock) whenever the kernel's buffer is full.
    ``sent`` gets the byte count, then the start and end times."""
    sent[1] = time.monotonic()
    with socket.create_connection((host, port)) as sock:
        sock.setblocking(False)
        view = memoryview(data)
        while view:
            try:
                count = sock.send(view)
            except BlockingIOError:
                count = 0
            sent[0] += count
            view = view[count:]
            if view:
                yield ("write", sock)  # monitor this socket
    sent[2] = time.monotonic()


def run_tasks(tasks: list[Task]) -> int:
    """Run generator tasks until all are done; return how many times select() woke."""
    ready = list(tasks)
    timers: list[tuple[float, int, Task]] = []
    waiting: dict[str, dict[socket.socket, Task]] = {"read": {}, "write": {}}
    order = wakeups = 0
    while ready or timers or waiting["read"] or waiting["write"]:
        for task in ready:
            try:
                request = next(task)
            except StopIteration:
                continue
            if request is None:  # a plain yield: run again next turn
                timers.append((0.0, order := order + 1, task))
            elif request[0] == "sleep":
                heapq.heappush(timers, (time.monotonic() + request[1], order := order + 1, task))
            else:
                waiting[request[0]][request[1]] = task
        heapq.heapify(timers)
        timeout = max(0.0, timers[0][0] - time.monotonic()) if timers else None
        if waiting["read"] or waiting["write"] or timeout:
            readable, writable, _ = select.select(
                list(waiting["read"]), list(waiting["write"]), [], timeout
            )
            wakeups += 1
        else:
            readable = writable = []
        ready = [waiting["read"].pop(sock) for sock in readable]
        ready += [waiting["write"].pop(sock) for sock in writable]
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            ready.append(heapq.heappop(timers)[2])
    return wakeups


def run(
    host: str, port: int, data: bytes = SMALL, count: int = 50
) -> tuple[int, list[float], tuple[float, float]]:
    """Send ``data`` beside ``other_task``; return the bytes sent, the tick times, and when
    the send started and ended."""
    ticks: list[float] = []
    sent = [0.0, 0.0, 0.0]
    run_tasks([other_task(ticks, count), send_data_task(host, port, data, sent)])
    return int(sent[0]), ticks, (sent[1], sent[2])


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    sent, ticks, (start, end) = run(args.host, args.port, SMALL * 10)
    during = sum(start < tick < end for tick in ticks)
    print(f"sent {sent} bytes in {end - start:.3f} s; other_task ticked {during} times meanwhile")
