"""Step 1: a blocking send. ``send()`` returns only once the kernel has taken every byte, so
the program waits, and can do nothing else, for as long as the receiver takes.

(The talk's run took 45 s because its server printed every line it received; a sink that
only counts takes well under a second.)
"""

from __future__ import annotations

import socket
import time

from . import BIG, arguments


def run(host: str, port: int, data: bytes = BIG) -> tuple[int, float]:
    """Send ``data`` with one blocking ``send()``; return the bytes it sent and the seconds."""
    with socket.create_connection((host, port)) as sock:
        started = time.monotonic()
        sent = sock.send(data)  # blocks until the kernel took all of it (on Linux, TCP)
        return sent, time.monotonic() - started


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    sent, seconds = run(args.host, args.port)
    print(f"sent {sent} of {len(BIG)} bytes in one blocking send(), {seconds:.3f} s")
