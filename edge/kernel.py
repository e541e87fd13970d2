"""What the kernel can tell or do for us on a live TCP socket: how many bytes it took from
us (``TCP_INFO`` and ``SIOCOUTQ``), and a close that resets instead of ending cleanly."""

from __future__ import annotations

import socket
import struct
import sys
from typing import Protocol

__all__ = ["RESET_LINGER", "TcpSocket", "kernel_took"]

#: ``SO_LINGER`` on, 0 s: ``close()`` then sends a reset, not a FIN. Servers reject with it,
#: so a refused client fails however little it sent.
RESET_LINGER = struct.pack("ii", 1, 0)
#: Where ``tcpi_bytes_acked`` sits in Linux's ``struct tcp_info`` (since Linux 4.1).
_TCPI_BYTES_ACKED = 120


class TcpSocket(Protocol):
    """What :func:`kernel_took` asks of a socket: a stdlib socket, gevent's, trio's."""

    def fileno(self) -> int: ...
    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes: ...


def kernel_took(sock: TcpSocket) -> int | None:
    """How many bytes the kernel has taken from us on the TCP socket ``sock``: those the
    peer acknowledged (``tcpi_bytes_acked``, less one for the SYN) plus those still queued
    (``SIOCOUTQ``). None off Linux, or if the socket cannot say (closed, say).

    A ``sendall`` that fails or is interrupted does not say how much of its chunk went out:
    the kernel does."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl
    import termios

    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # = SIOCOUTQ
    except (OSError, ValueError):
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    acked = int(struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0])
    return max(0, acked - 1) + int(struct.unpack("i", queued)[0])
