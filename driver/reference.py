"""The reference at the limit: one loopback stream with as little Python as it can have.

Not an implementation of nbio (it keeps none of the promises the shared suite checks), but
the yardstick ``nbio compare`` runs in the same rounds as every implementation: the server
accepts, and each connection's thread loops ``recv_into`` one reused buffer and only adds up
the counts; the client ``sendall``s one pre-built buffer over and over. No accounting per
read, no payload generator, no digest, no ticker. Its events have the same shape as
``nbio serve`` and ``nbio send`` (no loop delay: it has no loop), so the same code reduces
them, and its row shows how far the blocking baseline, and every row, is from what this
machine's kernel does.

It speaks echo and TLS too, so that the echo workload has one neutral client for every
server (plain blocking sockets and a thread per connection, the requests timed by the same
``common.echo`` as every client), and a TLS run its plain ``ssl`` yardstick.

    python -m nbio.reference serve --port 0 [--mode echo] [--cert PEM --key PEM]
    python -m nbio.reference send --port PORT --size 1GiB [--ca PEM]
    python -m nbio.reference send --port PORT --mode echo --message-size 1KiB --requests 1000
"""

from __future__ import annotations

import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from . import usage
from .common.accounting import process_usage
from .common.echo import Requests, latency_of
from .common.events import (
    EOF,
    RESET,
    TRUNCATED,
    Event,
    Listening,
    Received,
    Sent,
    Stopped,
    format_peer,
    to_json,
)
from .common.loopdelay import DelayStats
from .common.options import ClientTls, Echo, ServerTls
from .common.payload import DEFAULT_CHUNK_SIZE, TALK_LINE, Payload
from .common.results import error_text
from .common.sizes import parse_size
from .edge.tls import client_context, server_context, version_and_cipher
from .tools import emit, verbs

__all__ = ["main", "send", "serve"]

READ_SIZE = 256 * 1024
LOOP_IMPL = "threads: recv_into and nothing else"
NO_TICKS = DelayStats(ticks=0)  # no loop, no ticker


def _emit(event: Event) -> None:
    emit(to_json(event))


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: stop accepting."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _drain(
    conn: socket.socket,
    peer: str,
    ended: list[Received],
    lock: threading.Lock,
    echo: bool,
    tls: ssl.SSLContext | None,
) -> None:
    buffer = memoryview(bytearray(READ_SIZE))
    count = reads = 0
    out: int | None = 0 if echo else None
    outcome = EOF
    first_byte_at: float | None = None
    usage_at_first_byte: tuple[float | None, int | None] = (None, None)
    secured: tuple[str | None, str | None] = (None, None)
    with conn:
        try:
            sock = conn
            if tls is not None:  # suppress_ragged_eofs=False: a FIN without close_notify raises
                sock = tls.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
                secured = version_and_cipher(sock)
            received = sock.recv_into(buffer)
            if received:
                first_byte_at, usage_at_first_byte = time.monotonic(), process_usage()
            while received:
                count += received
                reads += 1
                if out is not None:
                    sock.sendall(buffer[:received])
                    out += received
                received = sock.recv_into(buffer)
            if isinstance(sock, ssl.SSLSocket):
                sock.unwrap()  # our close_notify after theirs: the client's receipt
        except ssl.SSLEOFError:
            outcome = TRUNCATED
        except (ConnectionResetError, BrokenPipeError):
            outcome = RESET
        except (OSError, ValueError):
            outcome = "error"
    ended_at, (cpu_at_end, waits_at_end) = time.monotonic(), process_usage()
    began = first_byte_at is not None
    event = Received(
        peer=peer,
        bytes=count,
        sha256=None,
        seconds=ended_at - first_byte_at if first_byte_at is not None else 0.0,
        outcome=outcome,
        loop_delay=NO_TICKS,
        first_byte_at=first_byte_at,
        ended_at=ended_at if began else None,
        cpu_at_first_byte=usage_at_first_byte[0],
        cpu_at_end=cpu_at_end if began else None,
        waits_at_first_byte=usage_at_first_byte[1],
        waits_at_end=waits_at_end if began else None,
        reads=reads,
        bytes_out=out,
        tls_version=secured[0],
        tls_cipher=secured[1],
    )
    with lock:
        ended.append(event)
        _emit(event)


def _stopped(ended: list[Received], cpu_s: float, echo: bool) -> Stopped:
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
        bytes_out=sum(r.bytes_out or 0 for r in ended) if echo else None,
    )


def serve(host: str, port: int, echo: bool = False, tls: ServerTls | None = None) -> None:
    """Count every connection's bytes (and write them back, echoing) in a thread of its
    own until SIGTERM or SIGINT."""
    context = server_context(tls) if tls is not None else None
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    listener = socket.create_server((host, port), backlog=1024)
    cpu_listening = time.process_time()
    port = listener.getsockname()[1]
    mode = "echo" if echo else "sink"
    _emit(
        Listening(
            "reference",
            "default",
            host,
            port,
            LOOP_IMPL,
            rss_kib=usage.rss_kib(),
            mode=mode,
            tls=tls is not None,
        )
    )
    ended: list[Received] = []
    lock = threading.Lock()
    threads = []
    try:
        while True:
            conn, address = listener.accept()
            peer = format_peer(address)
            thread = threading.Thread(
                target=_drain, args=(conn, peer, ended, lock, echo, context), daemon=True
            )
            thread.start()
            threads.append(thread)
    except _Stop:
        listener.close()
    for thread in threads:
        thread.join()
    _emit(_stopped(ended, time.process_time() - cpu_listening, echo))


def _connect(host: str, port: int, tls: ssl.SSLContext | None, name: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    return sock if tls is None else tls.wrap_socket(sock, server_hostname=name)


def _receipt(sock: socket.socket) -> None:
    """Our EOF (a half-close; over TLS, close_notify), then the peer's in turn: the sink
    closes, or sends its close_notify, only once it has read everything."""
    if isinstance(sock, ssl.SSLSocket):
        sock.unwrap()  # sends ours, waits for theirs
        return
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


def send(
    host: str,
    port: int,
    size: int,
    connections: int,
    chunk_size: int,
    duration: float | None = None,
    tls: ClientTls | None = None,
) -> None:
    """Send ``size`` bytes on each of ``connections`` connections, a thread each; with a
    ``duration``, for that long (``size`` capping it)."""
    chunk = (TALK_LINE * (chunk_size // len(TALK_LINE) + 1))[:chunk_size]
    context = client_context(tls) if tls is not None else None
    rss_kib = usage.rss_kib()
    starts: list[tuple[float, tuple[float, int]]] = []
    sent: list[int] = []
    secured: list[tuple[str | None, str | None]] = []

    def one() -> None:
        with _connect(host, port, context, tls.server_hostname if tls else "") as sock:
            if isinstance(sock, ssl.SSLSocket):
                secured.append(version_and_cipher(sock))
            whole, rest = divmod(size, chunk_size)
            start = time.monotonic()
            starts.append((start, process_usage()))
            if duration is None:
                for _ in range(whole):
                    sock.sendall(chunk)
                sock.sendall(chunk[:rest])
                sent.append(size)
            else:
                count, deadline = 0, start + duration
                # The clock once per 4 chunks (a MiB at the default size), as payloads do.
                while count < whole and (count % 4 or time.monotonic() < deadline):
                    sock.sendall(chunk)
                    count += 1
                sent.append(count * chunk_size)
            _receipt(sock)

    _run(one, connections)
    ended_at, (cpu_at_end, waits_at_end) = time.monotonic(), process_usage()
    first_byte_at = min(start for start, _ in starts)
    version, cipher = secured[0] if secured else (None, None)
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
            tls_version=version,
            tls_cipher=cipher,
        )
    )


def _run(work: Callable[[], None], connections: int) -> None:
    """``work`` in a thread per connection; the first failure ends the process in one line."""
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except (OSError, ValueError) as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"nbio.reference send: error: {error_text(failures[0])}")


def send_echo(
    host: str,
    port: int,
    echo: Echo,
    connections: int,
    duration: float | None = None,
    tls: ClientTls | None = None,
) -> None:
    """The neutral echo client: a thread per connection, each request's message sent with
    ``sendall`` and read back whole with ``recv_into`` (closed loop), or sent on schedule by
    a writer thread while the connection's thread reads (open loop, with a rate)."""
    context = client_context(tls) if tls is not None else None
    rss_kib = usage.rss_kib()
    payload = Payload(echo.message_size * echo.requests, duration=duration)
    every: list[Requests] = []
    starts: list[tuple[float, tuple[float, int]]] = []
    secured: list[tuple[str | None, str | None]] = []

    def one() -> None:
        buffer = memoryview(bytearray(max(READ_SIZE, echo.message_size)))
        with _connect(host, port, context, tls.server_hostname if tls else "") as sock:
            if isinstance(sock, ssl.SSLSocket):
                secured.append(version_and_cipher(sock))
            start = time.monotonic()
            starts.append((start, process_usage()))
            requests = Requests(echo, payload.messages(echo.message_size), start)
            every.append(requests)
            if echo.rate is None:
                while (message := requests.next(time.monotonic())) is not None:
                    sock.sendall(message)
                    while requests.outstanding:
                        received = sock.recv_into(buffer)
                        if not received:
                            raise ConnectionResetError("the server closed mid-answer")
                        requests.answered(buffer[:received], time.monotonic())
            else:
                writer = threading.Thread(target=_on_schedule, args=(sock, requests))
                writer.start()
                while not requests.done:
                    received = sock.recv_into(buffer)
                    if not received:
                        raise ConnectionResetError("the server closed mid-answer")
                    requests.answered(buffer[:received], time.monotonic())
                writer.join()
            _receipt(sock)

    _run(one, connections)
    ended_at, (cpu_at_end, waits_at_end) = time.monotonic(), process_usage()
    first_byte_at = min(start for start, _ in starts)
    latency, histogram = latency_of(every)
    seconds = ended_at - first_byte_at
    version, cipher = secured[0] if secured else (None, None)
    count = sum(r.sent for r in every)
    _emit(
        Sent(
            bytes=count * echo.message_size,
            sha256=None,
            seconds=seconds,
            connections=connections,
            loop_delay=NO_TICKS,
            digest="none",
            chunk_size=echo.message_size,
            chunks=count,
            duration=duration,
            first_byte_at=first_byte_at,
            ended_at=ended_at,
            cpu_s=cpu_at_end - min(cpu for _, (cpu, _) in starts),
            waits=waits_at_end - min(waits for _, (_, waits) in starts),
            rss_kib=rss_kib,
            peak_rss_kib=usage.peak_rss_kib(),
            mode="echo",
            tls_version=version,
            tls_cipher=cipher,
            message_size=echo.message_size,
            requests=echo.requests,
            rate=echo.rate,
            request_latency=latency,
            requests_per_s=latency.count / seconds if seconds > 0 else 0.0,
            histogram=histogram,
        )
    )


def _on_schedule(sock: socket.socket, requests: Requests) -> None:
    """Send each request when it is due, whatever the answers do (open loop)."""
    while not requests.all_sent:
        due = requests.due()
        time.sleep(max(0.0, due - time.monotonic()))
        message = requests.next(due)
        if message is not None:
            sock.sendall(message)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nbio.reference serve|send``, with the options nbio gives a row."""
    parser, server, sender = verbs("python -m nbio.reference", __doc__, ("sink", "echo"))
    server.add_argument("--cert", default=None)
    server.add_argument("--key", default=None)
    sender.add_argument("--size", type=parse_size, default=None)
    sender.add_argument("--connections", type=int, default=1)
    sender.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE)
    sender.add_argument("--duration", type=float, default=None)
    sender.add_argument("--message-size", type=parse_size, default=1024)
    sender.add_argument("--requests", type=int, default=1000)
    sender.add_argument("--rate", type=float, default=None)
    sender.add_argument("--ca", default=None)
    sender.add_argument("--server-name", default="localhost")
    args = parser.parse_args(argv)
    echo = args.mode == "echo"
    if args.verb == "serve":
        tls = ServerTls(args.cert, args.key) if args.cert and args.key else None
        serve(args.host, args.port, echo, tls)
        return 0
    tls_client = ClientTls(args.ca, args.server_name) if args.ca else None
    if echo:
        wanted = Echo(args.message_size, args.requests, args.rate)
        send_echo(args.host, args.port, wanted, args.connections, args.duration, tls_client)
    else:
        send(
            args.host, args.port, args.size, args.connections, args.chunk_size, args.duration,
            tls_client,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
