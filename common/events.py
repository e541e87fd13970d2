"""The records that servers and clients report, and their JSON and one-line text forms.

Every ``--json`` line of ``nbio serve`` and ``nbio send`` is one of these, via
:func:`to_json`, and reads back as the same typed record with :func:`from_json` (as h11's
events go both ways): what reads a stored report reads attributes that mypy checks, never
a dictionary's keys.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .loopdelay import DelayStats
from .percentiles import Percentiles
from .sizes import human_size

__all__ = [
    "ABORTED",
    "EOF",
    "ERROR",
    "MAX_CONNECTIONS",
    "RESET",
    "TIMEOUT",
    "TLS_FAILED",
    "TRUNCATED",
    "AcceptPaused",
    "AcceptResumed",
    "Error",
    "Event",
    "Listening",
    "Received",
    "Rejected",
    "Sent",
    "Stopped",
    "describe",
    "format_peer",
    "from_json",
    "to_json",
]

# How a sink connection ended.
EOF = "eof"  # the client closed cleanly: every byte it sent is counted
RESET = "reset"  # the client reset the connection (RST)
TIMEOUT = "timeout"  # the client sent nothing for too long
ABORTED = "aborted"  # the server shut down before the client finished
ERROR = "error"  # any other socket error
#: TLS: the connection ended without the peer's close_notify, so what came may be cut
#: short by anyone who can send a FIN (a truncation attack): never counted as ``eof``.
TRUNCATED = "truncated"

# Why a connection was rejected.
MAX_CONNECTIONS = "max connections"  # --max-connections were open
TLS_FAILED = "TLS handshake failed"  # the peer spoke no TLS, or not ours


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds / 1e6:.1f} MB/s" if seconds > 0 else "- MB/s"


def format_peer(address: object) -> str:
    """Return ``host:port`` for a socket address tuple (``[host]:port`` for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


E = TypeVar("E", bound="_Readable")


class _Readable:
    """Reads an event back from the JSON :func:`to_json` wrote: a field missing from an
    older report takes its default."""

    @classmethod
    def from_json(cls: type[E], data: Mapping[str, Any]) -> E:
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
            if spec.name == "loop_delay":
                values[spec.name] = DelayStats.from_json(data)
            elif spec.name in _DISTRIBUTIONS:
                values[spec.name] = Percentiles.from_json(
                    data.get(f"{spec.name}_ms"), int(data.get(f"{spec.name}_count") or 0)
                )
            elif spec.name in data:
                values[spec.name] = data[spec.name]
        return cls(**values)


@dataclass(frozen=True)
class Listening(_Readable):
    """The server is accepting connections on ``host:port`` (``port`` is the real one), and
    the settings it serves with: ``digest`` is what its sink hashes, ``tune`` the knobs set
    with ``--tune``. ``rss_kib`` is its resident size now (after imports, with its loop and
    listener), the baseline its memory growth is measured from."""

    event: ClassVar[str] = "listening"
    impl: str
    loop: str
    host: str
    port: int
    loop_impl: str = ""
    digest: str = "none"
    tune: dict[str, int] = field(default_factory=dict)
    rss_kib: int = 0
    mode: str = "sink"  # or "echo"
    tls: bool = False
    #: With a throwaway certificate (``serve --tls`` without files): the CA that signed it,
    #: for ``send --ca``.
    tls_ca: str | None = None

    def text(self) -> str:
        tls = " over TLS" + (f" (CA {self.tls_ca})" if self.tls_ca else "") if self.tls else ""
        echo = ", echoing" if self.mode == "echo" else ""
        return (
            f"{self.impl} listening on {self.host}:{self.port} ({self.loop} loop: "
            f"{self.loop_impl}){echo}{tls}"
        )


@dataclass(frozen=True)
class Received(_Readable):
    """One sink connection ended, with everything it delivered.

    ``first_byte_at`` and ``ended_at`` are ``time.monotonic()`` seconds (one clock for every
    process of the machine), ``cpu_at_first_byte`` and ``cpu_at_end`` the process's CPU
    seconds then, ``waits_at_first_byte`` and ``waits_at_end`` its voluntary context
    switches then (the times it went to sleep); None before a first byte."""

    event: ClassVar[str] = "received"
    peer: str
    bytes: int
    sha256: str | None
    seconds: float
    outcome: str
    loop_delay: DelayStats
    first_byte_at: float | None = None
    ended_at: float | None = None
    cpu_at_first_byte: float | None = None
    cpu_at_end: float | None = None
    waits_at_first_byte: int | None = None
    waits_at_end: int | None = None
    reads: int = 0  # the reads that brought its bytes, as the framework handed them over
    bytes_out: int | None = None  # echo mode: the bytes written back
    tls_version: str | None = None  # TLS: what the handshake agreed ("TLSv1.3")
    tls_cipher: str | None = None

    def text(self) -> str:
        digest = f" sha256 {self.sha256}" if self.sha256 else ""
        echoed = "" if self.bytes_out is None else f", {self.bytes_out} echoed"
        return (
            f"{self.peer}: {self.outcome}, {self.bytes} bytes ({human_size(self.bytes)}) in "
            f"{self.seconds:.3f} s, {_rate(self.bytes, self.seconds)}{echoed}{digest}"
        )


@dataclass(frozen=True)
class Rejected(_Readable):
    """A connection was closed at once, with a reset: ``reason`` says why (``--max-connections``
    were already open, or the process could not take it: no descriptor, no thread)."""

    event: ClassVar[str] = "rejected"
    peer: str
    open: int
    reason: str = MAX_CONNECTIONS

    def text(self) -> str:
        return f"{self.peer}: rejected ({self.reason}), {self.open} connections open"


@dataclass(frozen=True)
class AcceptPaused(_Readable):
    """The server could not accept (out of descriptors, memory or threads) and stopped
    trying for ``retry_in`` seconds; said once per episode, however often it fails."""

    event: ClassVar[str] = "accept_paused"
    reason: str
    open: int
    retry_in: float

    def text(self) -> str:
        return (
            f"accepting paused: {self.reason} with {self.open} connections open; "
            f"retrying in {self.retry_in:g} s"
        )


@dataclass(frozen=True)
class AcceptResumed(_Readable):
    """The server accepted a connection again after an :class:`AcceptPaused` episode."""

    event: ClassVar[str] = "accept_resumed"
    paused_s: float
    failures: int  # accept attempts that failed in the episode

    def text(self) -> str:
        return f"accepting again after {self.paused_s:.1f} s ({self.failures} failed attempts)"


@dataclass(frozen=True)
class Stopped(_Readable):
    """The server shut down; its totals are the sums of its ``received`` events.

    The span of every connection it served: ``first_byte_at`` is the earliest first byte
    and ``ended_at`` the latest end (``time.monotonic()``), with the process's CPU seconds
    and voluntary context switches at each; ``loop_delay`` is the delay over its busiest
    period (the longest stretch with a connection open). A run of thousands of connections
    is measured from these, without keeping a ``received`` event per connection."""

    event: ClassVar[str] = "stopped"
    connections: int
    bytes: int
    outcomes: dict[str, int] = field(default_factory=dict)
    rejected: int = 0  # connections refused by --max-connections, not in the totals above
    peak_rss_kib: int | None = None  # None: not measured (a module run on its own)
    cpu_s: float | None = None  # CPU seconds from listening to stopped, idle time included
    first_byte_at: float | None = None
    ended_at: float | None = None
    cpu_at_first_byte: float | None = None
    cpu_at_end: float | None = None
    waits_at_first_byte: int | None = None
    waits_at_end: int | None = None
    loop_delay: DelayStats = field(default_factory=lambda: DelayStats(ticks=0))
    reads: int = 0  # the sum of its connections' reads
    bytes_out: int | None = None  # echo mode: the sum of what its connections wrote back
    #: Events that could not be written (stdout not read, past the bound held): see
    #: ``accept_paused`` with reason "output not read".
    dropped_events: int = 0

    def text(self) -> str:
        outcomes = ", ".join(f"{count} {name}" for name, count in sorted(self.outcomes.items()))
        usage = []
        if self.peak_rss_kib is not None:
            usage.append(f"peak RSS {self.peak_rss_kib / 1024:.1f} MiB")
        if self.cpu_s is not None:
            usage.append(f"CPU {self.cpu_s:.2f} s")
        return (
            f"stopped: {self.connections} connections, {self.bytes} bytes "
            f"({outcomes or 'none'}), {self.rejected} rejected"
            + (f"; {', '.join(usage)}" if usage else "")
        )


@dataclass(frozen=True)
class Sent(_Readable):
    """Every connection of a client finished: all bytes handed to the kernel, all closed.

    ``seconds``, ``cpu_s`` and ``waits`` (voluntary context switches: the times the process
    went to sleep) span the same time, from the first write (after start-up, imports and the
    loop's creation) to the last close; ``first_byte_at`` and ``ended_at`` are those two
    moments on ``time.monotonic()``. ``digest``, ``chunk_size`` and ``tune``
    are the settings the client ran with, and ``chunks`` how many chunks it handed to its
    framework (``ceil(size / chunk_size)`` per connection). ``rss_kib`` is its resident size
    after imports, before the loop existed: the baseline of its memory growth."""

    event: ClassVar[str] = "sent"
    bytes: int
    sha256: str | None
    seconds: float
    connections: int
    loop_delay: DelayStats
    digest: str = "none"
    chunk_size: int = 0
    chunks: int = 0
    tune: dict[str, int] = field(default_factory=dict)
    first_byte_at: float | None = None
    ended_at: float | None = None
    cpu_s: float = 0.0
    waits: int = 0
    rss_kib: int = 0
    peak_rss_kib: int = 0
    concurrency: int | None = None  # at most this many connections at once; None: all
    latency: Percentiles | None = None  # connect to the sink's close, per connection (ms)
    duration: float | None = None  # each connection sent for this long (--duration)
    mode: str = "sink"  # or "echo": requests and their answers
    tls_version: str | None = None  # TLS: what the handshake agreed ("TLSv1.3")
    tls_cipher: str | None = None
    #: Echo: each request's message size and how many, per connection; the rate it was
    #: paced at (open loop), or None (closed loop: each waits for the answer before).
    message_size: int | None = None
    requests: int | None = None
    rate: float | None = None
    #: Echo: every answered request's latency (ms), from its send, or from its scheduled
    #: time with a rate; the requests answered per second over the span; and the whole
    #: HdrHistogram of latencies in µs (its base64 encoding), to merge or read again.
    request_latency: Percentiles | None = None
    requests_per_s: float | None = None
    histogram: str | None = None

    def text(self) -> str:
        digest = f" sha256 {self.sha256}" if self.sha256 else ""
        if self.request_latency is not None:
            lat = self.request_latency
            return (
                f"{lat.count} requests of {self.message_size} bytes over {self.connections} "
                f"connection(s) in {self.seconds:.3f} s, {self.requests_per_s or 0:.0f}/s; "
                f"latency ms p50 {lat.p50_ms} p99 {lat.p99_ms} p99.9 {lat.p999_ms} max "
                f"{lat.max_ms}; loop delay {self.loop_delay.text()}"
            )
        return (
            f"sent {self.bytes} bytes ({human_size(self.bytes)}) over {self.connections} "
            f"connection(s) in {self.seconds:.3f} s, {_rate(self.bytes, self.seconds)}; "
            f"loop delay {self.loop_delay.text()}; "
            f"peak RSS {self.peak_rss_kib / 1024:.1f} MiB, CPU {self.cpu_s:.2f} s{digest}"
        )


@dataclass(frozen=True)
class Error(_Readable):
    """A client failed; ``bytes`` is how many went out to the kernel before it did."""

    event: ClassVar[str] = "error"
    message: str
    bytes: int

    def text(self) -> str:
        return f"error: {self.message} ({self.bytes} bytes sent)"


Event = Listening | Received | Rejected | AcceptPaused | AcceptResumed | Stopped | Sent | Error


#: Fields that hold :class:`Percentiles` or None: ``NAME_ms`` and ``NAME_count`` either way.
_DISTRIBUTIONS = frozenset({"latency", "request_latency"})
#: Every event by its ``"event"`` name.
EVENTS: dict[str, type[Event]] = {
    kind.event: kind
    for kind in (Listening, Received, Rejected, AcceptPaused, AcceptResumed, Stopped, Sent, Error)
}


def to_json(event: Event) -> str:
    """Return ``event`` as one line of JSON, its ``"event"`` name first."""
    data: dict[str, object] = {"event": event.event}
    for name, value in vars(event).items():
        if isinstance(value, DelayStats) and name == "loop_delay":
            data["loop_delay_ms"] = value.to_json()
            data["ticks"] = value.ticks
            data["early_ticks"] = value.early
        elif name in _DISTRIBUTIONS:  # latency, say
            data[f"{name}_ms"] = value.to_json() if value is not None else None
            data[f"{name}_count"] = value.count if value is not None else 0
        elif isinstance(value, float):
            data[name] = round(value, 6)
        else:
            data[name] = value
    return json.dumps(data)


def from_json(data: Mapping[str, Any]) -> Event:
    """The event a line of :func:`to_json` holds, typed; ValueError if it is none."""
    kind = EVENTS.get(str(data.get("event")))
    if kind is None:
        raise ValueError(f"not an nbio event: {data.get('event')!r}")
    return kind.from_json(data)


def describe(event: Event) -> str:
    """Return ``event`` as one short line for people."""
    return event.text()
