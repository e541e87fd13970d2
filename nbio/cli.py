"""The ``nbio`` command: ``impls``, ``serve`` and ``send``, dispatched through the registry.

Bad input exits 2 with one line on stderr; a transfer that fails exits 1 with one line that
says how many bytes went out. Neither ever prints a traceback. SIGINT and SIGTERM end any
command cleanly at any moment: a server stops gracefully once it listens (exit 0 after
SIGTERM, 130 after SIGINT), a client says how many bytes went out, and before either is
running the process exits 130 (SIGINT) or 143 (SIGTERM) with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from . import registry, usage, workloads

# bench, compare and report are imported in the commands that use them: every `nbio serve`
# and `nbio send` process (thousands in a test run) would otherwise pay for them at start.
if TYPE_CHECKING:
    from . import bench, compare
from .common.accounting import DIGESTS
from .common.events import (
    AcceptPaused,
    Error,
    Event,
    Listening,
    Sent,
    Stopped,
    describe,
    to_json,
)
from .common.interface import (
    CLOSE_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    Implementation,
    Progress,
    SendFailed,
    SendOptions,
    ServeOptions,
    at_once,
    error_text,
    signal_name,
)
from .common.payload import DEFAULT_CHUNK_SIZE, PATTERNS, TALK_SIZE, Payload, PayloadError
from .common.sizes import SizeError, human_size, parse_size

__all__ = ["main"]

DEFAULT_IMPL = "asyncio-streams"
MAX_CONNECTIONS = 100_000
MAX_CHUNK_SIZE = 64 * 1024 * 1024


class UsageError(Exception):
    """Bad input found after parsing; exit 2 with this one line."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (its number is ``args[0]``) arrived before the implementation took
    signals over. A KeyboardInterrupt, so that asyncio lets it through its callbacks."""


#: Signals :func:`_interrupt` saw, in case the exception it raised was swallowed: one
#: raised inside a weakref callback of the import system (an import's module-lock
#: callback, seen in CI) is handed to ``sys.unraisablehook`` and lost.
_arrived: list[int] = []
#: The re-delivery of a swallowed signal, pending (see :func:`_unraisable`).
_again: list[threading.Timer] = []


def _interrupt(signum: int, frame: object) -> None:
    _arrived.append(signum)
    raise Interrupted(signum)


def _unraisable(unraisable: Any) -> None:
    """Our Interrupted, swallowed where exceptions cannot propagate: say nothing, and
    deliver the signal again in a moment, to our handler or to the implementation's if it
    took signals over meanwhile. Anything else goes to Python's own hook."""
    if isinstance(unraisable.exc_value, Interrupted):
        signum = unraisable.exc_value.args[0]
        timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
        timer.daemon = True
        _again.append(timer)
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def _forget_signals() -> None:
    """We are stopping because of the signal: no re-delivery."""
    for timer in _again:
        timer.cancel()


def _implementation(entry: registry.Entry) -> Implementation:
    """Import ``entry``'s modules; a signal that arrived meanwhile stops us now, even if
    the exception it raised was swallowed on the way."""
    loaded = registry.load(entry)
    if _arrived:
        _forget_signals()
        raise Interrupted(_arrived[0])
    return loaded


class StdoutGone(OSError):
    """Standard output cannot be written (a closed pipe, a full disk)."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- argument types: each raises ArgumentTypeError with a one-line reason ---------------


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(text: str) -> int:
    """A whole number in ASCII digits: int() alone takes "1_000" and "٣"."""
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


def _bounded(name: str, low: int, high: int, parse: Callable[[str], int]) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = parse(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{name} must be a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be {low} to {high}: {text!r}")
        return value

    return convert


_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def _seconds(text: str) -> float:
    if text.startswith("-") and _SECONDS.fullmatch(text[1:]):
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more: {text!r}")
    if not _SECONDS.fullmatch(text):  # float() would take "1_0", "inf" and "٣"
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return float(text)


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be more than 0: {text!r}")
    return value


_port = _bounded("port", 0, 65535, _whole)  # 0: a free port, for a server
_peer_port = _bounded("port", 1, 65535, _whole)  # a client cannot connect to port 0


def _knob(text: str) -> tuple[str, int]:
    """``PATH=SIZE``: a module or class attribute and the whole number to set it to."""
    path, equals, value = text.partition("=")
    if not equals or "." not in path or not all(part.isidentifier() for part in path.split(".")):
        raise argparse.ArgumentTypeError(
            f"not a knob: {text!r} (use PATH=SIZE, e.g. nbio.asyncio_impl.server.READ_SIZE=64KiB)"
        )
    return path, _size(value)


def _variant(text: str) -> bench.Target:
    """``IMPL[/LOOP]:PATH=SIZE[,PATH=SIZE...]``: a row with knobs set in both processes."""
    from . import bench

    name, colon, knobs = text.partition(":")
    impl, _, loop = name.partition("/")
    if not colon or not impl or not knobs:
        raise argparse.ArgumentTypeError(
            f"not a variant: {text!r} (use IMPL[/LOOP]:PATH=SIZE[,PATH=SIZE])"
        )
    return bench.Target(impl, loop or "default", tuple(_knob(k) for k in knobs.split(",")))


# --- parser -----------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="nbio",
        description="The talk's sink server and large-payload client, in several frameworks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    impls = commands.add_parser("impls", help="list the implementations installed here")
    impls.add_argument("--json", action="store_true", help="print one JSON list")

    serve = commands.add_parser("serve", help="run a sink server until SIGINT or SIGTERM")
    _common_arguments(serve, _port, "0 takes a free port")
    serve.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        help="seconds open transfers get after a signal (default %(default)s)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        default=None,
        help="close a connection that sends nothing for this long (default: never)",
    )
    serve.add_argument(
        "--max-connections",
        type=_bounded("max connections", 1, MAX_CONNECTIONS, _whole),
        default=DEFAULT_MAX_CONNECTIONS,
        help="refuse connections beyond this many open (default %(default)s)",
    )

    send = commands.add_parser("send", help="stream a payload to a sink")
    _common_arguments(send, _peer_port, "the sink's")
    send.add_argument(
        "--size",
        type=_size,
        default=None,
        help=f"bytes per connection: 73400320, 70MB, 64KiB, 1GiB (default {TALK_SIZE}, the talk's)",
    )
    send.add_argument(
        "--pattern",
        choices=PATTERNS,
        default="foobar",
        help="what to send (default: the talk's foobar\\n)",
    )
    send.add_argument(
        "--seed",
        type=_bounded("seed", 0, 2**63, _whole),
        default=0,
        help="seed of the random pattern",
    )
    send.add_argument("--file", default=None, help="send this file's bytes instead of a pattern")
    send.add_argument(
        "--connections",
        type=_bounded("connections", 1, MAX_CONNECTIONS, _whole),
        default=1,
        help="connections, each sending --size bytes (all at once unless --concurrency)",
    )
    send.add_argument(
        "--concurrency",
        type=_bounded("concurrency", 1, MAX_CONNECTIONS, _whole),
        default=None,
        help="at most this many connections open at once, each starting as one ends",
    )
    send.add_argument(
        "--chunk-size",
        type=_bounded("chunk size", 1, MAX_CHUNK_SIZE, parse_size),
        default=DEFAULT_CHUNK_SIZE,
        help="bytes per write (default 256KiB)",
    )
    send.add_argument(
        "--close-timeout",
        type=_positive_seconds,
        default=CLOSE_TIMEOUT,
        help="seconds to wait, after the last byte, for the sink to close in turn: the "
        "receipt that it has everything (default %(default)s)",
    )
    demo = commands.add_parser(
        "demo", help="run a sink and a client as two processes and print the throughput"
    )
    demo.add_argument("--impl", default=DEFAULT_IMPL, help=f"default {DEFAULT_IMPL}")
    demo.add_argument("--loop", default="default", help="loop or reactor (default: default)")
    demo.add_argument(
        "--size",
        type=_size,
        default=TALK_SIZE,
        help=f"bytes to send (default {TALK_SIZE}, the talk's)",
    )
    profile_ = commands.add_parser(
        "profile",
        help="record a py-spy flame graph (SVG) of the client and of the server in one transfer",
    )
    profile_.add_argument("--impl", default=DEFAULT_IMPL, help=f"default {DEFAULT_IMPL}")
    profile_.add_argument("--loop", default="default", help="loop or reactor (default: default)")
    profile_.add_argument(
        "--workload",
        choices=list(workloads.WORKLOADS),
        default="stream",
        help="what the transfer sends, as in compare (default stream)",
    )
    profile_.add_argument(
        "--size", type=_size, default=None, help="bytes per connection (default: the workload's)"
    )
    profile_.add_argument(
        "--out", default=".", help="folder of the SVGs, IMPL-LOOP-WORKLOAD-SIDE.svg (default .)"
    )
    compare_ = commands.add_parser(
        "compare", help="measure every implementation and loop side by side, as processes"
    )
    compare_.add_argument(
        "--workload",
        choices=[*workloads.WORKLOADS, "all"],
        default="stream",
        help="what every run sends: "
        + "; ".join(f"{w.name}: {w.what}" for w in workloads.WORKLOADS.values())
        + "; all: each in turn (default stream)",
    )
    compare_.add_argument(
        "--size",
        type=_size,
        default=None,
        help="bytes per connection (default: the workload's, 256MiB for stream)",
    )
    compare_.add_argument(
        "--repeat",
        type=_bounded("repeat", 1, 100, _whole),
        default=3,
        help="runs per row (default 3); rows report medians",
    )
    compare_.add_argument(
        "--impls", default=None, help="comma-separated implementations (default: all installed)"
    )
    compare_.add_argument(
        "--loops",
        default=None,
        help="comma-separated loops, or all (default: each implementation's default loop)",
    )
    compare_.add_argument(
        "--connections",
        type=_bounded("connections", 1, MAX_CONNECTIONS, _whole),
        default=None,
        help="connections per run, each --size bytes (default: the workload's)",
    )
    compare_.add_argument(
        "--concurrency",
        type=_bounded("concurrency", 1, MAX_CONNECTIONS, _whole),
        default=None,
        help="at most this many connections at once (default: the workload's)",
    )
    compare_.add_argument(
        "--chunk-size",
        type=_bounded("chunk size", 1, MAX_CHUNK_SIZE, parse_size),
        default=None,
        help="bytes per client write (default: the workload's, 256KiB but for small-writes)",
    )
    compare_.add_argument(
        "--digest",
        choices=DIGESTS,
        default="none",
        help="also check sha256 on both sides (costs CPU; default none)",
    )
    compare_.add_argument(
        "--syscalls",
        action="store_true",
        help="also count each row's sends, receives and waits under strace -f -c "
        "(one more transfer per row, and a 1-byte one to subtract)",
    )
    compare_.add_argument(
        "--matrix",
        action="store_true",
        help="every client against every server instead (default loops)",
    )
    compare_.add_argument(
        "--seed",
        type=_bounded("seed", 0, 2**32 - 1, _whole),
        default=None,
        help="seed of the shuffled order (default: a fresh one, printed with the report)",
    )
    compare_.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="IMPL[/LOOP]:PATH=SIZE",
        help="also run IMPL with knobs set (see serve --tune), as a row of its own",
    )
    compare_.add_argument(
        "--save", metavar="FILE.json", default=None, help="store the raw report in FILE.json"
    )
    _output_arguments(compare_)

    report_ = commands.add_parser(
        "report", help="render a report that compare --save stored, or several side by side"
    )
    report_.add_argument(
        "paths",
        metavar="FILE.json",
        nargs="+",
        help="reports stored by compare --save; several: one column group each, side by side",
    )
    _output_arguments(report_)
    return parser


def _output_arguments(parser: Parser) -> None:
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw bar charts to FILE.png (needs the plot extra)",
    )


def _common_arguments(parser: Parser, port: Callable[[str], int], port_help: str) -> None:
    parser.add_argument(
        "--impl",
        default=DEFAULT_IMPL,
        help=f"implementation, see 'nbio impls' (default {DEFAULT_IMPL})",
    )
    parser.add_argument("--loop", default="default", help="loop or reactor (default: default)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"default %(default)s; {port_help}"
    )
    parser.add_argument(
        "--digest", choices=DIGESTS, default="none", help="hash what passes (default none)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--tune",
        type=_knob,
        action="append",
        default=[],
        metavar="PATH=SIZE",
        help="an experiment: set a module or class attribute first, e.g. "
        "twisted.internet.abstract.FileDescriptor.SEND_LIMIT=1MiB (repeatable)",
    )


# --- checks that need more than one argument --------------------------------------------


def _entry(args: argparse.Namespace) -> registry.Entry:
    try:
        entry = registry.get(args.impl)
    except registry.UnknownImplementation as exc:
        raise UsageError(str(exc)) from None
    missing = entry.missing()
    if missing:
        raise UsageError(
            f"{entry.name} needs {', '.join(missing)}, which is not installed "
            f"(pip install 'nbio[{entry.extra or entry.framework}]')"
        )
    try:
        loop = entry.loop(args.loop)
    except KeyError:
        names = ", ".join(loop.name for loop in entry.loops)
        raise UsageError(f"{entry.name} has no loop {args.loop!r} (use {names})") from None
    if loop.missing():
        raise UsageError(
            f"loop {loop.name!r} needs {', '.join(loop.missing())}, which is not installed "
            f"(pip install 'nbio[{loop.name}]')"
        )
    return entry


def _check_host(host: str) -> None:
    if not host.strip():
        raise UsageError("host must not be empty")
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise UsageError(f"cannot resolve host {host!r}: {reason}") from None


def _payload(args: argparse.Namespace) -> Payload:
    if args.file is not None:
        if args.size is not None:
            raise UsageError("give --size or --file, not both: a file is sent whole")
        if args.pattern != "foobar":
            raise UsageError("give --pattern or --file, not both")
        try:
            return Payload.from_file(args.file)
        except PayloadError as exc:
            raise UsageError(str(exc)) from None
    size = TALK_SIZE if args.size is None else args.size
    return Payload(size=size, pattern=args.pattern, seed=args.seed)


# --- output -----------------------------------------------------------------------------


def _out(text: str) -> None:
    """Print a line to stdout now, or raise :class:`StdoutGone`."""
    try:
        print(text, flush=True)
    except OSError as exc:
        # What was not written would fail again at exit: send the rest to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise StdoutGone(exc.errno, f"cannot write to stdout: {error_text(exc)}") from None


def _printer(as_json: bool) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        if isinstance(event, AcceptPaused) and not as_json:
            _say(f"nbio serve: {describe(event)}")
            return
        _out(to_json(event) if as_json else describe(event))

    return emit


def _stop_when_stdout_goes(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """A server whose stdout went away (``nbio serve --json | head -1``) says so once on
    stderr and stops as SIGTERM would stop it; nothing more is printed."""
    gone = [False]

    def emit_or_stop(event: Event) -> None:
        if gone[0]:
            return
        try:
            emit(event)
        except StdoutGone as exc:
            gone[0] = True
            _say(f"nbio serve: {exc.strerror}: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    return emit_or_stop


def _with_usage(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """Add the server's resident size at ``listening`` (the baseline its growth is
    measured from) and, to ``stopped``, its peak RSS and CPU since listening, the same way
    for every implementation."""
    listening_cpu = [0.0]

    def emit_with_usage(event: Event) -> None:
        if isinstance(event, Listening):
            listening_cpu[0] = usage.cpu_seconds()
            event = dataclasses.replace(event, rss_kib=usage.rss_kib())
        elif isinstance(event, Stopped):
            event = dataclasses.replace(
                event,
                peak_rss_kib=usage.peak_rss_kib(),
                cpu_s=usage.cpu_seconds() - listening_cpu[0],
            )
        emit(event)

    return emit_with_usage


def _apply_tune(knobs: list[tuple[str, int]]) -> None:
    """Set each ``--tune`` knob: an existing whole-number attribute of a module or class."""
    for path, value in knobs:
        owner_path, _, attribute = path.rpartition(".")
        module_path, owner = owner_path, None
        attributes: list[str] = []
        while owner is None and module_path:
            try:
                owner = importlib.import_module(module_path)
            except ImportError:
                module_path, _, name = module_path.rpartition(".")
                attributes.insert(0, name)
        for name in attributes:
            owner = getattr(owner, name, None)
        current = getattr(owner, attribute, None)
        if owner is None or not isinstance(current, int) or isinstance(current, bool):
            raise UsageError(f"--tune {path}: no such whole-number attribute")
        setattr(owner, attribute, value)


@contextmanager
def _progress(total: int, enabled: bool, unit: str = "bytes") -> Iterator[Progress]:
    """A progress bar on stderr while sending or comparing, when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else ()
    with Progress(
        *Progress.get_default_columns(),
        *columns,
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("sending" if unit == "bytes" else "comparing", total=total)
        yield lambda count: bar.advance(task, count)


# --- commands ---------------------------------------------------------------------------


def _loop_text(entry: registry.Entry, name: str) -> str:
    detail = entry.loop(name).detail
    return f"{name} ({detail})" if detail else name


def run_impls(args: argparse.Namespace) -> int:
    available = registry.available()
    if args.json:
        _out(json.dumps([entry.to_json() for entry in available]))
        return 0
    for entry in registry.ENTRIES:
        if entry in available:
            _out(
                f"{entry.name:<20} {entry.framework:<10} {entry.variant:<10} "
                f"loops: {', '.join(_loop_text(entry, name) for name in entry.available_loops())}"
            )
        else:
            _out(f"{entry.name:<20} not installed: pip install 'nbio[{entry.extra}]'")
        if entry.note:
            _out(f"{'':<20} note: {entry.note}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    entry = _entry(args)
    _check_host(args.host)
    usage.raise_fd_limit()  # one descriptor per connection: take what the system allows
    loop_limit = entry.loop(args.loop).max_connections
    if loop_limit is not None and args.max_connections > loop_limit:
        # select() cannot watch descriptor 1024: refuse beyond that instead of failing.
        args.max_connections = loop_limit
    options = ServeOptions(
        impl=entry.name,
        host=args.host,
        port=args.port,
        loop=args.loop,
        digest=args.digest,
        grace=args.grace,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        tune=tuple(args.tune),
    )
    implementation = _implementation(entry)
    _apply_tune(args.tune)
    try:
        stopped_by = implementation.serve(
            options, _with_usage(_stop_when_stdout_goes(_printer(args.json)))
        )
    except OSError as exc:
        _say(f"nbio serve: error: cannot listen on {args.host}:{args.port}: {error_text(exc)}")
        return 1
    return 130 if stopped_by == signal.SIGINT else 0


def run_send(args: argparse.Namespace) -> int:
    entry = _entry(args)
    _check_host(args.host)
    loop_limit = entry.loop(args.loop).max_connections
    if loop_limit is not None and at_once(args.connections, args.concurrency) > loop_limit:
        raise UsageError(
            f"the {args.loop} loop watches at most {loop_limit} connections (select() stops at "
            f"descriptor 1024): use fewer, or another loop"
        )
    usage.raise_fd_limit()
    payload = _payload(args)
    options = SendOptions(
        payload=payload,
        host=args.host,
        port=args.port,
        loop=args.loop,
        connections=args.connections,
        digest=args.digest,
        chunk_size=args.chunk_size,
        close_timeout=args.close_timeout,
        concurrency=args.concurrency,
    )
    implementation = _implementation(entry)
    _apply_tune(args.tune)
    for module in entry.loop(args.loop).requires:  # uvloop: imported before the baseline too
        importlib.import_module(module)
    rss_kib = usage.rss_kib()  # the baseline of the client's memory growth: after imports
    emit = _printer(args.json)
    chunks = 0
    try:
        with _progress(payload.size * args.connections, enabled=not args.json) as advance:

            def progress(count: int) -> None:
                nonlocal chunks
                chunks += 1  # every client reports each chunk it hands to its framework
                advance(count)

            result = implementation.send(options, progress)
    except SendFailed as exc:
        _say(f"nbio send: error: {exc.message} ({exc.bytes_sent} bytes sent)")
        if args.json:
            with contextlib.suppress(StdoutGone):  # the line on stderr said it already
                emit(Error(message=exc.message, bytes=exc.bytes_sent))
        return 128 + exc.signal if exc.signal else 1
    sent = Sent(
        bytes=result.bytes,
        sha256=result.sha256,
        seconds=result.seconds,
        connections=result.connections,
        loop_delay=result.loop_delay,
        digest=options.digest,
        chunk_size=options.chunk_size,
        chunks=chunks,
        tune=dict(args.tune),
        first_byte_at=result.first_byte_at,
        ended_at=result.ended_at,
        cpu_s=result.cpu_s,
        waits=result.waits,
        rss_kib=rss_kib,
        peak_rss_kib=usage.peak_rss_kib(),
        concurrency=args.concurrency,
        latency=result.latency,
    )
    try:
        emit(sent)
    except StdoutGone as exc:
        _say(f"nbio send: error: {exc.strerror} (the transfer completed: {sent.bytes} bytes sent)")
        return 1
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from . import bench, report

    entry = _entry(args)
    target = bench.Target(entry.name, args.loop)
    _out(
        f"{entry.name} ({args.loop} loop): sink server and client in two processes, "
        f"sending {args.size} bytes ({human_size(args.size)}) of foobar over 127.0.0.1, "
        "sha256 on both sides"
    )
    try:
        transfer = bench.run_transfer(target, target, bench.Settings(args.size, digest="sha256"))
    except bench.TransferFailed as exc:
        _say(f"nbio demo: error: {exc}")
        return 1
    sent, (received,) = transfer.sent, transfer.received
    _out(
        f"server received {received['bytes']} bytes in {received['seconds']:.3f} s: "
        f"{transfer.server_mb_per_s:.1f} MB/s (first byte to EOF, hashing included), "
        "sha256 matches"
    )
    delay = report.Delay.of([sent])
    _out(
        f"client: CPU {sent['cpu_s']:.2f} s, peak RSS {sent['peak_rss_kib'] / 1024:.1f} MiB; "
        f"loop delay p50/p99/max (ticks of its 10 ms ticker) {delay.text()} ms"
    )
    _out("timing without the digest, repeated and side by side: nbio compare")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    from . import bench, profile

    entry = _entry(args)
    if profile.py_spy() is None:
        raise UsageError("profile needs py-spy (pip install 'nbio[profile]')")
    if not os.path.isdir(args.out) or not os.access(args.out, os.W_OK):
        raise UsageError(f"cannot write SVGs into {args.out!r}")
    workload = workloads.WORKLOADS[args.workload]
    limit = entry.loop(args.loop).max_connections
    settings = bench.Settings(
        workload.size if args.size is None else args.size,
        workload.connections,
        workload.chunk_size,
        "none",
        workload.concurrency,
    )
    if limit is not None and settings.at_once > limit:
        raise UsageError(f"the {args.loop} loop watches at most {limit} connections")
    name = f"{entry.name}-{args.loop}-{args.workload}"
    try:
        done = profile.record(bench.Target(entry.name, args.loop), settings, args.out, name)
    except bench.TransferFailed as exc:
        _say(f"nbio profile: error: {exc}")
        return 1
    seconds = done.transfer.server_seconds
    _out(
        f"{entry.name} ({args.loop} loop), {args.workload}: "
        f"{done.transfer.server_bytes} bytes in {seconds:.3f} s, sampled {profile.RATE} times a "
        "second by py-spy"
    )
    for side, svg in done.svgs.items():
        _out(f"{side}: {svg}")
    return 0


def _names(text: str | None, known: set[str], what: str) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(
            f"unknown {what} {', '.join(unknown) or repr(text)} (known: {', '.join(sorted(known))})"
        )
    return names


def run_compare(args: argparse.Namespace) -> int:
    from . import compare

    impls = _names(args.impls, {e.name for e in registry.ENTRIES}, "implementation")
    every_loop = args.loops == "all"
    known_loops = {loop.name for e in registry.ENTRIES for loop in e.loops}
    loops = None if every_loop else _names(args.loops, known_loops, "loop") or ["default"]
    if args.size is not None and args.size < 1:
        raise UsageError("size must be at least 1 byte: throughput of nothing is no figure")
    _check_outputs(args)
    chosen = compare.targets(impls, loops)
    if impls and not any(t.impl in impls for t in chosen):
        raise UsageError("none of those implementations is installed on those loops")
    for variant in args.variant:
        _check_variant(variant)
    chosen += args.variant
    seed = random.randrange(2**32) if args.seed is None else args.seed
    names = list(workloads.WORKLOADS) if args.workload == "all" else [args.workload]
    status = 0
    for name in names:
        workload = workloads.WORKLOADS[name]
        settings = compare.CompareSettings(
            size=workload.size if args.size is None else args.size,
            seed=seed,
            repeat=args.repeat,
            connections=workload.connections if args.connections is None else args.connections,
            chunk_size=workload.chunk_size if args.chunk_size is None else args.chunk_size,
            digest=args.digest,
            matrix=args.matrix,
            workload=name,
            concurrency=workload.concurrency if args.concurrency is None else args.concurrency,
            syscalls=args.syscalls,
        )
        fit = [t for t in chosen if _watches(t, settings.transfer.at_once)]
        for target in chosen:
            if target not in fit:  # a select() loop: not a failure of the framework
                _say(
                    f"nbio compare: {name}: skipping {target.id}: its loop watches fewer "
                    f"than {settings.transfer.at_once} connections"
                )
        save = args.save
        if save is not None and len(names) > 1:  # one stored report per workload
            stem, dot, suffix = save.rpartition(".")
            save = f"{stem}-{name}.{suffix}" if dot else f"{save}-{name}"
        status = max(status, _compare_one(settings, fit, args, save))
    return status


def _watches(target: bench.Target, connections: int) -> bool:
    """Whether ``target``'s loop can watch ``connections`` sockets at once."""
    from . import bench

    if target.impl == bench.REFERENCE:
        return True
    limit = registry.get(target.impl).loop(target.loop).max_connections
    return limit is None or connections <= limit


def _compare_one(
    settings: compare.CompareSettings,
    chosen: list[bench.Target],
    args: argparse.Namespace,
    save: str | None,
) -> int:
    from . import compare, report

    started = time.monotonic()
    if args.matrix:
        count = len([t for t in chosen if t.loop == "default"]) ** 2
        with _progress(count, enabled=True, unit="runs") as advance:
            measured = compare.run_matrix(settings, chosen, advance)
    else:
        with _progress(compare.steps(settings, len(chosen) + 1), True, "runs") as advance:
            measured = compare.run(settings, chosen, advance)
    measured.seconds = round(time.monotonic() - started, 1)  # as the saved report keeps it
    if save is not None:
        with open(save, "w", encoding="utf-8") as file:
            file.write(measured.to_json(report.figures) + "\n")
    _render(measured, args)
    failed = [r.target.id for r in measured.rows if r.error]
    failed += [f"{c.client} to {c.server}" for c in measured.matrix if c.transfer is None]
    if failed:
        _say(f"nbio compare: error: {len(failed)} row(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


def run_report(args: argparse.Namespace) -> int:
    from . import report

    _check_outputs(args)
    stored = [(path, _load(path)) for path in args.paths]
    if len(stored) == 1:
        _render(stored[0][1], args)
        return 0
    if args.plot is not None:
        raise UsageError("--plot draws one report: name one FILE.json")
    if args.json:
        _out(json.dumps([json.loads(r.to_json(report.figures)) for _, r in stored], indent=1))
        return 0
    try:
        headers, table = report.side_by_side(stored)
    except ValueError as exc:
        raise UsageError(f"cannot set side by side: {exc}") from None
    if args.markdown:
        _out(report.side_by_side_markdown(stored).rstrip("\n"))
        return 0
    from rich.console import Console
    from rich.table import Table

    text = io.StringIO()
    console = Console(file=text, width=240, force_terminal=sys.stdout.isatty())
    for path, one in stored:
        console.print(f"{path}: {report.header(one)}", highlight=False)
    grid = Table(show_edge=False, pad_edge=False)
    for name in headers:
        grid.add_column(name, justify="left" if name in ("impl", "loop") else "right")
    for line in table:
        grid.add_row(*line)
    console.print(grid)
    _out(text.getvalue().rstrip("\n"))
    return 0


def _load(path: str) -> compare.Report:
    from . import compare

    try:
        with open(path, encoding="utf-8") as file:
            return compare.Report.from_json(file.read())
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path!r} is not a report that compare --save stored ({exc})") from None


def _check_outputs(args: argparse.Namespace) -> None:
    for path in (args.plot, getattr(args, "save", None)):
        if path is not None and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise UsageError(f"cannot write {path!r}")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib (pip install 'nbio[plot]')")


def _check_variant(variant: bench.Target) -> None:
    try:
        entry = registry.get(variant.impl)
    except registry.UnknownImplementation as exc:
        raise UsageError(str(exc)) from None
    if variant.loop not in entry.available_loops():
        raise UsageError(f"{variant.impl} has no loop {variant.loop!r} installed here")


def _render(measured: compare.Report, args: argparse.Namespace) -> None:
    from . import report

    if args.json:
        _out(measured.to_json(report.figures))
    elif args.markdown:
        _out(report.to_markdown(measured).rstrip("\n"))
    else:
        _out(_table(measured))
    if args.plot is not None:
        from .plot import plot

        plot(measured, args.plot)


def _table(measured: compare.Report) -> str:
    """The report as a table for the terminal (wide enough even when piped)."""
    from rich.console import Console
    from rich.table import Table

    from . import report

    text = io.StringIO()
    width = os.get_terminal_size().columns if sys.stdout.isatty() else 240
    console = Console(file=text, width=width, force_terminal=sys.stdout.isatty())
    console.print(report.header(measured), highlight=False)
    rows = report.reduce(measured)
    if rows:
        table = Table(show_edge=False, pad_edge=False)
        workload = measured.settings.workload
        for header in report.columns(workload):
            table.add_column(header, justify="left" if header in ("impl", "loop") else "right")
        for row in rows:
            table.add_row(*report.cells(row, workload))
        console.print(table)
    if any(row.syscalls for row in rows):
        console.print(report.SYSCALLS_TITLE.format(per=report.per(measured)), highlight=False)
        table = Table(show_edge=False, pad_edge=False)
        for header in report.SYSCALL_COLUMNS:
            table.add_column(header, justify="left" if header in ("impl", "loop") else "right")
        for row in rows:
            if row.syscalls:
                table.add_row(*report.syscall_cells(row))
        console.print(table)
    if measured.matrix:
        console.print(report.matrix_markdown(measured), highlight=False)
    return text.getvalue().rstrip("\n")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "impls": run_impls,
    "serve": run_serve,
    "send": run_send,
    "demo": run_demo,
    "compare": run_compare,
    "profile": run_profile,
    "report": run_report,
}


def _say(line: str) -> None:
    """One line on stderr, if stderr can still take it."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nbio``; return the exit status."""
    # From here until an implementation takes them over, SIGINT and SIGTERM end us cleanly.
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, _interrupt)
    sys.unraisablehook = _unraisable
    words = sys.argv[1:] if argv is None else list(argv)
    command = f"nbio {words[0]}" if words and words[0] in COMMANDS else "nbio"
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        _say(f"{command}: error: {exc}")
        return 2
    except StdoutGone as exc:
        _say(f"{command}: error: {exc.strerror}")
        return 1
    except Interrupted as exc:
        _forget_signals()
        signum: int = exc.args[0]
        _say(f"{command}: stopped by {signal_name(signum)}")
        return 128 + signum
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
