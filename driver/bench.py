"""Runs a real sink server and a real client as two ``nbio`` processes over loopback and
keeps what each reported (a :class:`nbio.transfer.Transfer`): the building block of
``nbio demo``, ``nbio compare``, ``nbio profile`` and the shared test suite.

:func:`command` is the one place that turns a target and its settings into a command line,
so a setting cannot be dropped on the way: :func:`run_transfer` also checks that the
processes' own events name the settings it asked for.
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
from dataclasses import dataclass, replace
from typing import IO, Any, TypeVar

from .common.events import Listening, Received, Sent, Stopped
from .iperf import IPERF
from .sockperf import SOCKPERF
from .transfer import REFERENCE, Settings, Target, Transfer, TransferFailed, checked
from .workloads import BESIDE_LEAD

__all__ = [
    "LOOPBACK",
    "NBIO",
    "SIDES",
    "Placement",
    "command",
    "run_transfer",
    "run_wrapped",
    "strace_missing",
    "syscall_counts",
    "tracee",
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
WAIT = 600.0
#: The rows that are not implementations of nbio's, and the module that runs each.
OUTSIDERS = {REFERENCE: "nbio.reference", IPERF: "nbio.iperf", SOCKPERF: "nbio.sockperf"}


@dataclass(frozen=True)
class Placement:
    """Where a transfer's two processes run and meet: on this machine's loopback, or each
    in a network namespace of a link (``nbio compare --link``), started through a command
    prefix (``ip netns exec NAME``) and meeting on the server's address there."""

    host: str = "127.0.0.1"
    server_prefix: tuple[str, ...] = ()
    client_prefix: tuple[str, ...] = ()


#: Both processes on this machine's loopback.
LOOPBACK = Placement()


def command(verb: str, target: Target, *args: str) -> list[str]:
    """The command line that runs ``nbio VERB`` for ``target`` with ``--json``, then
    ``args``: the only place compare, demo and the tests build one."""
    if target.impl in OUTSIDERS:  # no implementation of nbio's: no --impl, no --loop
        return [sys.executable, "-c", _BOOT, OUTSIDERS[target.impl], verb, *args]
    tune = [arg for path, value in target.tune for arg in ("--tune", f"{path}={value}")]
    return [*NBIO, verb, "--impl", target.impl, "--loop", target.loop, "--json", *tune, *args]


E = TypeVar("E", Listening, Sent, Received, Stopped)


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


def _next_event(lines: _Lines, errors: _Lines, proc: subprocess.Popen[str], kind: type[E]) -> E:
    """The server's next event, which must be a ``kind``."""
    line = lines.next()
    while line and not line.startswith("{"):  # a wrapper's own lines: "py-spy> Sampling"
        line = lines.next()
    if not line:
        proc.wait(WAIT)
        stderr = errors.rest().strip()
        raise TransferFailed(stderr.splitlines()[-1] if stderr else "server exited")
    return _typed(json.loads(line), kind)


def _typed(data: Mapping[str, Any], kind: type[E]) -> E:
    if data.get("event") != kind.event:
        raise TransferFailed(f"{kind.event} expected, {data.get('event')!r} came: {data}")
    return kind.from_json(data)


def strace_missing() -> str | None:
    """Why system calls cannot be counted here, or None."""
    return None if shutil.which("strace") else "strace not installed"


def _strace(path: str) -> list[str]:
    """The prefix that runs a command under ``strace -f -c`` (every thread, a count per
    system call) into ``path``."""
    return ["strace", "-f", "-c", "-o", path, "--"]


def tracee(pid: int, wait: float = WAIT) -> int:
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
    server: Target,
    client: Target,
    settings: Settings,
    strace: bool = False,
    placement: Placement = LOOPBACK,
) -> Transfer:
    """Start ``server``, run ``client`` against it with ``settings``, stop the server, and
    check that every byte is accounted for, that the events name the settings asked for,
    and (with the ``sha256`` digest) that both sides saw the same bytes. With ``strace``,
    both processes run under ``strace -f -c`` and the transfer keeps their counts; with a
    ``placement``, each runs where it says."""
    with tempfile.TemporaryDirectory(prefix="nbio-strace-") as tmp:
        paths = {side: os.path.join(tmp, side) for side in SIDES}
        wrappers = {side: _strace(path) for side, path in paths.items()} if strace else {}
        transfer = run_wrapped(server, client, settings, wrappers, placement=placement)
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
    placement: Placement = LOOPBACK,
) -> Transfer:
    """One transfer, unchecked, each side's command run under its wrapper if it has one
    (``strace ... --``, ``py-spy record ... --``): the server is then the wrapper's child,
    and that child is the one signalled to stop. ``attach`` instead starts a command with
    ``--pid SERVER`` once the server listens (``py-spy record``: its start-up left out),
    waits for its first line before the client starts, and for its exit after the server's."""
    where = ["--host", placement.host]
    serve = command("serve", server, *where, "--port", "0", *settings.serve_args())
    proc = subprocess.Popen(
        [*placement.server_prefix, *wrappers.get("server", []), *serve],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines, errors = _Lines(proc.stdout), _Lines(proc.stderr)
    watcher = None
    try:
        listening = _next_event(lines, errors, proc, Listening)
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
        port = ["--port", str(listening.port)]
        prefix = [*placement.client_prefix, *wrappers.get("client", [])]
        send = [*prefix, *command("send", client, *where, *port, *settings.send_args())]
        idle = beside = None
        connections = settings.connections
        if settings.beside is not None:  # alone first, then beside the other client
            idle, _ = _client(subprocess.Popen(send, **_PIPES))
            other = settings.beside.send_args()
            bulk = subprocess.Popen(
                [*prefix, *command("send", client, *where, *port, *other)], **_PIPES
            )
            time.sleep(BESIDE_LEAD)
            sent, tool = _client(subprocess.Popen(send, **_PIPES))
            beside, _ = _client(bulk)
            connections += settings.connections + settings.beside.connections
        else:
            sent, tool = _client(subprocess.Popen(send, **_PIPES))
        received = [_next_event(lines, errors, proc, Received) for _ in range(connections)]
        os.kill(tracee(proc.pid) if "server" in wrappers else proc.pid, signal.SIGTERM)
        stopped = _next_event(lines, errors, proc, Stopped)
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
                    os.kill(tracee(proc.pid, wait=0.0), signal.SIGKILL)
            proc.kill()
            proc.wait()
        for reader, stream in ((lines, proc.stdout), (errors, proc.stderr)):
            reader.join()  # the child has exited: its output ends
            stream.close()
    return Transfer(listening, sent, received, stopped, tool=tool, idle=idle, beside=beside)


#: How a client process is run: its output read as text when it ends.
_PIPES: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


def _client(proc: subprocess.Popen[str]) -> tuple[Sent, dict[str, Any] | None]:
    """A client's ``sent`` event once it ends (and an outside tool's own report, iperf3's
    ``-J``, kept whole in the raw record); TransferFailed with its one line if it failed."""
    try:
        stdout, stderr = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TransferFailed(f"the client did not finish in {WAIT:.0f} s") from None
    if proc.returncode != 0:
        raise TransferFailed(stderr.strip() or f"client exited {proc.returncode}")
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if not events:
        raise TransferFailed(f"the client reported nothing: {stdout.strip()!r}")
    tool = next((e["output"] for e in events if e.get("event") == "tool"), None)
    return _typed(events[-1], Sent), tool
