"""The kernel's own figure in the same run: iperf3, a C program that moves bytes with as
little as it can, driven like a row of nbio's (``nbio compare`` runs it in the same shuffled
rounds as every implementation, over the same loopback or link, for the same time).

Each verb starts iperf3 and speaks nbio's events for it, so that the same code reduces
them: ``serve`` runs ``iperf3 -s -1`` (one test, then it exits) and reports what it
received; ``send`` runs ``iperf3 -c`` and reports what it sent, with iperf3's whole ``-J``
output kept in the raw report (a ``tool`` event before ``sent``). CPU and waits are the
iperf3 process's own, from the kernel's accounting of the child (``wait4``); the span is
iperf3's own test time, ending when the process does.

    python -m nbio.iperf serve --port 0
    python -m nbio.iperf send --port PORT --duration 2
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common.events import Listening, Received, Sent, Stopped, to_json
from .common.loopdelay import DelayStats
from .common.payload import DEFAULT_CHUNK_SIZE
from .common.sizes import parse_size
from .tools import STOPS, emit, free_port, listens, usage_of, verbs

__all__ = ["IPERF", "main", "missing", "send", "serve"]

#: The row's name in a report.
IPERF = "iperf3"
NO_TICKS = DelayStats(ticks=0)  # no loop, no ticker


def missing() -> str | None:
    """Why iperf3 cannot run here, or None."""
    if shutil.which("iperf3") is None:
        return "iperf3 not installed (Debian: apt-get install iperf3)"
    return None


def _version() -> str:
    done = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout.splitlines() or ["iperf3"])[0].split(" (")[0]


def _reader(child: subprocess.Popen[str]) -> list[str]:
    """Read the child's stdout on a thread, so that a long ``-J`` output never blocks it."""
    import threading

    assert child.stdout is not None
    stream = child.stdout
    output: list[str] = []
    threading.Thread(target=lambda: output.append(stream.read()), daemon=True).start()
    return output


def serve(host: str, port: int) -> None:
    """Run one iperf3 test as its server; report it as nbio's sink would."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # taken with sigtimedwait, in turn
    port = port or free_port(host)
    child = subprocess.Popen(
        ["iperf3", "-s", "-1", "-J", "-B", host, "-p", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    output = _reader(child)
    while not listens(port):
        if child.poll() is not None:
            sys.exit(f"iperf3 -s exited {child.returncode} before it listened")
        time.sleep(0.005)
    emit(to_json(Listening(IPERF, "default", host, port, f"{_version()} (C, no loop)")))
    while True:  # until the test ends (iperf3 exits) or we are stopped first
        pid, _, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if signal.sigtimedwait(STOPS, 0.01) is not None:
            child.kill()
            child.wait()
            emit(to_json(Stopped(connections=0, bytes=0)))
            return
    ended_at = time.monotonic()
    cpu_s, waits, peak = usage_of(rusage)
    for _ in range(500):  # the reading thread ends with the child's output
        if output:
            break
        time.sleep(0.01)
    result: dict[str, Any] = json.loads(output[0] if output else "{}")
    received = result["end"]["sum_received"]
    seconds = float(received["seconds"])
    count = int(received["bytes"])
    end = Received(
        peer=f"{host}:*", bytes=count, sha256=None, seconds=seconds, outcome="eof",
        loop_delay=NO_TICKS, first_byte_at=ended_at - seconds, ended_at=ended_at,
        cpu_at_first_byte=0.0, cpu_at_end=cpu_s, waits_at_first_byte=0, waits_at_end=waits,
    )  # fmt: skip
    emit(to_json(end))
    signal.sigwait(STOPS)  # until nbio stops us, as it stops every sink
    emit(
        to_json(
            Stopped(
                connections=1,
                bytes=count,
                outcomes={"eof": 1},
                peak_rss_kib=peak,
                cpu_s=cpu_s,
                first_byte_at=end.first_byte_at,
                ended_at=ended_at,
                cpu_at_first_byte=0.0,
                cpu_at_end=cpu_s,
                waits_at_first_byte=0,
                waits_at_end=waits,
                loop_delay=NO_TICKS,
            )
        )
    )


def send(host: str, port: int, size: int, chunk_size: int, duration: float | None) -> None:
    """Run one iperf3 test as its client (``-t`` whole seconds: iperf3 3.12 truncates a
    fraction, so a duration is rounded up; else ``-n`` bytes); report it as nbio's client
    would, iperf3's own ``-J`` output first."""
    amount = ["-t", str(math.ceil(duration))] if duration else ["-n", str(size)]
    command = ["iperf3", "-c", host, "-p", str(port), "-J", "-l", str(chunk_size), *amount]
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, rusage = os.wait4(child.pid, 0)
    ended_at = time.monotonic()
    result: dict[str, Any] = json.loads(output) if output.strip() else {}
    if status != 0 or "error" in result:
        sys.exit(f"iperf3 -c failed: {result.get('error', f'exit {status}')}")
    cpu_s, waits, peak = usage_of(rusage)
    emit(json.dumps({"event": "tool", "name": IPERF, "output": result}))
    # sum_sent counts what iperf3 wrote before its clock stopped, and the server reads the
    # rest after: its count, which the client learns at the end, is the one both agree on.
    count = int(result["end"]["sum_received"]["bytes"])
    seconds = float(result["end"]["sum_sent"]["seconds"])
    emit(
        to_json(
            Sent(
                bytes=count,
                sha256=None,
                seconds=seconds,
                connections=1,
                loop_delay=NO_TICKS,
                chunk_size=chunk_size,
                chunks=-(-count // chunk_size),
                first_byte_at=max(started, ended_at - seconds),
                ended_at=ended_at,
                cpu_s=cpu_s,
                waits=waits,
                peak_rss_kib=peak,
                duration=duration,
            )
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nbio.iperf serve|send``, with the options nbio gives a row."""
    parser, _, sender = verbs("python -m nbio.iperf", __doc__)
    sender.add_argument("--size", type=parse_size, required=True)
    sender.add_argument("--connections", type=int, choices=[1], default=1)
    sender.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE)
    sender.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)
    if args.verb == "serve":
        serve(args.host, args.port)
    else:
        send(args.host, args.port, args.size, args.chunk_size, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
