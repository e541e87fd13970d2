"""What a client's transfer comes to, as the client saw it, and how it fails: the result
every implementation returns, its errors, and their words for people (the same words in
every framework)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .accounting import SendAccount, process_usage
from .echo import Requests, latency_of
from .loopdelay import DelayStats
from .percentiles import Percentiles

__all__ = [
    "CloseTimeout",
    "SendFailed",
    "SendResult",
    "StallTimeout",
    "error_text",
    "signal_name",
    "stalls",
]


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
    latency: Percentiles | None = None  # each connection's connect-to-close
    #: Echo: every request's latency, and their histogram (base64, see common.echo).
    request_latency: Percentiles | None = None
    histogram: str | None = None
    #: TLS: what the handshake agreed ("TLSv1.3", "TLS_AES_256_GCM_SHA384").
    tls_version: str | None = None
    tls_cipher: str | None = None

    @classmethod
    def from_accounts(
        cls,
        accounts: list[SendAccount],
        loop_delay: DelayStats,
        requests: Sequence[Requests] = (),
    ) -> SendResult:
        """Sum the connections of one transfer, once every connection has closed (each
        client calls ``account.end()`` when its close completes; one that did not ends
        now). Every connection sent the same payload, so their digests must agree; an
        echo client's ``requests`` give the latency of every request."""
        now = time.monotonic()
        cpu_now, waits_now = process_usage()
        digests = {account.sha256 for account in accounts}
        if len(digests) > 1:
            raise SendFailed("connections sent different bytes", sum(a.bytes for a in accounts))
        sent = [a for a in accounts if a.first_byte_at is not None]
        tls = next((a.tls for a in accounts if a.tls is not None), (None, None))
        if not sent:
            return cls(
                0, digests.pop() if digests else None, 0.0, len(accounts), loop_delay,
                tls_version=tls[0], tls_cipher=tls[1],
            )  # fmt: skip
        request_latency, histogram = latency_of(requests) if requests else (None, None)
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
            latency=Percentiles.of_seconds([a.latency for a in accounts if a.latency is not None]),
            request_latency=request_latency,
            histogram=histogram,
            tls_version=tls[0],
            tls_cipher=tls[1],
        )


class CloseTimeout(TimeoutError):
    """The sink did not close within ``close_timeout`` of the last byte: it may not have
    every byte (it was never accepted, or it stalled)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no close from the sink within {seconds:g} s of the last byte")


class StallTimeout(TimeoutError):
    """No progress for ``stall_timeout`` seconds: the kernel took no byte (the peer stopped
    reading, or never accepted), or, in echo mode, no answer came."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no progress for {seconds:g} s: the peer took no byte")


@contextlib.contextmanager
def stalls(seconds: float) -> Iterator[None]:
    """A socket timeout inside is a stall: no byte taken, or, echoing, none come back, in
    ``seconds``. For clients whose sockets carry the stall timeout as their own timeout
    (blocking sockets, gevent, Eventlet)."""
    try:
        yield
    except TimeoutError:
        raise StallTimeout(seconds) from None


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


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``."""
    return signal.Signals(signum).name


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
    if isinstance(exc, CloseTimeout | StallTimeout):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):  # "certificate has expired", ...
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):  # "wrong version number": the peer speaks no TLS
        return f"TLS: {(exc.reason or exc.strerror or str(exc)).replace('_', ' ').lower()}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        # The C library's words for the errno, not the exception's own: asyncio, for one,
        # says "error while attempting to bind on address (...): address already in use".
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
