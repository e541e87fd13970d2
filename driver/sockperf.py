"""The kernel's latency floor in the same run: sockperf's TCP ping-pong (a C client and
server that echo one message at a time), driven like a row of the echo workload's and
speaking nbio's events for it, with sockperf's own summary kept whole in the raw report
(a ``tool`` event before ``sent``).

sockperf times each round trip itself (``--full-rtt``: the whole round trip, as nbio's
clients do, not half of it) and says its percentiles; its first 400 ms are a warm-up it
does not count. Its server says nothing of what it echoed, so the row's counts are the
client's: a checked transfer of nbio's, it is not.

    python -m nbio.sockperf serve --port 0
    python -m nbio.sockperf send --port PORT --message-size 1KiB --duration 1
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common.events import Listening, Received, Sent, Stopped, to_json
from .common.loopdelay import DelayStats
from .common.percentiles import Percentiles
from .common.sizes import parse_size
from .tools import STOPS, connected, emit, free_port, listens, usage_of, verbs

__all__ = ["MAX_MESSAGE", "SOCKPERF", "main", "missing", "send", "serve"]

SOCKPERF = "sockperf"
#: The largest message sockperf's TCP ping-pong takes (its -m limit).
MAX_MESSAGE = 65000
NO_TICKS = DelayStats(ticks=0)
_PERCENTILE = re.compile(r"percentile (\d+\.\d+) = +([\d.]+)")
_MAX = re.compile(r"<MAX> observation = +([\d.]+)")
_COUNT = re.compile(
    r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)"
)


def missing() -> str | None:
    """Why sockperf cannot run here, or None."""
    if shutil.which("sockperf") is None:
        return "sockperf not installed (Debian: apt-get install sockperf)"
    return None


def serve(host: str, port: int) -> None:
    """Run sockperf's server until nbio stops it, reporting it as a sink would (it says
    nothing of what it echoed: the counts are 0)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    port = port or free_port(host)
    child = subprocess.Popen(
        ["sockperf", "server", "--tcp", "-i", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not listens(port):
        if child.poll() is not None:
            sys.exit(f"sockperf server exited {child.returncode} before it listened")
        time.sleep(0.005)
    emit(to_json(Listening(SOCKPERF, "default", host, port, "sockperf (C)", mode="echo")))
    # nbio waits for a `received` event per connection: sockperf says nothing, so its one
    # connection is seen in the kernel's table, open, then gone.
    seen = False
    while signal.sigtimedwait(STOPS, 0.005) is None:
        held = connected(port)
        if held and not seen:
            seen, began = True, time.monotonic()
        elif seen and not held:
            ended = time.monotonic()
            emit(
                to_json(
                    Received(
                        f"{host}:*",
                        0,
                        None,
                        ended - began,
                        "eof",
                        NO_TICKS,
                        first_byte_at=began,
                        ended_at=ended,
                    )
                )
            )
            seen = False
    # SIGKILL: the child inherited our mask, and a blocked SIGTERM stays blocked across exec,
    # so terminate() left this waiting for it forever (a run hung in its verification).
    child.kill()
    _, _, rusage = os.wait4(child.pid, 0)
    cpu_s, waits, peak = usage_of(rusage)
    # Its CPU over its whole life (its warm-up and idling too): the one figure there is.
    stopped = Stopped(
        1, 0, peak_rss_kib=peak, cpu_s=cpu_s, cpu_at_first_byte=0.0, cpu_at_end=cpu_s,
        waits_at_first_byte=0, waits_at_end=waits,
    )  # fmt: skip
    emit(to_json(stopped))


def send(host: str, port: int, message_size: int, duration: float) -> None:
    """Run one ping-pong of ``duration`` seconds (whole seconds: sockperf takes no
    fraction) and report its round trips as an echo client's requests."""
    command = ["sockperf", "ping-pong", "--tcp", "-i", host, "-p", str(port)]
    command += ["-m", str(message_size), "-t", str(math.ceil(duration)), "--full-rtt"]
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, rusage = os.wait4(child.pid, 0)
    ended_at = time.monotonic()
    counted = _COUNT.search(output)
    if status != 0 or counted is None:
        sys.exit(f"sockperf ping-pong failed: {output.strip().splitlines()[-1:]}")
    cpu_s, waits, peak = usage_of(rusage)
    seconds, count = float(counted.group(1)), int(counted.group(3))
    found = {float(p): float(v) / 1000 for p, v in _PERCENTILE.findall(output)}  # µs to ms
    biggest = _MAX.search(output)
    latency = Percentiles(
        count=count,
        p50_ms=found.get(50.0),
        p99_ms=found.get(99.0),
        max_ms=float(biggest.group(1)) / 1000 if biggest else None,
        p90_ms=found.get(90.0),
        p999_ms=found.get(99.9),
    )
    tool: dict[str, Any] = {"command": command, "output": output}
    emit(__import__("json").dumps({"event": "tool", "name": SOCKPERF, "output": tool}))
    emit(
        to_json(
            Sent(
                bytes=count * message_size,
                sha256=None,
                seconds=seconds,
                connections=1,
                loop_delay=NO_TICKS,
                chunk_size=message_size,
                chunks=count,
                first_byte_at=max(started, ended_at - seconds),
                ended_at=ended_at,
                cpu_s=cpu_s,
                waits=waits,
                peak_rss_kib=peak,
                duration=duration,
                mode="echo",
                message_size=message_size,
                request_latency=latency,
                requests_per_s=count / seconds if seconds > 0 else 0.0,
            )
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nbio.sockperf serve|send``, with the options nbio gives an echo row."""
    parser, _, sender = verbs("python -m nbio.sockperf", __doc__, ("echo",))
    sender.add_argument("--message-size", type=parse_size, default=1024)
    sender.add_argument("--requests", type=int, default=0, help="not used: it runs --duration")
    sender.add_argument("--connections", type=int, choices=[1], default=1)
    sender.add_argument("--duration", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.verb == "serve":
        serve(args.host, args.port)
    else:
        send(args.host, args.port, args.message_size, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
