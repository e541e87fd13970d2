"""The interface every implementation satisfies, and the options and results it speaks.

An implementation is a server module with ``serve`` and a client module with ``send``
(see :mod:`nbio.registry`). Both run their framework's loop until done, in this process.
"""

from __future__ import annotations

import errno
import math
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, overload, runtime_checkable

from .accounting import SendAccount, process_usage
from .events import Event, Listening
from .loopdelay import MIN_TICKS_FOR_P99, DelayStats, LoopDelay
from .payload import DEFAULT_CHUNK_SIZE, Payload
from .sink import Sink

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "RESET_LINGER",
    "Client",
    "CloseTimeout",
    "Emit",
    "Implementation",
    "Progress",
    "SendFailed",
    "SendOptions",
    "SendResult",
    "ServeOptions",
    "Server",
    "at_once",
    "error_text",
    "format_peer",
    "kernel_took",
    "latency_stats",
    "signal_name",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
#: Seconds a stopping server gives in-flight transfers before it aborts them.
DEFAULT_GRACE = 5.0
#: Connections a server holds at once before it refuses more.
DEFAULT_MAX_CONNECTIONS = 4096
#: Seconds a client waits, after its last byte and its half-close, for the sink to close in
#: turn (which a sink does only once it has read everything, up to the EOF): until then a
#: transfer is not ``sent``.
CLOSE_TIMEOUT = 30.0
#: ``SO_LINGER`` on, 0 s: ``close()`` then sends a reset, not a FIN. Servers reject with it,
#: so a refused client fails however little it sent.
RESET_LINGER = struct.pack("ii", 1, 0)

Emit = Callable[[Event], None]
S = TypeVar("S", bound=Sink)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ServeOptions:
    """What ``nbio serve`` asks of a server."""

    impl: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    loop: str = "default"
    digest: str = "none"
    grace: float = DEFAULT_GRACE
    idle_timeout: float | None = None  # close a connection silent for this long
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS
    tune: tuple[tuple[str, int], ...] = ()  # knobs the CLI set before serving (--tune)

    @overload
    def sink(self, delay: LoopDelay, emit: Emit) -> Sink: ...

    @overload
    def sink(self, delay: LoopDelay, emit: Emit, kind: type[S]) -> S: ...

    def sink(self, delay: LoopDelay, emit: Emit, kind: type[Sink] = Sink) -> Sink:
        """The framework-free state of a server with these options (a ``kind`` of Sink)."""
        return kind(self.digest, delay, emit, self.max_connections, self.idle_timeout)

    def listening(self, port: int, loop_impl: str) -> Listening:
        """The ``listening`` event of a server with these options, on ``port``."""
        return Listening(
            self.impl, self.loop, self.host, port, loop_impl, self.digest, dict(self.tune)
        )


def at_once(connections: int, concurrency: int | None) -> int:
    """How many of ``connections`` run at once: ``concurrency`` (None: all), at most all."""
    return connections if concurrency is None else min(concurrency, connections)


@dataclass(frozen=True)
class SendOptions:
    """What ``nbio send`` asks of a client: ``connections`` streams, each the whole payload."""

    payload: Payload
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    loop: str = "default"
    connections: int = 1
    digest: str = "none"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    close_timeout: float = CLOSE_TIMEOUT
    #: At most this many connections open at once (each starts when one ends); None: all.
    concurrency: int | None = None

    @property
    def at_once(self) -> int:
        """How many connections run at once: ``concurrency``, at most ``connections``."""
        return at_once(self.connections, self.concurrency)


@dataclass(frozen=True)
class SendResult:
    """A client's finished transfer, as the client saw it, from its first write to its
    last close (``time.monotonic()`` seconds, and process CPU seconds over that span)."""

    bytes: int
    sha256: str | None
    seconds: float
    connections: int
    loop_delay: DelayStats
    first_byte_at: float | None = None
    ended_at: float | None = None
    cpu_s: float = 0.0
    waits: int = 0  # voluntary context switches over that span: the times it slept
    latency: DelayStats | None = None  # each connection's connect-to-close, as percentiles

    @classmethod
    def from_accounts(cls, accounts: list[SendAccount], loop_delay: DelayStats) -> SendResult:
        """Sum the connections of one transfer, once every connection has closed (each
        client calls ``account.end()`` when its close completes; one that did not ends
        now). Every connection sent the same payload, so their digests must agree."""
        now = time.monotonic()
        cpu_now, waits_now = process_usage()
        digests = {account.sha256 for account in accounts}
        if len(digests) > 1:
            raise SendFailed("connections sent different bytes", sum(a.bytes for a in accounts))
        sent = [a for a in accounts if a.first_byte_at is not None]
        if not sent:
            return cls(0, digests.pop() if digests else None, 0.0, len(accounts), loop_delay)
        first_byte_at = min(a.first_byte_at for a in sent if a.first_byte_at is not None)
        ended_at = max(now if a.ended_at is None else a.ended_at for a in sent)
        cpu_start = min(a.cpu_at_first_byte for a in sent if a.cpu_at_first_byte is not None)
        cpu_end = max(cpu_now if a.cpu_at_end is None else a.cpu_at_end for a in sent)
        waits_start = min(a.waits_at_first_byte for a in sent if a.waits_at_first_byte is not None)
        waits_end = max(waits_now if a.waits_at_end is None else a.waits_at_end for a in sent)
        return cls(
            bytes=sum(account.bytes for account in accounts),
            sha256=digests.pop() if digests else None,
            seconds=ended_at - first_byte_at,
            connections=len(accounts),
            loop_delay=loop_delay,
            first_byte_at=first_byte_at,
            ended_at=ended_at,
            cpu_s=cpu_end - cpu_start,
            waits=waits_end - waits_start,
            latency=latency_stats([a.latency for a in accounts if a.latency is not None]),
        )


class CloseTimeout(TimeoutError):
    """The sink did not close within ``close_timeout`` of the last byte: it may not have
    every byte (it was never accepted, or it stalled)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no close from the sink within {seconds:g} s of the last byte")


class SendFailed(Exception):
    """A transfer failed; ``bytes_sent`` went out to the kernel before it did. ``signal``
    is the signal that interrupted it, if one did."""

    def __init__(self, message: str, bytes_sent: int, signal: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.bytes_sent = bytes_sent
        self.signal = signal

    @classmethod
    def interrupted(cls, signum: int, bytes_sent: int) -> SendFailed:
        """The transfer was stopped by SIGINT or SIGTERM."""
        return cls(f"interrupted by {signal_name(signum)}", bytes_sent, signum)


def latency_stats(seconds: list[float]) -> DelayStats | None:
    """Connection latencies as ``DelayStats`` in milliseconds (p50, p99, max over
    ``ticks`` connections; no p99 with fewer than 100, as for the loop delay)."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def rank(fraction: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

    return DelayStats(
        ticks=len(ordered),
        p50_ms=rank(0.50) * 1000,
        p99_ms=rank(0.99) * 1000 if len(ordered) >= MIN_TICKS_FOR_P99 else None,
        max_ms=ordered[-1] * 1000,
    )


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``."""
    return signal.Signals(signum).name


@runtime_checkable
class Server(Protocol):
    """A sink server: listens, counts every byte until EOF, reports each connection."""

    def serve(self, options: ServeOptions, emit: Emit) -> int:
        """Serve until SIGINT or SIGTERM, emitting ``listening``, ``received``, ``stopped``;
        return the number of the signal that stopped it.

        Raises OSError if it cannot listen.
        """


@runtime_checkable
class Client(Protocol):
    """A large-payload client: streams the payload with backpressure, then closes."""

    def send(self, options: SendOptions, progress: Progress) -> SendResult:
        """Send the payload on every connection; raise :class:`SendFailed` on any failure."""


@runtime_checkable
class Implementation(Server, Client, Protocol):
    """One framework's server and client, as the registry loads them."""

    name: str


def error_text(exc: BaseException) -> str:
    """Return a short message for a socket error, the same words in every framework."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by peer (broken pipe)"
    if isinstance(exc, CloseTimeout):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return (exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno))).lower()
    return str(exc) or type(exc).__name__


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


def format_peer(address: object) -> str:
    """Return ``host:port`` for a socket address tuple (``[host]:port`` for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
