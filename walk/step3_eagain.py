"""Step 3: retry on EAGAIN. Keep calling ``send()`` with what is left; when the kernel's
buffer is full it raises ``BlockingIOError`` (EAGAIN) and we try again at once. Every byte
arrives, but the loop spins: most of its calls do nothing but fail.
"""

from __future__ import annotations

import socket

from . import SMALL, arguments


def run(host: str, port: int, data: bytes = SMALL) -> tuple[int, int]:
    """Send ``data`` retrying on EAGAIN; return the bytes sent and the number of retries."""
    view = memoryview(data)
    total = retries = 0
    with socket.create_connection((host, port)) as sock:
        sock.setblocking(False)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:  # EAGAIN: full; the talk's check of e.errno
                retries += 1
                continue  # ...and try again at once: a busy spin
            total += sent
            view = view[sent:]
    return total, retries


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    total, retries = run(args.host, args.port)
    print(f"sent {total} bytes after {retries} EAGAIN retries")
