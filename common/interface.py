"""The interface every implementation satisfies, and the options and results it speaks.

An implementation is a server module with ``serve`` and a client module with ``send``
(see :mod:`common.registry`). Both run their framework's loop until done, in this process.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.accounting import SendAccount
from common.events import Event
from common.loopdelay import DelayStats, LoopDelay
from common.payload import DEFAULT_CHUNK_SIZE, Payload
from common.sink import Sink

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "Client",
    "Emit",
    "Implementation",
    "Progress",
    "SendFailed",
    "SendOptions",
    "SendResult",
    "ServeOptions",
    "Server",
    "describe_error",
    "format_peer",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
#: Seconds a stopping server gives in-flight transfers before it aborts them.
DEFAULT_GRACE = 5.0
#: Connections a server holds at once before it refuses more.
DEFAULT_MAX_CONNECTIONS = 4096

Emit = Callable[[Event], None]
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

    def sink(self, delay: LoopDelay, emit: Emit) -> Sink:
        """The framework-free state of a server with these options."""
        return Sink(self.digest, delay, emit, self.max_connections, self.idle_timeout)


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


@dataclass(frozen=True)
class SendResult:
    """A client's finished transfer, as the client saw it."""

    bytes: int
    sha256: str | None
    seconds: float
    connections: int
    loop_delay: DelayStats

    @classmethod
    def from_accounts(
        cls, accounts: list[SendAccount], seconds: float, loop_delay: DelayStats
    ) -> SendResult:
        """Sum the connections of one transfer; every connection sent the same payload, so
        their digests must agree."""
        digests = {account.sha256 for account in accounts}
        if len(digests) > 1:
            raise SendFailed("connections sent different bytes", sum(a.bytes for a in accounts))
        return cls(
            bytes=sum(account.bytes for account in accounts),
            sha256=digests.pop() if digests else None,
            seconds=seconds,
            connections=len(accounts),
            loop_delay=loop_delay,
        )


class SendFailed(Exception):
    """A transfer failed; ``bytes_sent`` went out to the kernel before it did."""

    def __init__(self, message: str, bytes_sent: int) -> None:
        super().__init__(message)
        self.message = message
        self.bytes_sent = bytes_sent


@runtime_checkable
class Server(Protocol):
    """A sink server: listens, counts every byte until EOF, reports each connection."""

    def serve(self, options: ServeOptions, emit: Emit) -> None:
        """Serve until SIGINT or SIGTERM, emitting ``listening``, ``received``, ``stopped``.

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


def describe_error(exc: BaseException) -> str:
    """Return a short message for a socket error, the same words in every framework."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by peer (broken pipe)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return (exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno))).lower()
    return str(exc) or type(exc).__name__


def format_peer(address: object) -> str:
    """Return ``host:port`` for a socket address tuple (``[host]:port`` for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
