"""Drives implementations as real processes through the ``nbio`` CLI, and the neutral
stdlib-socket sink and client that they are checked against. Imports no framework."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbio.bench import NBIO, command, tracee  # the one place command lines are built
from nbio.common.payload import Payload
from nbio.transfer import Target, TransferFailed

LOCALHOST = "127.0.0.1"
#: Seconds any one wait may take before the test fails; generous: machines are shared.
WAIT = 60.0


def param_id(target: Target) -> str:
    """A target as a pytest id: ``asyncio-streams``, ``asyncio-streams-uvloop``."""
    return target.impl if target.loop == "default" else f"{target.impl}-{target.loop}"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ServerProcess:
    """``nbio serve --port 0 --json`` (or ``port``) in a child process, its events read as
    they come. Its stderr goes to a file, so that a server that floods it cannot block on a
    full pipe; ``files`` caps its descriptors (``RLIMIT_NOFILE``) and ``memory`` its
    address space. With ``wrapper`` (``strace ... --``) the server is the wrapper's child:
    ``pid`` is the server's, the one to signal and to count descriptors of."""

    def __init__(
        self,
        target: Target,
        *args: str,
        files: int | None = None,
        memory: int | None = None,
        wrapper: Sequence[str] = (),
        port: int = 0,
    ) -> None:
        self.target = target
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in __exit__

        # util-linux's prlimit sets the limits and execs the server (the same process), not
        # a preexec_fn: that runs Python between fork and exec in a test process with
        # threads, which the subprocess docs call unsafe (and Eventlet, imported by its
        # native tests, warns of).
        limits = [
            *([f"--nofile={files}:{files}"] if files is not None else []),
            *([f"--as={memory}:{memory}"] if memory is not None else []),
        ]
        self.proc = subprocess.Popen(
            [
                *wrapper,
                *(["prlimit", *limits, "--"] if limits else []),
                *command("serve", target, "--port", str(port), *args),
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._wrapped = bool(wrapper)
        self.pid = self.proc.pid  # the server's: the wrapper's child, once it listens
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            listening = self.next_event()
        except BaseException:
            self.__exit__()  # it never listened: nothing of it is left behind
            raise
        assert listening["event"] == "listening", listening
        self.listening = listening
        self.port: int = listening["port"]
        if wrapper:
            self.pid = tracee(self.proc.pid)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._events.put(json.loads(line))
        self._events.put(None)

    def next_event(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from {param_id(self.target)} in {timeout} s") from None
        if event is None:
            raise AssertionError(f"{param_id(self.target)} server exited: {self.stderr()}")
        return event

    def received(self, count: int = 1, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Wait for ``count`` ``received`` events."""
        deadline = time.monotonic() + timeout
        events = []
        while len(events) < count:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            assert event["event"] == "received", event
            events.append(event)
        return events

    def stop(
        self,
        signum: int = signal.SIGTERM,
        timeout: float = WAIT,
        before: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Signal the server, expect its ``stopped`` event and its exit status: 0 after
        SIGTERM, 130 after SIGINT. With ``before``, events that come first (connections
        still ending) are appended to it; without, the next event must be ``stopped``."""
        os.kill(self.pid, signum)
        return self.stop_event(timeout, 130 if signum == signal.SIGINT else 0, before)

    def stop_event(
        self, timeout: float = WAIT, status: int = 0, before: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Expect the ``stopped`` event of a server already signalled, and ``status``."""
        event = self.next_event(timeout)
        while before is not None and event["event"] != "stopped":
            before.append(event)
            event = self.next_event(timeout)
        assert event["event"] == "stopped", event
        assert self.proc.wait(timeout) == status, self.stderr()
        return event

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            if self._wrapped:  # killed, a wrapper would leave its child running
                with contextlib.suppress(OSError, TransferFailed):
                    os.kill(tracee(self.proc.pid, wait=0.0), signal.SIGKILL)
            self.proc.kill()
        self.proc.wait(WAIT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@dataclass
class ClientRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def sent(self) -> dict[str, Any]:
        assert self.returncode == 0, self.stderr
        (event,) = [e for e in self.events if e["event"] == "sent"]
        return event


def run_client(target: Target, port: int, *args: str, timeout: float = WAIT) -> ClientRun:
    """Run ``nbio send --json`` to completion."""
    done = subprocess.run(
        command("send", target, "--port", str(port), *args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return ClientRun(done.returncode, json_lines(done.stdout), done.stderr)


def run_nbio(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBIO, *args], capture_output=True, text=True, timeout=timeout)


# --- neutral peers: plain blocking stdlib sockets, no framework -------------------------


@dataclass
class Arrival:
    """What the neutral sink saw on one connection."""

    bytes: int
    sha256: str
    outcome: str


@dataclass
class NeutralSink:
    """A threaded stdlib-socket sink on 127.0.0.1, port 0: counts and hashes until EOF."""

    arrivals: queue.Queue[Arrival] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((LOCALHOST, 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._lock = threading.Lock()
        self._open = 0
        self.most_open = 0  # the most connections open at once (accepted, not yet closed)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open += 1
                self.most_open = max(self.most_open, self._open)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        import hashlib

        digest = hashlib.sha256()
        buffer = memoryview(bytearray(256 * 1024))
        count = 0
        outcome = "eof"
        with conn:
            try:
                while received := conn.recv_into(buffer):
                    digest.update(buffer[:received])
                    count += received
            except ConnectionResetError:
                outcome = "reset"
            with self._lock:  # before the close the client waits for
                self._open -= 1
        self.arrivals.put(Arrival(count, digest.hexdigest(), outcome))

    def wait(self, count: int = 1, timeout: float = WAIT) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        arrivals = []
        for _ in range(count):
            try:
                arrivals.append(self.arrivals.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{len(arrivals)} of {count} connections ended") from None
        return arrivals

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> NeutralSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def neutral_send(port: int, payload: Payload, chunk_size: int = 256 * 1024) -> int:
    """Send ``payload`` with blocking ``sendall`` and close; return the bytes sent."""
    sent = 0
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as sock:
        for chunk in payload.chunks(chunk_size):
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def server_on_a_named_port(target: Target, *args: str, tries: int = 5) -> ServerProcess:
    """A server told its port (``--port P``, a free one), not ``--port 0``: some listen
    differently then (Eventlet's ``listen`` sets ``SO_REUSEPORT`` only for a port other
    than 0). Between finding the port free and binding it another process may take it:
    then another port is tried."""
    for _ in range(tries - 1):
        try:
            return ServerProcess(target, *args, port=free_port())
        except AssertionError as exc:
            if "address already in use" not in str(exc):
                raise
    return ServerProcess(target, *args, port=free_port())


# --- neutral peers that misbehave, for the fault suite ---------------------------------


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the peer gets an RST instead of a FIN."""

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class ResettingSink:
    """Accepts one connection, reads ``after`` bytes, then resets it."""

    def __init__(self, after: int) -> None:
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.received = 0
        self._after = after
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._listener.accept()
        while self.received < self._after:
            data = conn.recv(min(65536, self._after - self.received))
            if not data:
                break
            self.received += len(data)
        reset(conn)

    def close(self) -> None:
        self._thread.join(WAIT)
        self._listener.close()


class ClogSink(NeutralSink):
    """A neutral sink that does not read until :meth:`release` is called."""

    def __post_init__(self) -> None:
        self.released = threading.Event()
        self.connected = threading.Event()
        self._conn: socket.socket | None = None
        super().__post_init__()

    def _drain(self, conn: socket.socket) -> None:
        self._conn = conn
        self.connected.set()
        self.released.wait(WAIT)
        super()._drain(conn)

    def release(self) -> None:
        self.released.set()

    def unread(self) -> int:
        """Bytes that arrived and wait, unread, in the kernel (FIONREAD)."""
        if self._conn is None:
            return 0
        waiting = fcntl.ioctl(self._conn.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", waiting)[0])


def open_fds(pid: int) -> int:
    """How many descriptors a process has open (Linux): it grows as a server accepts."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inode(sock: socket.socket) -> int:
    """The inode of the socket at the other end of ``sock``, a TCP connection over IPv4
    (Linux, ``/proc/net/tcp``): 0 until a process accepted it (the kernel names no file
    for a connection still queued), or once it is gone."""
    local, remote = sock.getpeername()[1], sock.getsockname()[1]
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            # "sl local_address rem_address st ... uid timeout inode": ports in hex.
            if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (
                local,
                remote,
            ):
                return int(fields[9])
    return 0


def holds(pid: int, inode: int) -> bool:
    """Whether a process has a descriptor open on the socket ``inode`` (Linux). Precise
    where a count of descriptors is not: a loop opens some once, lazily (libuv opens
    ``/dev/null`` as its reserve for EMFILE when it makes its first stream; uvloop its
    signal socket pair when it first runs, which under Twisted is after listening)."""
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            if os.readlink(f"{fds}/{fd}") == f"socket:[{inode}]":
                return True
    return False


def wait_until(condition: Any, timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``condition()`` against a deadline: for facts no event reports."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


# --- the kernel's own count: strace -----------------------------------------------------


def strace_accepts(path: Path) -> list[str]:
    """The wrapper (for :class:`ServerProcess`) that logs every ``accept`` and ``accept4``
    of a process and its threads to ``path``: the kernel's count of the connections it
    handed over, whatever the server reports."""
    return ["strace", "-f", "-e", "trace=accept,accept4", "-o", str(path), "--"]


#: A call that returned a descriptor, whole (``123 accept4(5, {...}, [16], SOCK_CLOEXEC) =
#: 7``) or the end of one another thread's call interrupted (``123 <... accept4 resumed>
#: ...) = 7``); failures say ``= -1 EAGAIN (...)``, and are not counted.
_ACCEPTED = re.compile(r"^\d+\s+(?:accept4?\(|<\.\.\. accept4? resumed>).*\) = \d+$")


def accepted(path: Path) -> int:
    """How many connections the traced process accepted, from what :func:`strace_accepts`
    logged."""
    return sum(1 for line in path.read_text().splitlines() if _ACCEPTED.match(line))
