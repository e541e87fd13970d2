"""One transfer as nbio measures it: who ran it (:class:`Target`), what it sent
(:class:`Settings`), and what both processes reported (:class:`Transfer`, their typed
events), with the figures those events give and the check that they are a clean, exact
transfer of what was asked.

Every figure comes from the processes' own events: the server measures the wall span of
its connections (its ``stopped`` event spans every one), each process its own CPU, waits,
memory and loop delay. :mod:`nbio.bench` runs transfers; :mod:`nbio.report` reduces them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .common.events import Listening, Received, Sent, Stopped, to_json
from .common.loopdelay import DelayStats
from .common.options import Echo, ServerTls, at_once
from .common.payload import DEFAULT_CHUNK_SIZE

__all__ = [
    "GIB",
    "KEEP_RECEIVED",
    "REFERENCE",
    "UNCOUNTED",
    "Settings",
    "Target",
    "Transfer",
    "TransferFailed",
    "check",
    "checked",
]

GIB = 1024**3
#: ``received`` events a stored transfer keeps (the first ones); beyond that the server's
#: ``stopped`` event, which spans every connection, carries its figures.
KEEP_RECEIVED = 16
#: The reference at the limit: plain sockets, no accounting (see :mod:`nbio.reference`).
REFERENCE = "reference"
#: Servers that say nothing of what they read (sockperf's): only the client's counts hold.
UNCOUNTED = frozenset({"sockperf"})


class TransferFailed(Exception):
    """A process failed or reported something other than a clean, exact transfer."""


@dataclass(frozen=True)
class Target:
    """One implementation on one loop, with the knobs (``--tune``) set in its processes;
    its client is its own unless ``client`` names another (the echo workload's neutral
    view: every server against the plain-socket reference client)."""

    impl: str
    loop: str = "default"
    tune: tuple[tuple[str, int], ...] = ()
    client: str | None = None

    @property
    def id(self) -> str:
        """``asyncio-streams``, ``twisted (poll)``, ``twisted (SEND_LIMIT=1048576)``,
        ``trio (reference client)``."""
        details = [] if self.loop == "default" else [self.loop]
        details += [f"{path.rsplit('.', 1)[-1]}={value}" for path, value in self.tune]
        details += [] if self.client is None else [f"{self.client} client"]
        return f"{self.impl} ({', '.join(details)})" if details else self.impl

    @property
    def server_side(self) -> Target:
        """The process that serves: this implementation on its loop, its knobs set."""
        return Target(self.impl, self.loop, self.tune)

    @property
    def client_side(self) -> Target:
        """The process that sends: this one, or the other client it names."""
        return self.server_side if self.client is None else Target(self.client)

    def to_json(self) -> dict[str, Any]:
        data = {"impl": self.impl, "loop": self.loop, "tune": dict(self.tune)}
        return data | ({} if self.client is None else {"client": self.client})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        tune = tuple(data.get("tune", {}).items())
        return cls(data["impl"], data["loop"], tune, data.get("client"))


@dataclass(frozen=True)
class Settings:
    """What every transfer of a run sends: the client's settings, and the sink's digest."""

    size: int
    connections: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    digest: str = "none"
    concurrency: int | None = None  # at most this many connections at once; None: all
    #: Each connection sends for this long, ``size`` capping it; None: ``size`` bytes each.
    duration: float | None = None
    #: Request and response: the server echoes, the client sends these requests.
    echo: Echo | None = None
    #: TLS, with these files: the server's certificate and key, the CA the client trusts.
    tls: ServerTls | None = None
    #: Another client run beside the measured one, on its own connection to the same
    #: server (``echo-under-load``: a bulk echo while small requests are timed); the
    #: measured client also runs alone first, on an idle server, to compare.
    beside: Settings | None = None

    def serve_args(self) -> list[str]:
        """These settings as ``nbio serve`` options."""
        args = ["--digest", self.digest] + (["--mode", "echo"] if self.echo else [])
        if self.tls is not None:
            args += ["--cert", self.tls.certfile, "--key", self.tls.keyfile]
        return args

    def send_args(self) -> list[str]:
        """These settings as ``nbio send`` options."""
        if self.echo is not None:
            return self._echo_args()
        args = [
            "--size",
            str(self.size),
            "--connections",
            str(self.connections),
            "--chunk-size",
            str(self.chunk_size),
            "--digest",
            self.digest,
        ]
        if self.concurrency is not None:
            args += ["--concurrency", str(self.concurrency)]
        return args + self._common_args()

    def _echo_args(self) -> list[str]:
        assert self.echo is not None
        echo = self.echo
        args = ["--mode", "echo", "--message-size", str(echo.message_size)]
        args += ["--requests", str(echo.requests), "--connections", str(self.connections)]
        args += ["--digest", self.digest]
        args += [] if echo.rate is None else ["--rate", repr(echo.rate)]
        return args + self._common_args()

    def _common_args(self) -> list[str]:
        args = [] if self.duration is None else ["--duration", repr(self.duration)]
        return args + (
            [] if self.tls is None or self.tls.cafile is None else ["--ca", self.tls.cafile]
        )

    @property
    def at_once(self) -> int:
        """How many connections each transfer has open at once."""
        return at_once(self.connections, self.concurrency)


def _event_json(event: Listening | Sent | Received | Stopped) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(to_json(event))
    return data


@dataclass(frozen=True)
class Transfer:
    """One client-to-server transfer: every event both processes printed, typed."""

    listening: Listening
    sent: Sent
    received: list[Received] = field(default_factory=list)
    stopped: Stopped = field(default_factory=lambda: Stopped(connections=0, bytes=0))
    #: With ``strace``: each process's system calls by name, ``{"client": {"sendto": 9}}``.
    syscalls: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How many ``received`` events the server printed (a stored transfer keeps the first
    #: :data:`KEEP_RECEIVED`).
    received_count: int | None = None
    #: What an outside tool that ran the transfer said of it, whole (iperf3's ``-J``).
    tool: dict[str, Any] | None = None
    #: With ``Settings.beside``: the same client alone on the idle server first, and the
    #: client that ran beside the measured one.
    idle: Sent | None = None
    beside: Sent | None = None

    def to_json(self) -> dict[str, Any]:
        """Every event, but only the first :data:`KEEP_RECEIVED` ``received`` events: a run
        of 10,000 connections is measured from ``stopped``, which spans them all."""
        data: dict[str, Any] = {
            "listening": _event_json(self.listening),
            "sent": _event_json(self.sent),
            "received": [_event_json(r) for r in self.received[:KEEP_RECEIVED]],
            "received_count": len(self.received)
            if self.received_count is None
            else self.received_count,
            "stopped": _event_json(self.stopped),
        }
        data |= {"syscalls": self.syscalls} if self.syscalls else {}
        data |= {"idle": _event_json(self.idle)} if self.idle is not None else {}
        data |= {"beside": _event_json(self.beside)} if self.beside is not None else {}
        return data | ({"tool": self.tool} if self.tool is not None else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        received = [Received.from_json(r) for r in data["received"]]
        stopped = Stopped.from_json(data["stopped"])
        if stopped.first_byte_at is None and received:
            stopped = _spanned(stopped, received)
        return cls(
            Listening.from_json(data["listening"]),
            Sent.from_json(data["sent"]),
            received,
            stopped,
            dict(data.get("syscalls", {})),
            data.get("received_count"),
            data.get("tool"),
            Sent.from_json(data["idle"]) if data.get("idle") else None,
            Sent.from_json(data["beside"]) if data.get("beside") else None,
        )

    @property
    def server_bytes(self) -> int:
        """Every byte the server counted."""
        return self.stopped.bytes

    @property
    def server_connections(self) -> int:
        """Connections the server served to their end."""
        return self.stopped.connections

    @property
    def server_seconds(self) -> float:
        """The wall span the server saw: earliest first byte to latest end, over every
        connection (``time.monotonic()``, one clock for the whole machine)."""
        first, last = self.stopped.first_byte_at, self.stopped.ended_at
        return last - first if first is not None and last is not None else 0.0

    @property
    def server_mb_per_s(self) -> float:
        """Server-measured throughput: every byte over the wall span."""
        seconds = self.server_seconds
        return self.server_bytes / seconds / 1e6 if seconds > 0 else 0.0

    @property
    def server_cpu_s(self) -> float:
        """The server's CPU seconds over that same span."""
        first, last = self.stopped.cpu_at_first_byte, self.stopped.cpu_at_end
        return last - first if first is not None and last is not None else 0.0

    @property
    def server_waits(self) -> int:
        """The server's voluntary context switches over that span."""
        first, last = self.stopped.waits_at_first_byte, self.stopped.waits_at_end
        return last - first if first is not None and last is not None else 0

    @property
    def server_delay(self) -> DelayStats:
        """The server's loop delay over its busiest period."""
        return self.stopped.loop_delay


def _spanned(stopped: Stopped, received: list[Received]) -> Stopped:
    """A ``stopped`` event of a report stored before ``stopped`` spanned every connection
    (format 2, and the plain-socket reference until format 4), given that span from its
    ``received`` events, as every ``stopped`` event now carries it: the earliest first
    byte, the latest end, the usage at each, and the loop delay of the connection that saw
    the most ticks (the longest span)."""
    ended = [r for r in received if r.first_byte_at is not None and r.ended_at is not None]
    if not ended:
        return stopped
    first = min(ended, key=lambda r: r.first_byte_at or 0.0)
    last = max(ended, key=lambda r: r.ended_at or 0.0)
    busiest = max(received, key=lambda r: r.loop_delay.ticks)
    return dataclasses.replace(
        stopped,
        bytes=sum(r.bytes for r in received),
        first_byte_at=first.first_byte_at,
        ended_at=last.ended_at,
        cpu_at_first_byte=min(r.cpu_at_first_byte or 0.0 for r in ended),
        cpu_at_end=max(r.cpu_at_end or 0.0 for r in ended),
        waits_at_first_byte=min(r.waits_at_first_byte or 0 for r in ended),
        waits_at_end=max(r.waits_at_end or 0 for r in ended),
        loop_delay=busiest.loop_delay,
    )


def checked(transfer: Transfer, settings: Settings) -> Transfer:
    """``transfer``, if :func:`check` finds nothing wrong with it; else TransferFailed."""
    problems = check(transfer, settings)
    if problems:
        raise TransferFailed("; ".join(problems))
    return transfer


def check(transfer: Transfer, settings: Settings) -> list[str]:
    """What is wrong with a transfer run with ``settings``: nothing, for a clean one."""
    sent, listening, received = transfer.sent, transfer.listening, transfer.received
    problems = []
    # The settings, as each process says it ran (the reference hashes nothing, says no digest).
    # An echo client writes whole messages: its chunk is the message (--chunk-size does not
    # act there), so the message size is what it must say it ran.
    chunk = (
        ("client message size", sent.message_size, settings.echo.message_size)
        if settings.echo is not None
        else ("client chunk size", sent.chunk_size, settings.chunk_size)
    )
    ran: list[tuple[str, object, object]] = [
        ("client digest", sent.digest, settings.digest),
        chunk,
        ("client concurrency", sent.concurrency, settings.concurrency),
        ("client duration", sent.duration, settings.duration),
        ("server digest", listening.digest, settings.digest),
    ]
    problems += [
        f"{what} {got!r} ran, {asked!r} was asked" for what, got, asked in ran if got != asked
    ]
    counted = sum(r.bytes for r in received)
    if listening.impl in UNCOUNTED:
        return problems + ([] if sent.bytes > 0 else ["the client sent nothing"])
    if settings.echo is not None:
        return problems + _echo_problems(transfer, settings, counted)
    if settings.duration is None:
        expected = settings.size * settings.connections
        if not sent.bytes == counted == transfer.stopped.bytes == expected:
            problems.append(f"{expected} bytes asked, {sent.bytes} sent, {counted} counted")
    elif not sent.bytes == counted == transfer.stopped.bytes > 0:
        problems.append(f"{settings.duration} s asked, {sent.bytes} bytes sent, {counted} counted")
    if any(r.outcome != "eof" for r in received):
        problems.append("a connection ended " + ", ".join(sorted({r.outcome for r in received})))
    if any(r.sha256 != sent.sha256 for r in received):
        problems.append("the server's sha256 differs from the client's")
    return problems


def _echo_problems(transfer: Transfer, settings: Settings, counted: int) -> list[str]:
    """An echo transfer: every byte the clients sent was counted, written back, and each
    request answered; the messages were the size asked."""
    assert settings.echo is not None
    sent, stopped = transfer.sent, transfer.stopped
    clients = [s for s in (transfer.idle, sent, transfer.beside) if s is not None]
    problems = []
    echoed = stopped.bytes_out or 0
    if not sum(s.bytes for s in clients) == counted == stopped.bytes == echoed > 0:
        problems.append(
            f"{sum(s.bytes for s in clients)} bytes sent, {counted} counted, "
            f"{stopped.bytes_out} echoed"
        )
    if sent.mode != "echo" or sent.message_size != settings.echo.message_size:
        problems.append(f"client mode {sent.mode!r}, messages of {sent.message_size!r} ran")
    if sent.request_latency is None or sent.request_latency.count != sent.chunks:
        problems.append("a request went unanswered, or untimed")
    return problems
