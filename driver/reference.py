"""The reference at the limit: one loopback stream with as little Python as it can have.

Not an implementation of nbio (it keeps none of the promises the shared suite checks), but
the yardstick ``nbio compare`` runs in the same rounds as every implementation: the server
accepts, and each connection's thread loops ``recv_into`` one reused buffer and only adds up
the counts; the client ``sendall``s one pre-built buffer over and over. No accounting per
read, no payload generator, no digest, no ticker. Its events have the same shape as
``nbio serve`` and ``nbio send`` (no loop delay: it has no loop), so the same code reduces
them, and its row shows how far the blocking baseline, and every row, is from what this
machine's kernel does.

    python -m nbio.reference serve --port 0
    python -m nbio.reference send --port PORT --size 1GiB
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from . import usage
from .common.accounting import process_usage
from .common.events import Event, Listening, Received, Sent, Stopped, format_peer, to_json
from .common.loopdelay import DelayStats
from .common.options import DEFAULT_HOST
from .common.payload import DEFAULT_CHUNK_SIZE, TALK_LINE
from .common.sizes import parse_size

__all__ = ["main", "send", "serve"]

READ_SIZE = 256 * 1024
LOOP_IMPL = "threads: recv_into and nothing else"
NO_TICKS = DelayStats(ticks=0)  # no loop, no ticker


def _emit(event: Event) -> None:
    print(to_json(event), flush=True)


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: stop accepting."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _drain(conn: socket.socket, peer: str, ended: list[Received], lock: threading.Lock) -> None:
    buffer = memoryview(bytearray(READ_SIZE))
    count = reads = 0
    first_byte_at: float | None = None
    usage_at_first_byte: tuple[float | None, int | None] = (None, None)
    with conn:
        received = conn.recv_into(buffer)
        if received:
            first_byte_at, usage_at_first_byte = time.monotonic(), process_usage()
        while received:
            count += received
            reads += 1
            received = conn.recv_into(buffer)
    ended_at, (cpu_at_end, waits_at_end) = time.monotonic(), process_usage()
    began = first_byte_at is not None
    event = Received(
        peer=peer,
        bytes=count,
        sha256=None,
        seconds=ended_at - first_byte_at if first_byte_at is not None else 0.0,
        outcome="eof",
        loop_delay=NO_TICKS,
        first_byte_at=first_byte_at,
        ended_at=ended_at if began else None,
        cpu_at_first_byte=usage_at_first_byte[0],
        cpu_at_end=cpu_at_end if began else None,
        waits_at_first_byte=usage_at_first_byte[1],
        waits_at_end=waits_at_end if began else None,
        reads=reads,
    )
    with lock:
        ended.append(event)
        _emit(event)


def _stopped(ended: list[Received], cpu_s: float) -> Stopped:
    """The totals, and the span of every connection, as every nbio sink reports them:
    the earliest first byte and the latest end, with the process's usage at each."""
    spans = [r for r in ended if r.first_byte_at is not None]
    first = min(spans, key=lambda r: r.first_byte_at or 0.0, default=None)
    last = max(spans, key=lambda r: r.ended_at or 0.0, default=None)
    return Stopped(
        connections=len(ended),
        bytes=sum(r.bytes for r in ended),
        outcomes={"eof": len(ended)} if ended else {},
        peak_rss_kib=usage.peak_rss_kib(),
        cpu_s=cpu_s,
        first_byte_at=first.first_byte_at if first else None,
        ended_at=last.ended_at if last else None,
        cpu_at_first_byte=first.cpu_at_first_byte if first else None,
        cpu_at_end=last.cpu_at_end if last else None,
        waits_at_first_byte=first.waits_at_first_byte if first else None,
        waits_at_end=last.waits_at_end if last else None,
        loop_delay=NO_TICKS,
        reads=sum(r.reads for r in ended),
    )


def serve(host: str, port: int) -> None:
    """Count every connection's bytes in a thread of its own until SIGTERM or SIGINT."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    listener = socket.create_server((host, port), backlog=1024)
    cpu_listening = time.process_time()
    port = listener.getsockname()[1]
    _emit(Listening("reference", "default", host, port, LOOP_IMPL, rss_kib=usage.rss_kib()))
    ended: list[Received] = []
    lock = threading.Lock()
    threads = []
    try:
        while True:
            conn, address = listener.accept()
            thread = threading.Thread(target=_drain, args=(conn, format_peer(address), ended, lock))
            thread.start()
            threads.append(thread)
    except _Stop:
        listener.close()
    for thread in threads:
        thread.join()
    _emit(_stopped(ended, time.process_time() - cpu_listening))


def send(
    host: str,
    port: int,
    size: int,
    connections: int,
    chunk_size: int,
    duration: float | None = None,
) -> None:
    """Send ``size`` bytes on each of ``connections`` connections, a thread each; with a
    ``duration``, for that long (``size`` capping it)."""
    chunk = (TALK_LINE * (chunk_size // len(TALK_LINE) + 1))[:chunk_size]
    rss_kib = usage.rss_kib()
    starts: list[tuple[float, tuple[float, int]]] = []
    sent: list[int] = []

    def one() -> None:
        with socket.create_connection((host, port)) as sock:
            whole, rest = divmod(size, chunk_size)
            start = time.monotonic()
            starts.append((start, process_usage()))
            if duration is None:
                for _ in range(whole):
                    sock.sendall(chunk)
                sock.sendall(chunk[:rest])
                sent.append(size)
                return
            count, deadline = 0, start + duration
            # The clock once per 4 chunks (a MiB at the default size), as the payloads do.
            while count < whole and (count % 4 or time.monotonic() < deadline):
                sock.sendall(chunk)
                count += 1
            sent.append(count * chunk_size)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended_at, (cpu_at_end, waits_at_end) = time.monotonic(), process_usage()
    first_byte_at = min(start for start, _ in starts)
    _emit(
        Sent(
            bytes=sum(sent),
            sha256=None,
            seconds=ended_at - first_byte_at,
            connections=connections,
            loop_delay=NO_TICKS,
            digest="none",
            chunk_size=chunk_size,
            chunks=sum(-(-count // chunk_size) for count in sent),
            duration=duration,
            first_byte_at=first_byte_at,
            ended_at=ended_at,
            cpu_s=cpu_at_end - min(cpu for _, (cpu, _) in starts),
            waits=waits_at_end - min(waits for _, (_, waits) in starts),
            rss_kib=rss_kib,
            peak_rss_kib=usage.peak_rss_kib(),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbio.reference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "send"):
        command = commands.add_parser(name)
        command.add_argument("--host", default=DEFAULT_HOST)
        command.add_argument("--port", type=int, required=True)
        command.add_argument("--digest", choices=["none"], default="none", help="it hashes nothing")
    sender = commands.choices["send"]
    sender.add_argument("--size", type=parse_size, required=True)
    sender.add_argument("--connections", type=int, default=1)
    sender.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE)
    sender.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
    else:
        send(args.host, args.port, args.size, args.connections, args.chunk_size, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
