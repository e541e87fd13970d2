"""Runs a real sink server and a real client as two ``nbio`` processes over loopback and
keeps what each reported: the building block of ``nbio demo``, ``nbio compare`` and the
shared test suite.

:func:`command` is the one place that turns a target and its settings into a command line,
so a setting cannot be dropped on the way: :func:`run_transfer` also checks that the
processes' own events name the settings it asked for. Every figure comes from those events:
the server measures throughput (first byte to EOF), each process its own CPU, memory and
loop delay.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .common.payload import DEFAULT_CHUNK_SIZE

__all__ = [
    "GIB",
    "NBIO",
    "REFERENCE",
    "Settings",
    "Target",
    "Transfer",
    "TransferFailed",
    "check",
    "command",
    "run_transfer",
]

#: Starts a module of nbio in a child process so that no working directory can shadow it:
#: ``python -m`` would put the working directory first on ``sys.path``, and a ``common/`` or
#: ``nbio/`` of the user's own would be imported instead of ours (``-P`` fixes that only
#: from 3.11 on, and ``-I`` would also hide a ``pip install --user``).
_BOOT = (
    "import runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)
#: The CLI, run by the interpreter that runs us.
NBIO = [sys.executable, "-c", _BOOT, "nbio"]
#: The reference at the limit: plain sockets, no accounting (see :mod:`nbio.reference`).
REFERENCE = "reference"
GIB = 1024**3
WAIT = 600.0

Events = dict[str, Any]


class TransferFailed(Exception):
    """A process failed or reported something other than a clean, exact transfer."""


@dataclass(frozen=True)
class Target:
    """One implementation on one loop, with the knobs (``--tune``) set in its processes."""

    impl: str
    loop: str = "default"
    tune: tuple[tuple[str, int], ...] = ()

    @property
    def id(self) -> str:
        """``asyncio-streams``, ``twisted (poll)``, ``twisted (SEND_LIMIT=1048576)``."""
        details = [] if self.loop == "default" else [self.loop]
        details += [f"{path.rsplit('.', 1)[-1]}={value}" for path, value in self.tune]
        return f"{self.impl} ({', '.join(details)})" if details else self.impl

    def to_json(self) -> dict[str, Any]:
        return {"impl": self.impl, "loop": self.loop, "tune": dict(self.tune)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(data["impl"], data["loop"], tuple(data.get("tune", {}).items()))


@dataclass(frozen=True)
class Settings:
    """What every transfer of a run sends: the client's settings, and the sink's digest."""

    size: int
    connections: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    digest: str = "none"

    def send_args(self) -> list[str]:
        return [
            "--size",
            str(self.size),
            "--connections",
            str(self.connections),
            "--chunk-size",
            str(self.chunk_size),
            "--digest",
            self.digest,
        ]


def command(verb: str, target: Target, *args: str) -> list[str]:
    """The command line that runs ``nbio VERB`` for ``target`` with ``--json``, then
    ``args``: the only place compare, demo and the tests build one."""
    if target.impl == REFERENCE:
        return [sys.executable, "-c", _BOOT, "nbio.reference", verb, *args]
    tune = [arg for path, value in target.tune for arg in ("--tune", f"{path}={value}")]
    return [*NBIO, verb, "--impl", target.impl, "--loop", target.loop, "--json", *tune, *args]


@dataclass(frozen=True)
class Transfer:
    """One client-to-server transfer: every event both processes printed."""

    listening: Events
    sent: Events
    received: list[Events] = field(default_factory=list)
    stopped: Events = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "listening": self.listening,
            "sent": self.sent,
            "received": self.received,
            "stopped": self.stopped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        return cls(data["listening"], data["sent"], list(data["received"]), data["stopped"])

    @property
    def server_bytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.received)

    @property
    def server_seconds(self) -> float:
        """The wall span the server saw: earliest first byte to latest end, over every
        connection (``time.monotonic()``, one clock for the whole machine)."""
        starts = [r["first_byte_at"] for r in self.received if r["first_byte_at"] is not None]
        ends = [r["ended_at"] for r in self.received if r["ended_at"] is not None]
        return max(ends) - min(starts) if starts and ends else 0.0

    @property
    def server_mb_per_s(self) -> float:
        """Server-measured throughput: every byte over the wall span."""
        seconds = self.server_seconds
        return self.server_bytes / seconds / 1e6 if seconds > 0 else 0.0

    @property
    def server_cpu_s(self) -> float:
        """The server's CPU seconds over that same span (its CPU clock only moves forward,
        so the earliest reading is the one at the earliest first byte)."""
        starts = [
            r["cpu_at_first_byte"] for r in self.received if r["cpu_at_first_byte"] is not None
        ]
        ends = [r["cpu_at_end"] for r in self.received if r["cpu_at_end"] is not None]
        return max(ends) - min(starts) if starts and ends else 0.0

    @property
    def server_waits(self) -> int:
        """The server's voluntary context switches over that span."""
        starts = [
            r["waits_at_first_byte"] for r in self.received if r["waits_at_first_byte"] is not None
        ]
        ends = [r["waits_at_end"] for r in self.received if r["waits_at_end"] is not None]
        return max(ends) - min(starts) if starts and ends else 0

    @property
    def server_delay(self) -> Events:
        """The loop delay of the connection that saw the most ticks: the longest span."""
        return max(self.received, key=lambda r: int(r["ticks"]), default={"ticks": 0})


def _next_event(stream: IO[str], proc: subprocess.Popen[str]) -> Events:
    line = stream.readline()
    if not line:
        proc.wait(WAIT)
        stderr = proc.stderr.read().strip() if proc.stderr else ""
        raise TransferFailed(stderr.splitlines()[-1] if stderr else "server exited")
    event: Events = json.loads(line)
    return event


def run_transfer(server: Target, client: Target, settings: Settings) -> Transfer:
    """Start ``server``, run ``client`` against it with ``settings``, stop the server, and
    check that every byte is accounted for, that the events name the settings asked for,
    and (with the ``sha256`` digest) that both sides saw the same bytes."""
    proc = subprocess.Popen(
        command("serve", server, "--port", "0", "--digest", settings.digest),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        listening = _next_event(proc.stdout, proc)
        done = subprocess.run(
            command("send", client, "--port", str(listening["port"]), *settings.send_args()),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if done.returncode != 0:
            raise TransferFailed(done.stderr.strip() or f"client exited {done.returncode}")
        sent: Events = json.loads(done.stdout.splitlines()[-1])
        received = [_next_event(proc.stdout, proc) for _ in range(settings.connections)]
        proc.send_signal(signal.SIGTERM)
        stopped = _next_event(proc.stdout, proc)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    transfer = Transfer(listening, sent, received, stopped)
    problems = check(transfer, settings)
    if problems:
        raise TransferFailed("; ".join(problems))
    return transfer


def check(transfer: Transfer, settings: Settings) -> list[str]:
    """What is wrong with a transfer run with ``settings``: nothing, for a clean one."""
    sent, listening, received = transfer.sent, transfer.listening, transfer.received
    problems = []
    # The settings, as each process says it ran (the reference hashes nothing, says no digest).
    ran: list[tuple[str, object, object]] = [("client digest", sent.get("digest"), settings.digest)]
    ran.append(("client chunk size", sent.get("chunk_size"), settings.chunk_size))
    if "digest" in listening:
        ran.append(("server digest", listening["digest"], settings.digest))
    problems += [
        f"{what} {got!r} ran, {asked!r} was asked" for what, got, asked in ran if got != asked
    ]
    expected = settings.size * settings.connections
    counted = transfer.server_bytes
    if not sent["bytes"] == counted == transfer.stopped.get("bytes") == expected:
        problems.append(f"{expected} bytes asked, {sent['bytes']} sent, {counted} counted")
    if any(r["outcome"] != "eof" for r in received):
        problems.append("a connection ended " + ", ".join(sorted({r["outcome"] for r in received})))
    if any(r["sha256"] != sent["sha256"] for r in received):
        problems.append("the server's sha256 differs from the client's")
    return problems
