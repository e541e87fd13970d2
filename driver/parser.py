"""The parser of ``nbio``: every option declared once, in a parent parser that each command
using it inherits (argparse's ``parents=``), and the commands with their own options."""

from __future__ import annotations

from collections.abc import Callable

from . import arguments, workloads
from .arguments import Parser
from .common.accounting import DIGESTS
from .common.options import (
    CLOSE_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    MAX_REQUESTS,
    MODES,
    SINK,
    STALL_TIMEOUT,
)
from .common.payload import PATTERNS, TALK_SIZE

__all__ = ["DEFAULT_IMPL", "MAX_CHUNK_SIZE", "MAX_CONNECTIONS", "build_parser"]

DEFAULT_IMPL = "asyncio-streams"
MAX_CONNECTIONS = 100_000
MAX_CHUNK_SIZE = 64 * 1024 * 1024


def _parent() -> Parser:
    return Parser(add_help=False)


def _target() -> Parser:
    """Which implementation, on which loop: serve, send, demo, profile."""
    parent = _parent()
    parent.add_argument(
        "--impl",
        default=DEFAULT_IMPL,
        help=f"implementation, see 'nbio impls' (default {DEFAULT_IMPL})",
    )
    parent.add_argument("--loop", default="default", help="loop or reactor (default: default)")
    return parent


def _process(port_type: Callable[[str], int], port_help: str) -> Parser:
    """What a server or client process is given: where, what it hashes, how it reports."""
    parent = _parent()
    parent.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parent.add_argument(
        "--port", type=port_type, default=DEFAULT_PORT, help=f"default %(default)s; {port_help}"
    )
    parent.add_argument(
        "--digest", choices=DIGESTS, default="none", help="hash what passes (default none)"
    )
    parent.add_argument("--json", action="store_true", help="one JSON object per line")
    parent.add_argument(
        "--tune",
        type=arguments.knob,
        action="append",
        default=[],
        metavar="PATH=SIZE",
        help="an experiment: set a module or class attribute first, e.g. "
        "twisted.internet.abstract.FileDescriptor.SEND_LIMIT=1MiB (repeatable)",
    )
    return parent


def _size() -> Parser:
    """How much each connection sends: send, demo, compare, profile."""
    parent = _parent()
    parent.add_argument(
        "--size",
        type=arguments.size,
        default=None,
        help="bytes per connection: 73400320, 70MB, 64KiB, 1GiB (send and demo: "
        f"{TALK_SIZE}, the talk's; compare and profile: the workload's)",
    )
    parent.add_argument(
        "--duration",
        type=arguments.positive_seconds,
        default=None,
        metavar="SECONDS",
        help="send for this long (each connection from its first byte), then half-close; "
        "--size, if given, still caps it (compare: stream lasts 1.2 s unless --size)",
    )
    return parent


def _connections() -> Parser:
    """How a client spreads its transfers and writes: send and compare."""
    parent = _parent()
    parent.add_argument(
        "--connections",
        type=arguments.bounded("connections", 1, MAX_CONNECTIONS, arguments.whole),
        default=None,
        help="connections, each sending --size bytes, all at once unless --concurrency "
        "(send: 1; compare: the workload's)",
    )
    parent.add_argument(
        "--concurrency",
        type=arguments.bounded("concurrency", 1, MAX_CONNECTIONS, arguments.whole),
        default=None,
        help="at most this many connections open at once, each starting as one ends "
        "(compare: the workload's)",
    )
    parent.add_argument(
        "--chunk-size",
        type=arguments.bounded("chunk size", 1, MAX_CHUNK_SIZE, arguments.size),
        default=None,
        help="bytes per write (send: 256KiB; compare: the workload's)",
    )
    return parent


def _echo() -> Parser:
    """What an echo client's requests are: send and compare."""
    parent = _parent()
    parent.add_argument(
        "--message-size",
        type=arguments.bounded("message size", 1, MAX_CHUNK_SIZE, arguments.size),
        default=None,
        help="echo: bytes per request (send: 1KiB; compare: each of the grid's, 1, 10 and "
        "100 KiB, unless given)",
    )
    parent.add_argument(
        "--rate",
        type=arguments.positive_number,
        default=None,
        help="echo: send R requests a second per connection on a fixed schedule, whatever "
        "the answers do, and time each from its schedule (open loop; default: closed loop)",
    )
    return parent


def _tls() -> Parser:
    """Every connection of a measured run over TLS: compare and profile."""
    parent = _parent()
    parent.add_argument(
        "--tls",
        action="store_true",
        help="every connection over TLS 1.3, through each framework's own layer (a "
        "throwaway CA for the run; needs the tls extra)",
    )
    return parent


def _workload(choices: list[str], extra: str = "") -> Parser:
    parent = _parent()
    parent.add_argument(
        "--workload",
        choices=choices,
        default="stream",
        help="what every run sends: "
        + "; ".join(f"{w.name}: {w.what}" for w in workloads.WORKLOADS.values())
        + f"{extra} (default stream)",
    )
    return parent


def _output() -> Parser:
    """How a report is printed: compare and report."""
    parent = _parent()
    output = parent.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parent.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw bar charts to FILE.png (needs the plot extra)",
    )
    return parent


def build_parser() -> Parser:
    """The parser of every ``nbio`` command."""
    parser = Parser(
        prog="nbio",
        description="The talk's sink server and large-payload client, in several frameworks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    target, size, connections, output = _target(), _size(), _connections(), _output()
    echo, tls = _echo(), _tls()
    names = list(workloads.WORKLOADS)

    impls = commands.add_parser("impls", help="list the implementations installed here")
    impls.add_argument("--json", action="store_true", help="print one JSON list")

    serve = commands.add_parser(
        "serve",
        parents=[target, _process(arguments.port, "0 takes a free port")],
        help="run a sink server until SIGINT or SIGTERM",
    )
    serve.add_argument(
        "--grace",
        type=arguments.seconds,
        default=DEFAULT_GRACE,
        help="seconds open transfers get after a signal (default %(default)s)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=arguments.positive_seconds,
        default=None,
        help="close a connection that sends nothing for this long (default: never)",
    )
    serve.add_argument(
        "--mode",
        choices=MODES,
        default=SINK,
        help="sink: count and drop what is read (RFC 863, the talk's); echo: write every "
        "byte back, in order, with the framework's own flow control (RFC 862)",
    )
    serve.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS 1.3 through the framework's own TLS layer; without --cert and "
        "--key, with a throwaway CA and certificate for localhost (needs the tls extra), "
        "the CA's path said in the listening event",
    )
    serve.add_argument("--cert", metavar="PEM", default=None, help="the server's certificate")
    serve.add_argument("--key", metavar="PEM", default=None, help="its private key")
    serve.add_argument(
        "--max-connections",
        type=arguments.bounded("max connections", 1, MAX_CONNECTIONS, arguments.whole),
        default=DEFAULT_MAX_CONNECTIONS,
        help="refuse connections beyond this many open (default %(default)s)",
    )

    send = commands.add_parser(
        "send",
        parents=[target, _process(arguments.peer_port, "the sink's"), size, connections, echo],
        help="stream a payload to a sink, or send requests to an echo server",
    )
    send.add_argument(
        "--pattern",
        choices=PATTERNS,
        default="foobar",
        help="what to send (default: the talk's foobar\\n)",
    )
    send.add_argument(
        "--seed",
        type=arguments.bounded("seed", 0, 2**63, arguments.whole),
        default=0,
        help="seed of the random pattern",
    )
    send.add_argument("--file", default=None, help="send this file's bytes instead of a pattern")
    send.add_argument(
        "--mode",
        choices=MODES,
        default=SINK,
        help="sink: a one-way stream; echo: requests of --message-size bytes, each read "
        "back whole and checked (against a server in echo mode)",
    )
    send.add_argument(
        "--requests",
        type=arguments.bounded("requests", 1, MAX_REQUESTS, arguments.whole),
        default=1000,
        help="echo: requests per connection (default %(default)s; with --duration, at most)",
    )
    send.add_argument(
        "--tls", action="store_true", help="speak TLS 1.3 through the framework's own layer"
    )
    send.add_argument(
        "--ca",
        metavar="PEM",
        default=None,
        help="trust this CA (the server's listening event names its throwaway one); "
        "implies --tls (default: the system's CAs)",
    )
    send.add_argument(
        "--server-name",
        default="localhost",
        help="the name the server's certificate must carry (default %(default)s)",
    )
    send.add_argument(
        "--stall-timeout",
        type=arguments.positive_seconds,
        default=STALL_TIMEOUT,
        help="give up when no byte is taken (or, echoing, none comes back) for this long: "
        "a peer that never reads cannot hold the client (default %(default)s)",
    )
    send.add_argument(
        "--close-timeout",
        type=arguments.positive_seconds,
        default=CLOSE_TIMEOUT,
        help="seconds to wait, after the last byte, for the sink to close in turn: the "
        "receipt that it has everything (default %(default)s)",
    )

    commands.add_parser(
        "demo",
        parents=[target, size],
        help="run a sink and a client as two processes and print the throughput",
    )

    profile = commands.add_parser(
        "profile",
        parents=[target, _workload(names), size, tls],
        help="record a py-spy flame graph (SVG) of the client and of the server in one transfer",
    )
    profile.add_argument(
        "--out", default=".", help="folder of the SVGs, IMPL-LOOP-WORKLOAD-SIDE.svg (default .)"
    )

    compare = commands.add_parser(
        "compare",
        parents=[
            _workload([*names, "all"], "; all: stream, many, churn and small-writes in turn"),
            size,
            connections,
            echo,
            tls,
            output,
        ],
        help="measure every implementation and loop side by side, as processes",
    )
    compare.add_argument(
        "--repeat",
        type=arguments.bounded("repeat", 1, 100, arguments.whole),
        default=3,
        help="runs per row (default 3); rows report medians",
    )
    compare.add_argument(
        "--impls", default=None, help="comma-separated implementations (default: all installed)"
    )
    compare.add_argument(
        "--loops",
        default=None,
        help="comma-separated loops, or all (default: each implementation's default loop)",
    )
    compare.add_argument(
        "--digest",
        choices=DIGESTS,
        default="none",
        help="also check sha256 on both sides (costs CPU; default none)",
    )
    compare.add_argument(
        "--syscalls",
        action="store_true",
        help="also count each row's sends, receives and waits under strace -f -c "
        "(one more transfer per row, and a 1-byte one to subtract)",
    )
    compare.add_argument(
        "--matrix",
        action="store_true",
        help="every client against every server instead (default loops)",
    )
    compare.add_argument(
        "--seed",
        type=arguments.bounded("seed", 0, 2**32 - 1, arguments.whole),
        default=None,
        help="seed of the shuffled order (default: a fresh one, printed with the report)",
    )
    compare.add_argument(
        "--variant",
        type=arguments.variant,
        action="append",
        default=[],
        metavar="IMPL[/LOOP]:PATH=SIZE",
        help="also run IMPL with knobs set (see serve --tune), as a row of its own",
    )
    compare.add_argument(
        "--link",
        metavar="RATE",
        default=None,
        help="run each server and client in a network namespace of its own, joined by a veth "
        "pair shaped to RATE (1gbit, 10gbit) with tbf on both ends, and rank on CPU per unit "
        "at that rate (needs root or CAP_NET_ADMIN, and ip from iproute2)",
    )
    compare.add_argument(
        "--save", metavar="FILE.json", default=None, help="store the raw report in FILE.json"
    )

    report = commands.add_parser(
        "report",
        parents=[output],
        help="render a report that compare --save stored, or several side by side",
    )
    report.add_argument(
        "--html",
        metavar="OUT.html",
        default=None,
        help="write one self-contained page of every report given: charts, sortable and "
        "filterable tables, nothing fetched from anywhere",
    )
    report.add_argument(
        "paths",
        metavar="FILE.json",
        nargs="+",
        help="reports stored by compare --save; several: one column group each, side by side",
    )
    return parser
