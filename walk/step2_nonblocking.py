"""Step 2: the same send, non-blocking. ``setblocking(False)`` makes ``send()`` return at
once with what the kernel could take right now, which for a big buffer is far less than
asked: the talk's ``AssertionError: 457816 != 73400320``.
"""

from __future__ import annotations

import socket

from . import BIG, arguments


def run(host: str, port: int, data: bytes = BIG) -> int:
    """Send ``data`` with one non-blocking ``send()``; return how many bytes it took."""
    with socket.create_connection((host, port)) as sock:
        sock.setblocking(False)
        return sock.send(data)  # a partial send: whatever fits in the kernel's buffers


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    sent = run(args.host, args.port)
    print(f"one non-blocking send() took {sent} of {len(BIG)} bytes")
