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

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any

from .common.interface import at_once
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
    "checked",
    "command",
    "run_transfer",
    "run_wrapped",
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
#: ``received`` events a stored transfer keeps (the first ones); beyond that the server's
#: ``stopped`` event, which spans every connection, carries its figures.
KEEP_RECEIVED = 16
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
    concurrency: int | None = None  # at most this many connections at once; None: all

    def send_args(self) -> list[str]:
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
        return args + ([] if self.concurrency is None else ["--concurrency", str(self.concurrency)])

    @property
    def at_once(self) -> int:
        """How many connections each transfer has open at once."""
        return at_once(self.connections, self.concurrency)


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
    #: With ``strace``: each process's system calls by name, ``{"client": {"sendto": 9}}``.
    syscalls: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Every event, but only the first :data:`KEEP_RECEIVED` ``received`` events: a run
        of 10,000 connections is measured from ``stopped``, which spans them all."""
        data: dict[str, Any] = {
            "listening": self.listening,
            "sent": self.sent,
            "received": self.received[:KEEP_RECEIVED],
            "received_count": len(self.received),
            "stopped": self.stopped,
        }
        return data | ({"syscalls": self.syscalls} if self.syscalls else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        return cls(
            data["listening"],
            data["sent"],
            list(data["received"]),
            data["stopped"],
            dict(data.get("syscalls", {})),
        )

    @property
    def _span(self) -> bool:
        """Whether the server's ``stopped`` event spans its connections (every nbio server;
        not the plain-socket reference, whose figures come from its ``received`` events)."""
        return self.stopped.get("first_byte_at") is not None

    @property
    def server_bytes(self) -> int:
        if self.stopped.get("bytes") is not None and self._span:
            return int(self.stopped["bytes"])
        return sum(int(r["bytes"]) for r in self.received)

    @property
    def server_connections(self) -> int:
        """Connections the server served to their end."""
        return int(self.stopped.get("connections", len(self.received)))

    @property
    def server_seconds(self) -> float:
        """The wall span the server saw: earliest first byte to latest end, over every
        connection (``time.monotonic()``, one clock for the whole machine)."""
        if self._span:
            return float(self.stopped["ended_at"]) - float(self.stopped["first_byte_at"])
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
        if self._span:
            return float(self.stopped["cpu_at_end"]) - float(self.stopped["cpu_at_first_byte"])
        starts = [
            r["cpu_at_first_byte"] for r in self.received if r["cpu_at_first_byte"] is not None
        ]
        ends = [r["cpu_at_end"] for r in self.received if r["cpu_at_end"] is not None]
        return max(ends) - min(starts) if starts and ends else 0.0

    @property
    def server_waits(self) -> int:
        """The server's voluntary context switches over that span."""
        if self._span:
            return int(self.stopped["waits_at_end"]) - int(self.stopped["waits_at_first_byte"])
        starts = [
            r["waits_at_first_byte"] for r in self.received if r["waits_at_first_byte"] is not None
        ]
        ends = [r["waits_at_end"] for r in self.received if r["waits_at_end"] is not None]
        return max(ends) - min(starts) if starts and ends else 0

    @property
    def server_delay(self) -> Events:
        """The server's loop delay over its busiest period (``stopped``), or else that of the
        connection that saw the most ticks: the longest span."""
        if self._span and "ticks" in self.stopped:
            return self.stopped
        return max(self.received, key=lambda r: int(r["ticks"]), default={"ticks": 0})


class _Lines:
    """A child's output, read line by line on a thread of its own as the child writes it: a
    server reports every connection it ends, and one that served 10,000 would fill the pipe
    and stop serving if nobody read it until the client was done."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def next(self, timeout: float = WAIT) -> str:
        """The next line, or "" at the end of the output."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TransferFailed(f"no output from the server in {timeout:.0f} s") from None

    def join(self) -> None:
        """Wait for the end of the output (the child has exited)."""
        self._thread.join(WAIT)

    def rest(self) -> str:
        """Everything left, once the child has exited."""
        self.join()
        left = []
        while not self._lines.empty():
            left.append(self._lines.get_nowait())
        return "".join(left)


def _next_event(lines: _Lines, errors: _Lines, proc: subprocess.Popen[str]) -> Events:
    line = lines.next()
    while line and not line.startswith("{"):  # a wrapper's own lines: "py-spy> Sampling"
        line = lines.next()
    if not line:
        proc.wait(WAIT)
        stderr = errors.rest().strip()
        raise TransferFailed(stderr.splitlines()[-1] if stderr else "server exited")
    event: Events = json.loads(line)
    return event


def strace_missing() -> str | None:
    """Why system calls cannot be counted here, or None."""
    return None if shutil.which("strace") else "strace not installed"


def _strace(path: str) -> list[str]:
    """The prefix that runs a command under ``strace -f -c`` (every thread, a count per
    system call) into ``path``."""
    return ["strace", "-f", "-c", "-o", path, "--"]


def _tracee(pid: int, wait: float = WAIT) -> int:
    """The process a wrapper (``pid``: strace, py-spy) started: the one to signal."""
    deadline = time.monotonic() + wait
    while True:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            children = file.read().split()
        if children:
            return int(children[0])
        if time.monotonic() >= deadline:
            raise TransferFailed("the wrapper started no server")
        time.sleep(0.01)


def syscall_counts(text: str) -> dict[str, int]:
    """The calls per system call in the table ``strace -c`` writes."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall": calls is the 4th.
        if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def run_transfer(
    server: Target, client: Target, settings: Settings, strace: bool = False
) -> Transfer:
    """Start ``server``, run ``client`` against it with ``settings``, stop the server, and
    check that every byte is accounted for, that the events name the settings asked for,
    and (with the ``sha256`` digest) that both sides saw the same bytes. With ``strace``,
    both processes run under ``strace -f -c`` and the transfer keeps their counts."""
    with tempfile.TemporaryDirectory(prefix="nbio-strace-") as tmp:
        paths = {side: os.path.join(tmp, side) for side in SIDES}
        wrappers = {side: _strace(path) for side, path in paths.items()} if strace else {}
        transfer = run_wrapped(server, client, settings, wrappers)
        if strace:
            syscalls = {}
            for side, path in paths.items():
                with open(path, encoding="utf-8") as file:
                    syscalls[side] = syscall_counts(file.read())
            transfer = replace(transfer, syscalls=syscalls)
    return checked(transfer, settings)


#: The two processes of a transfer.
SIDES = ("client", "server")


def run_wrapped(
    server: Target,
    client: Target,
    settings: Settings,
    wrappers: Mapping[str, list[str]],
    attach: list[str] | None = None,
) -> Transfer:
    """One transfer, unchecked, each side's command run under its wrapper if it has one
    (``strace ... --``, ``py-spy record ... --``): the server is then the wrapper's child,
    and that child is the one signalled to stop. ``attach`` instead starts a command with
    ``--pid SERVER`` once the server listens (``py-spy record``: its start-up left out),
    waits for its first line before the client starts, and for its exit after the server's."""
    serve = command("serve", server, "--port", "0", "--digest", settings.digest)
    proc = subprocess.Popen(
        [*wrappers.get("server", []), *serve],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines, errors = _Lines(proc.stdout), _Lines(proc.stderr)
    watcher = None
    try:
        listening = _next_event(lines, errors, proc)
        if attach is not None:
            watcher = subprocess.Popen(
                [*attach, "--pid", str(proc.pid)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert watcher.stdout is not None
            if not watcher.stdout.readline():  # "py-spy> Sampling process ...": it watches
                raise TransferFailed(f"{attach[0]} did not start (exit {watcher.wait(WAIT)})")
        send = command("send", client, "--port", str(listening["port"]), *settings.send_args())
        done = subprocess.run(
            [*wrappers.get("client", []), *send],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if done.returncode != 0:
            raise TransferFailed(done.stderr.strip() or f"client exited {done.returncode}")
        events = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not events:
            raise TransferFailed(f"the client reported nothing: {done.stdout.strip()!r}")
        sent: Events = json.loads(events[-1])
        received = [_next_event(lines, errors, proc) for _ in range(settings.connections)]
        os.kill(_tracee(proc.pid) if "server" in wrappers else proc.pid, signal.SIGTERM)
        stopped = _next_event(lines, errors, proc)
        proc.wait(WAIT)
        if watcher is not None:
            assert watcher.stdout is not None
            said = watcher.stdout.read()  # until it exits, after the server
            if watcher.wait(WAIT) != 0:
                raise TransferFailed(f"{attach and attach[0]} failed: {said.strip()}")
    finally:
        if watcher is not None:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
            if watcher.stdout is not None:
                watcher.stdout.close()
        if proc.poll() is None:
            if "server" in wrappers:  # its child would keep the pipes open
                with contextlib.suppress(OSError, TransferFailed):
                    os.kill(_tracee(proc.pid, wait=0.0), signal.SIGKILL)
            proc.kill()
            proc.wait()
        for reader, stream in ((lines, proc.stdout), (errors, proc.stderr)):
            reader.join()  # the child has exited: its output ends
            stream.close()
    return Transfer(listening, sent, received, stopped)


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
    ran: list[tuple[str, object, object]] = [("client digest", sent.get("digest"), settings.digest)]
    ran.append(("client chunk size", sent.get("chunk_size"), settings.chunk_size))
    if "concurrency" in sent or settings.concurrency is not None:
        ran.append(("client concurrency", sent.get("concurrency"), settings.concurrency))
    if "digest" in listening:
        ran.append(("server digest", listening["digest"], settings.digest))
    problems += [
        f"{what} {got!r} ran, {asked!r} was asked" for what, got, asked in ran if got != asked
    ]
    expected = settings.size * settings.connections
    counted = sum(int(r["bytes"]) for r in received)
    if not sent["bytes"] == counted == transfer.stopped.get("bytes") == expected:
        problems.append(f"{expected} bytes asked, {sent['bytes']} sent, {counted} counted")
    if any(r["outcome"] != "eof" for r in received):
        problems.append("a connection ended " + ", ".join(sorted({r["outcome"] for r in received})))
    if any(r["sha256"] != sent["sha256"] for r in received):
        problems.append("the server's sha256 differs from the client's")
    return problems
