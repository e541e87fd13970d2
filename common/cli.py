"""The ``nbio`` command: ``impls``, ``serve`` and ``send``, dispatched through the registry.

Bad input exits 2 with one line on stderr; a transfer that fails exits 1 with one line that
says how many bytes went out. Neither ever prints a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import socket
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from common import bench, compare, registry, usage
from common.accounting import DIGESTS
from common.events import Error, Event, Listening, Sent, Stopped, describe, to_json
from common.interface import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    Progress,
    SendFailed,
    SendOptions,
    ServeOptions,
    describe_error,
)
from common.payload import DEFAULT_CHUNK_SIZE, PATTERNS, TALK_SIZE, Payload, PayloadError
from common.sizes import SizeError, human_size, parse_size

__all__ = ["main"]

DEFAULT_IMPL = "asyncio-streams"
MAX_CONNECTIONS = 100_000
MAX_CHUNK_SIZE = 64 * 1024 * 1024


class UsageError(Exception):
    """Bad input found after parsing; exit 2 with this one line."""


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be more than 0: {text!r}")
    return value


_port = _bounded("port", 0, 65535, int)


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
    _common_arguments(serve)
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
        type=_bounded("max connections", 1, MAX_CONNECTIONS, int),
        default=DEFAULT_MAX_CONNECTIONS,
        help="refuse connections beyond this many open (default %(default)s)",
    )

    send = commands.add_parser("send", help="stream a payload to a sink")
    _common_arguments(send)
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
        "--seed", type=_bounded("seed", 0, 2**63, int), default=0, help="seed of the random pattern"
    )
    send.add_argument("--file", default=None, help="send this file's bytes instead of a pattern")
    send.add_argument(
        "--connections",
        type=_bounded("connections", 1, MAX_CONNECTIONS, int),
        default=1,
        help="concurrent connections, each sending --size bytes",
    )
    send.add_argument(
        "--chunk-size",
        type=_bounded("chunk size", 1, MAX_CHUNK_SIZE, parse_size),
        default=DEFAULT_CHUNK_SIZE,
        help="bytes per write (default 256KiB)",
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
    compare_ = commands.add_parser(
        "compare", help="measure every implementation and loop side by side, as processes"
    )
    compare_.add_argument(
        "--size",
        type=_size,
        default=256 * 1024 * 1024,
        help="bytes per connection (default 256MiB)",
    )
    compare_.add_argument(
        "--repeat",
        type=_bounded("repeat", 1, 100, int),
        default=3,
        help="runs per row (default 3); rows report medians",
    )
    compare_.add_argument(
        "--impls", default=None, help="comma-separated implementations (default: all installed)"
    )
    compare_.add_argument(
        "--loops", default=None, help="comma-separated loops (default: every loop of each)"
    )
    compare_.add_argument(
        "--connections",
        type=_bounded("connections", 1, MAX_CONNECTIONS, int),
        default=1,
        help="concurrent connections per run, each --size bytes",
    )
    compare_.add_argument(
        "--chunk-size",
        type=_bounded("chunk size", 1, MAX_CHUNK_SIZE, parse_size),
        default=DEFAULT_CHUNK_SIZE,
        help="bytes per client write (default 256KiB)",
    )
    compare_.add_argument(
        "--digest",
        choices=DIGESTS,
        default="none",
        help="also check sha256 on both sides (costs CPU; default none)",
    )
    compare_.add_argument(
        "--matrix",
        action="store_true",
        help="every client against every server instead (default loops)",
    )
    output = compare_.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    compare_.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw bar charts to FILE.png (needs the plot extra)",
    )
    return parser


def _common_arguments(parser: Parser) -> None:
    parser.add_argument(
        "--impl",
        default=DEFAULT_IMPL,
        help=f"implementation, see 'nbio impls' (default {DEFAULT_IMPL})",
    )
    parser.add_argument("--loop", default="default", help="loop or reactor (default: default)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="default %(default)s; 0 takes a free port"
    )
    parser.add_argument(
        "--digest", choices=DIGESTS, default="none", help="hash what passes (default none)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


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


def _printer(as_json: bool) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        print(to_json(event) if as_json else describe(event), flush=True)

    return emit


def _with_usage(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """Add the server's own CPU (from listening on) and peak RSS to its ``stopped`` event,
    the same way for every implementation."""
    listening_cpu = [0.0]

    def emit_with_usage(event: Event) -> None:
        if isinstance(event, Listening):
            listening_cpu[0] = usage.cpu_seconds()
        elif isinstance(event, Stopped):
            event = dataclasses.replace(
                event,
                peak_rss_kib=usage.peak_rss_kib(),
                cpu_s=usage.cpu_seconds() - listening_cpu[0],
            )
        emit(event)

    return emit_with_usage


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
        print(json.dumps([entry.to_json() for entry in available]))
        return 0
    for entry in registry.ENTRIES:
        if entry in available:
            print(
                f"{entry.name:<20} {entry.framework:<10} {entry.variant:<10} "
                f"loops: {', '.join(_loop_text(entry, name) for name in entry.available_loops())}"
            )
        else:
            print(f"{entry.name:<20} not installed: pip install 'nbio[{entry.extra}]'")
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
    )
    implementation = registry.load(entry)
    try:
        implementation.serve(options, _with_usage(_printer(args.json)))
    except OSError as exc:
        print(
            f"nbio serve: error: cannot listen on {args.host}:{args.port}: {describe_error(exc)}",
            file=sys.stderr,
        )
        return 1
    return 0


def run_send(args: argparse.Namespace) -> int:
    entry = _entry(args)
    _check_host(args.host)
    loop_limit = entry.loop(args.loop).max_connections
    if loop_limit is not None and args.connections > loop_limit:
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
    )
    implementation = registry.load(entry)
    emit = _printer(args.json)
    try:
        with _progress(payload.size * args.connections, enabled=not args.json) as progress:
            cpu_before = usage.cpu_seconds()  # after start-up and the framework's imports
            result = implementation.send(options, progress)
    except SendFailed as exc:
        error = Error(message=exc.message, bytes=exc.bytes_sent)
        if args.json:
            emit(error)
        print(f"nbio send: error: {exc.message} ({exc.bytes_sent} bytes sent)", file=sys.stderr)
        return 1
    emit(
        Sent(
            bytes=result.bytes,
            sha256=result.sha256,
            seconds=result.seconds,
            connections=result.connections,
            loop_delay=result.loop_delay,
            peak_rss_kib=usage.peak_rss_kib(),
            cpu_s=usage.cpu_seconds() - cpu_before,
        )
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    entry = _entry(args)
    target = (entry.name, args.loop)
    print(
        f"{entry.name} ({args.loop} loop): sink server and client in two processes, "
        f"sending {args.size} bytes ({human_size(args.size)}) of foobar over 127.0.0.1",
        flush=True,
    )
    try:
        transfer = bench.run_transfer(target, target, ["--size", str(args.size)])
    except bench.TransferFailed as exc:
        print(f"nbio demo: error: {exc}", file=sys.stderr)
        return 1
    sent, (received,) = transfer.sent, transfer.received
    print(
        f"server received {received['bytes']} bytes in {received['seconds']:.3f} s: "
        f"{transfer.server_mb_per_s:.1f} MB/s (first byte to EOF), sha256 matches"
    )
    print(
        f"client: CPU {sent['cpu_s']:.2f} s, peak RSS {sent['peak_rss_kib'] / 1024:.1f} MiB, "
        f"{sent['ticks']} ticks of its 10 ms ticker, loop delay p99 "
        f"{sent['loop_delay_ms']['p99']:.1f} ms"
    )
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
    impls = _names(args.impls, {e.name for e in registry.ENTRIES}, "implementation")
    loops = _names(args.loops, {loop.name for e in registry.ENTRIES for loop in e.loops}, "loop")
    if args.plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib (pip install 'nbio[plot]')")
        if not os.access(os.path.dirname(os.path.abspath(args.plot)), os.W_OK):
            raise UsageError(f"cannot write {args.plot!r}")
    chosen = compare.targets(impls, loops)
    if impls and not any(t.impl in impls for t in chosen):
        raise UsageError("none of those implementations is installed on those loops")
    settings = {
        "size": human_size(args.size),
        "bytes": args.size,
        "repeat": args.repeat,
        "connections": args.connections,
        "chunk_size": args.chunk_size,
        "digest": args.digest,
        "matrix": args.matrix,
    }
    report = compare.Report(compare.machine(), settings)
    send_args = ["--size", str(args.size), "--chunk-size", str(args.chunk_size)]

    def transfer(client: compare.Target, server: compare.Target) -> bench.Transfer:
        return bench.run_transfer(
            (server.impl, server.loop),
            (client.impl, client.loop),
            send_args,
            args.connections,
            args.digest,
        )

    if args.matrix:
        defaults = [t for t in chosen if t.loop == "default"]
        pairs = [(c, s) for c in defaults for s in defaults]
        with _progress(len(pairs), enabled=True, unit="runs") as advance:
            for client, server in pairs:
                try:
                    done = transfer(client, server)
                    report.matrix.append(
                        compare.Cell(client.impl, server.impl, True, done.server_mb_per_s)
                    )
                except bench.TransferFailed as exc:
                    report.matrix.append(
                        compare.Cell(client.impl, server.impl, False, error=str(exc))
                    )
                advance(1)
    else:
        order = compare.plan(chosen, args.repeat)
        transfers: dict[compare.Target, list[bench.Transfer]] = {t: [] for t in chosen}
        errors: dict[compare.Target, list[str]] = {t: [] for t in chosen}
        with _progress(len(order), enabled=True, unit="runs") as advance:
            for target in order:
                try:
                    transfers[target].append(transfer(target, target))
                except bench.TransferFailed as exc:
                    errors[target].append(str(exc))
                advance(1)
        base = [t.server_mb_per_s for t in transfers.get(compare.Target(compare.BASELINE), [])]
        baseline = statistics.median(base) if base else None
        report.rows = [compare.summarize(t, transfers[t], errors[t], baseline) for t in chosen]
    if args.json:
        print(report.to_json())
    elif args.markdown:
        print(compare.to_markdown(report), end="")
    else:
        _print_table(report)
    if args.plot is not None:
        from common.plot import plot

        plot(report, args.plot)
    failed = [r for r in report.rows if r.error] + [c for c in report.matrix if not c.ok]
    if failed:
        print(f"nbio compare: error: {len(failed)} row(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _print_table(report: compare.Report) -> None:
    """The report as a table in the terminal (wide enough even when piped)."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(compare.describe_run(report), highlight=False)
    if report.rows:
        table = Table(show_edge=False, pad_edge=False)
        for header in compare.COLUMNS:
            table.add_column(header, justify="left" if header in ("impl", "loop") else "right")
        for row in report.rows:
            table.add_row(*compare.cells(row))
        console.print(table)
    if report.matrix:
        console.print(compare.matrix_markdown(report), highlight=False)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "impls": run_impls,
    "serve": run_serve,
    "send": run_send,
    "demo": run_demo,
    "compare": run_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nbio``; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"nbio {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1  # stdout went away (nbio ... | head): nothing more to say


if __name__ == "__main__":
    sys.exit(main())
