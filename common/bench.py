"""Runs a real sink server and a real client as two ``nbio`` processes over loopback and
collects what each reported: the building block of ``nbio demo`` (and of comparisons).

Every figure comes from the processes' own ``--json`` events: the server measures the
throughput (first byte to EOF), each process its own CPU, memory and loop delay.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Transfer", "TransferFailed", "run_transfer"]

NBIO = [sys.executable, "-m", "common.cli"]
WAIT = 600.0


class TransferFailed(Exception):
    """A process failed or reported something other than a clean, exact transfer."""


@dataclass(frozen=True)
class Transfer:
    """One client-to-server transfer, as both processes reported it."""

    listening: dict[str, Any]
    sent: dict[str, Any]
    received: list[dict[str, Any]]
    stopped: dict[str, Any]

    @property
    def server_bytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.received)

    @property
    def server_mb_per_s(self) -> float:
        """Server-measured throughput: bytes over the longest first-byte-to-EOF span."""
        seconds = max((float(r["seconds"]) for r in self.received), default=0.0)
        return self.server_bytes / seconds / 1e6 if seconds > 0 else 0.0


def _next_event(stream: IO[str], proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        proc.wait(WAIT)
        stderr = proc.stderr.read().strip() if proc.stderr else ""
        raise TransferFailed(stderr.splitlines()[-1] if stderr else "server exited")
    event: dict[str, Any] = json.loads(line)
    return event


def run_transfer(
    server: tuple[str, str],
    client: tuple[str, str],
    send_args: list[str],
    connections: int = 1,
    digest: str = "sha256",
) -> Transfer:
    """Start ``server`` (impl, loop), run ``client`` (impl, loop) against it with
    ``send_args``, stop the server, and check every byte is accounted for (and, with the
    ``sha256`` digest, that both sides saw the same bytes: it costs CPU on both sides)."""
    proc = subprocess.Popen(
        [
            *NBIO,
            "serve",
            "--impl",
            server[0],
            "--loop",
            server[1],
            "--port",
            "0",
            "--json",
            "--digest",
            "sha256",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        listening = _next_event(proc.stdout, proc)
        done = subprocess.run(
            [
                *NBIO,
                "send",
                "--impl",
                client[0],
                "--loop",
                client[1],
                "--json",
                "--port",
                str(listening["port"]),
                "--digest",
                "sha256",
                "--connections",
                str(connections),
                *send_args,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if done.returncode != 0:
            raise TransferFailed(done.stderr.strip() or f"client exited {done.returncode}")
        sent: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        received = [_next_event(proc.stdout, proc) for _ in range(connections)]
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
    problems = []
    if transfer.server_bytes != sent["bytes"] or stopped.get("bytes") != sent["bytes"]:
        problems.append(f"sent {sent['bytes']} bytes, server counted {transfer.server_bytes}")
    if any(r["sha256"] != sent["sha256"] or r["outcome"] != "eof" for r in received):
        problems.append("a connection's digest or outcome differs from what was sent")
    if problems:
        raise TransferFailed("; ".join(problems))
    return transfer
