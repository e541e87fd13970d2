"""Step 4: wait for writability. After a short send, ``select()`` sleeps until the kernel
can take more; the process uses no CPU while it waits, and wakes far less often than
step 3 retried. It still waits for one socket only: nothing else can run meanwhile.
"""

from __future__ import annotations

import select
import socket

from . import SMALL, arguments


def run(host: str, port: int, data: bytes = SMALL) -> tuple[int, int]:
    """Send ``data``, waiting in select() when full; return the bytes sent and the wake-ups."""
    view = memoryview(data)
    total = wakeups = 0
    with socket.create_connection((host, port)) as sock:
        sock.setblocking(False)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                sent = 0
            total += sent
            view = view[sent:]
            if view:
                select.select([], [sock], [])  # blocks until writable: no spin
                wakeups += 1
    return total, wakeups


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    total, wakeups = run(args.host, args.port)
    print(f"sent {total} bytes, woken by select() {wakeups} times")
