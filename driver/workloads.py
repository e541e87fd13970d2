"""The workloads of ``nbio compare --workload NAME``: for each, what every run sends, the
figure its ratio to the baseline is of, the unit its costs are counted in, and the columns
that show it. Adding a workload is one :class:`Workload` here, plus what it measures.

Light enough for the command line to import for ``--help``: the figures it names are read
as attributes, and the machinery that runs and reduces them (:mod:`nbio.compare`,
:mod:`nbio.figures`) is imported only by the commands that use it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .common.payload import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from .common.percentiles import Percentiles
    from .figures import Delay, Figures, Spread
    from .transfer import Transfer

__all__ = [
    "ALL",
    "BESIDE_LEAD",
    "CONNECTION",
    "GIB",
    "MIB",
    "REQUEST",
    "WORKLOADS",
    "Column",
    "Unit",
    "Workload",
]

MIB = 1024 * 1024
KIB = 1024
#: Seconds a bulk transfer beside the measured client runs before it starts (and after it
#: ends): the small requests are timed while the bulk one is going.
BESIDE_LEAD = 0.3


@dataclass(frozen=True)
class Unit:
    """What costs are counted per: ``name`` for people, ``of`` how many of them a
    transfer's client sent."""

    name: str
    of: Callable[[Transfer], float]


GIB = Unit("GiB", lambda transfer: transfer.sent.bytes / 1024**3)
CONNECTION = Unit("connection", lambda transfer: float(transfer.sent.connections))


def _answered(transfer: Transfer) -> float:
    latency = transfer.sent.request_latency
    return float(latency.count) if latency is not None else 0.0


REQUEST = Unit("request", _answered)


@dataclass(frozen=True)
class Column:
    """One column of a workload's table: its header, naming its statistic, and its cell."""

    header: str
    cell: Callable[[Figures], str]


def _no_more(figures: Figures, transfers: Sequence[Transfer]) -> Figures:
    return figures


@dataclass(frozen=True)
class Workload:
    """What one kind of run sends, on the same sink and client protocol as every other, and
    how its figures are shown."""

    name: str
    size: int  # bytes per connection (the most, with a duration)
    what: str  # one line for people
    #: Each run's first figure: the one the ratio to the baseline is of.
    primary: Callable[[Transfer], float]
    #: That figure's name in a side-by-side table ("MB/s") and over a chart.
    label: str
    chart_title: str
    #: The columns between ``impl``/``loop`` and ``LOC``.
    columns: tuple[Column, ...]
    per: Unit = GIB
    connections: int = 1
    concurrency: int | None = None  # at most this many connections at once; None: all
    chunk_size: int = DEFAULT_CHUNK_SIZE
    #: Each connection sends for this long (``size`` capping it); None: ``size`` bytes.
    duration: float | None = None
    #: Request and response: the (message size, connections) of each run of the grid the
    #: workload covers, a report each; an empty grid: a one-way stream.
    grid: tuple[tuple[int, int], ...] = ()
    #: A bulk echo of messages of this size beside the measured one (echo-under-load).
    bulk: int | None = None
    #: The figures it shows besides the ones every workload has.
    more: Callable[[Figures, Sequence[Transfer]], Figures] = _no_more

    #: Whether a larger primary figure is the better one (throughput); False for a latency.
    higher_is_better: bool = True

    #: Whether a row of it should fill a ``--link`` (a byte stream does; churn's
    #: connections are bounded by round trips, not by the rate).
    fills_link: bool = True

    #: One stream of one connection, as the kernel's own tools send it: the plain-socket
    #: reference and iperf3 run as rows beside it (echo workloads have theirs).
    yardsticks: bool = False

    #: Figures shown for each machine when reports are set side by side, besides the first
    #: figure, its ratio and CPU: those that may travel between machines (``many``'s
    #: memory per connection).
    beside: tuple[Column, ...] = ()

    def cpu(self) -> Column:
        """Both sides' CPU per unit, medians, in the unit its own table uses: seconds per
        GiB, milliseconds per connection, milliseconds per 1000 requests."""
        unit, scale, digits = {
            "connection": ("ms per connection", 1000.0, 3),
            "request": ("ms per 1000 requests", 1e6, 3),
        }.get(self.per.name, (f"s/{self.per.name}", 1.0, 2))
        return Column(
            f"CPU {unit} c/s",
            lambda r: _pair(
                _median(r.client_cpu_s_per_unit), _median(r.server_cpu_s_per_unit), digits, scale
            ),
        )

    def view(self, link: bool = False) -> tuple[Column, ...]:
        """The columns between ``impl``/``loop`` and ``LOC``: over loopback its own; over a
        ``--link`` the same for every workload, ranked on CPU (see :func:`link_columns`)."""
        return link_columns(self) if link else self.columns

    def headers(self, link: bool = False) -> tuple[str, ...]:
        """Every column header of its table."""
        return ("impl", "loop", *(c.header for c in self.view(link)), "LOC")


# --- what a run's figure is ------------------------------------------------------------


def mb_per_s(transfer: Transfer) -> float:
    """Every byte the server counted over its wall span, in MB/s."""
    return transfer.server_mb_per_s


def connections_per_s(transfer: Transfer) -> float:
    """Connections the server served over its wall span."""
    seconds = transfer.server_seconds
    return transfer.server_connections / seconds if seconds > 0 else 0.0


def requests_per_s(transfer: Transfer) -> float:
    """The requests answered per second, as the client saw them."""
    return transfer.sent.requests_per_s or 0.0


def p99_beside_bulk(transfer: Transfer) -> float:
    """The p99 latency of the small requests while a bulk echo ran beside them (ms)."""
    latency = transfer.sent.request_latency
    return latency.p99_ms or 0.0 if latency is not None else 0.0


def writes_per_s(transfer: Transfer) -> float:
    """The client's writes (chunks handed to its framework) over its span."""
    seconds = transfer.sent.seconds
    return transfer.sent.chunks / seconds if seconds > 0 else 0.0


# --- cells ------------------------------------------------------------------------------


def number(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, or "-" for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def spread(value: Spread | None, digits: int = 2) -> str:
    """``median (min–max)``, or "-" for none."""
    return value.text(digits) if value is not None else "-"


def _median(value: Spread | None) -> float | None:
    return value.median if value is not None else None


def _delay(delay: Delay | None) -> str:
    return delay.text() if delay is not None else "-"


def _pair(client: float | None, server: float | None, digits: int, scale: float = 1.0) -> str:
    def scaled(value: float | None) -> float | None:
        return None if value is None else value * scale

    return f"{number(scaled(client), digits)}/{number(scaled(server), digits)}"


PRIMARY_MBS = Column("MB/s median (min–max)", lambda r: spread(r.primary, 0))
RATIO = Column("× blocking, median of pairs (min–max)", lambda r: spread(r.ratio))
CLIENT_CPU = Column("CPU s/GiB client, median (min–max)", lambda r: spread(r.client_cpu_s_per_unit))
SERVER_CPU = Column("CPU s/GiB server, median (min–max)", lambda r: spread(r.server_cpu_s_per_unit))
CLIENT_DELAY = Column(
    "client delay ms p50/p99/max (ticks), medians", lambda r: _delay(r.client_delay)
)
SERVER_DELAY = Column(
    "server delay ms p50/p99/max (ticks), medians", lambda r: _delay(r.server_delay)
)


def _memory(r: Figures) -> str:
    return (
        f"{number(r.client_rss_mib, 1)}/{number(r.server_rss_mib, 1)} "
        f"({r.client_growth_mib or 0:+.1f}/{r.server_growth_mib or 0:+.1f})"
    )


def _per_unit(workload: Workload, value: Spread | None) -> str:
    """CPU seconds per GiB; per connection, in milliseconds."""
    if workload.per is CONNECTION:
        return spread(None if value is None else value.scaled(1000), 3)
    return spread(value)


def _reached(workload: Workload, r: Figures) -> str:
    """The row's first figure and how much of the link's rate its bytes took: a byte
    stream below 90 % (the payload's ceiling is about 96 % at MTU 1500) could not keep up."""
    if r.link_percent is None:
        return spread(r.primary, 0)
    share = f"{r.link_percent.median:.0f} % of link"
    if workload.fills_link and r.link_percent.median < 90:
        share += ", could not keep up"
    return f"{spread(r.primary, 0)}; {share}"


def link_columns(workload: Workload) -> tuple[Column, ...]:
    """The columns of a ``--link`` run, whatever the workload: every row runs at the
    link's rate, so what separates them is what each side spends to keep up (netperf's
    "service demand"): CPU per unit and its ratio to the baseline's, waits, bytes per read
    and loop delay."""
    unit = "ms/connection" if workload.per is CONNECTION else f"s/{workload.per.name}"
    return (
        Column(
            f"{workload.label} median (min–max); share of the link",
            lambda r: _reached(workload, r),
        ),
        Column(
            "CPU × blocking client, median of pairs (min–max)", lambda r: spread(r.client_cpu_ratio)
        ),
        Column(
            "CPU × blocking server, median of pairs (min–max)", lambda r: spread(r.server_cpu_ratio)
        ),
        Column(
            f"CPU {unit} client, median (min–max)",
            lambda r: _per_unit(workload, r.client_cpu_s_per_unit),
        ),
        Column(
            f"CPU {unit} server, median (min–max)",
            lambda r: _per_unit(workload, r.server_cpu_s_per_unit),
        ),
        Column(
            f"waits/{workload.per.name} c/s, medians",
            lambda r: _pair(
                r.client_waits_per_unit,
                r.server_waits_per_unit,
                1 if workload.per is CONNECTION else 0,
            ),
        ),
        Column("KiB per read, server, median", lambda r: number(r.server_kib_per_read, 1)),
        CLIENT_DELAY,
        SERVER_DELAY,
    )


def _kib_per_connection(figures: Figures, transfers: Sequence[Transfer]) -> Figures:
    """How far the server grew over its ``listening`` size, per connection served."""
    grown = [
        ((t.stopped.peak_rss_kib or 0) - t.listening.rss_kib) / t.server_connections
        for t in transfers
    ]
    return replace(figures, server_kib_per_connection=statistics.median(grown))


def _latency(figures: Figures, transfers: Sequence[Transfer]) -> Figures:
    """Each connection's connect to the sink's close, as the client saw it: the medians of
    each run's p50 and p99."""
    latencies = [t.sent.latency for t in transfers if t.sent.latency is not None]
    p50s = [lat.p50_ms for lat in latencies if lat.p50_ms is not None]
    p99s = [lat.p99_ms for lat in latencies if lat.p99_ms is not None]
    return replace(
        figures,
        latency_p50_ms=statistics.median(p50s) if p50s else None,
        latency_p99_ms=statistics.median(p99s) if p99s else None,
    )


def _percentiles(values: Sequence[Percentiles | None]) -> tuple[float | None, ...]:
    """The medians of each run's p50, p99 and p99.9."""
    found = [v for v in values if v is not None]

    def middle(name: str) -> float | None:
        got = [getattr(v, name) for v in found if getattr(v, name) is not None]
        return statistics.median(got) if got else None

    return middle("p50_ms"), middle("p99_ms"), middle("p999_ms")


def _request_latency(figures: Figures, transfers: Sequence[Transfer]) -> Figures:
    """Each run's request latencies, as the client timed them: medians of the runs'."""
    p50, p99, p999 = _percentiles([t.sent.request_latency for t in transfers])
    return replace(figures, latency_p50_ms=p50, latency_p99_ms=p99, latency_p999_ms=p999)


def _under_load(figures: Figures, transfers: Sequence[Transfer]) -> Figures:
    """The small requests beside the bulk echo, the same alone on the idle server just
    before, how many times longer p99 was beside it, and the bulk's MB/s."""
    figures = _request_latency(figures, transfers)
    p50, p99, p999 = _percentiles([t.idle.request_latency if t.idle else None for t in transfers])
    factors = [
        loaded / alone
        for t in transfers
        if t.idle is not None
        and (loaded := p99_beside_bulk(t)) > 0
        and t.idle.request_latency is not None
        and (alone := t.idle.request_latency.p99_ms or 0.0) > 0
    ]
    bulk = [
        t.beside.bytes / t.beside.seconds / 1e6 for t in transfers if t.beside and t.beside.seconds
    ]
    return replace(
        figures,
        idle_p50_ms=p50,
        idle_p99_ms=p99,
        idle_p999_ms=p999,
        slowdown=statistics.median(factors) if factors else None,
        beside_mb_per_s=statistics.median(bulk) if bulk else None,
    )


def _three(a: float | None, b: float | None, c: float | None) -> str:
    return f"{number(a, 2)}/{number(b, 2)}/{number(c, 2)}"


#: The grid of vmbench, uvloop's benchmark: messages of 1, 10 and 100 KiB, 1, 10 and 100
#: connections.
VMBENCH_GRID = tuple((size * KIB, n) for size in (1, 10, 100) for n in (1, 10, 100))
#: An echo run's cap on bytes per connection: it runs for its duration.
ECHO_CAP = 1 << 40

#: ``nbio compare --workload NAME``: what separates frameworks beyond one big stream.
WORKLOADS = {
    w.name: w
    for w in (
        Workload(
            "stream",
            64 * 1024 * MIB,
            # At 4-9 GB/s a 256 MiB stream lasted 55 ms: 3 to 8 ticks, no p99 of the loop
            # delay, and a few wake-ups decided the figure. 1.2 s gives each side 100 ticks
            # and more on any machine; 64 GiB only caps it.
            duration=1.2,
            yardsticks=True,
            what="one connection, a big payload for 1.2 s: the kernel's copies",
            primary=mb_per_s,
            label="MB/s",
            chart_title="throughput, server-measured (MB/s, median, min–max)",
            columns=(
                PRIMARY_MBS,
                RATIO,
                CLIENT_CPU,
                SERVER_CPU,
                Column(
                    "waits/GiB c/s, medians",
                    lambda r: _pair(r.client_waits_per_unit, r.server_waits_per_unit, 0),
                ),
                Column("peak RSS MiB c/s (growth), medians", _memory),
                CLIENT_DELAY,
                SERVER_DELAY,
            ),
        ),
        Workload(
            "many",
            1 * MIB,
            connections=1000,
            what="1000 connections at once, 1 MiB each: what an open connection costs",
            primary=mb_per_s,
            label="MB/s over all",
            chart_title="throughput of all connections, server-measured (MB/s, median, min–max)",
            columns=(
                Column("MB/s over all, median (min–max)", lambda r: spread(r.primary, 0)),
                RATIO,
                Column(
                    "server KiB per connection, median",
                    lambda r: number(r.server_kib_per_connection, 1),
                ),
                Column(
                    "CPU s/GiB c/s, medians",
                    lambda r: _pair(
                        _median(r.client_cpu_s_per_unit), _median(r.server_cpu_s_per_unit), 2
                    ),
                ),
                CLIENT_DELAY,
                SERVER_DELAY,
            ),
            more=_kib_per_connection,
            beside=(
                Column(
                    "server KiB per connection",
                    lambda r: number(r.server_kib_per_connection, 1),
                ),
            ),
        ),
        Workload(
            "churn",
            4 * 1024,
            # 10,000 a run made churn alone 374 s of an 11-minute --workload all; a rate of
            # 2,000 to 12,000 a second is steady well within 2,500 (and its p99 has 25
            # connections above it).
            connections=2_500,
            concurrency=50,
            what="2,500 connections of 4 KiB, 50 at a time: what a connection's life costs",
            primary=connections_per_s,
            label="connections/s",
            chart_title="connections/s, server-measured (median, min–max)",
            per=CONNECTION,
            fills_link=False,
            columns=(
                Column("connections/s, server, median (min–max)", lambda r: spread(r.primary, 0)),
                RATIO,
                Column(
                    "latency ms p50/p99, client, medians",
                    lambda r: _pair(r.latency_p50_ms, r.latency_p99_ms, 2),
                ),
                Column(
                    "CPU ms per connection c/s, medians",
                    lambda r: _pair(
                        _median(r.client_cpu_s_per_unit),
                        _median(r.server_cpu_s_per_unit),
                        3,
                        scale=1000,
                    ),
                ),
                Column(
                    "waits per connection c/s, medians",
                    lambda r: _pair(r.client_waits_per_unit, r.server_waits_per_unit, 1),
                ),
                SERVER_DELAY,
            ),
            more=_latency,
        ),
        Workload(
            "small-writes",
            16 * MIB,
            chunk_size=512,
            what="one connection, 512-byte writes: what each call costs",
            primary=writes_per_s,
            label="writes/s",
            chart_title="writes/s, client-measured (median, min–max)",
            columns=(
                Column("writes/s, client, median (min–max)", lambda r: spread(r.primary, 0)),
                RATIO,
                CLIENT_CPU,
                SERVER_CPU,
                CLIENT_DELAY,
            ),
        ),
        Workload(
            "echo",
            ECHO_CAP,
            duration=1.0,
            grid=VMBENCH_GRID,
            what="request and response: 1, 10, 100 KiB messages on 1, 10, 100 connections, "
            "each answer read whole before the next (vmbench's grid), 1 s a run",
            primary=requests_per_s,
            label="requests/s",
            chart_title="requests/s, client-measured (median, min–max)",
            per=REQUEST,
            fills_link=False,
            columns=(
                Column("requests/s, client, median (min–max)", lambda r: spread(r.primary, 0)),
                RATIO,
                Column(
                    "latency ms p50/p99/p99.9, client, medians",
                    lambda r: _three(r.latency_p50_ms, r.latency_p99_ms, r.latency_p999_ms),
                ),
                Column(
                    "CPU ms per 1000 requests c/s, medians",
                    lambda r: _pair(
                        _median(r.client_cpu_s_per_unit),
                        _median(r.server_cpu_s_per_unit),
                        3,
                        scale=1e6,
                    ),
                ),
                CLIENT_DELAY,
                SERVER_DELAY,
            ),
            more=_request_latency,
        ),
        Workload(
            "echo-under-load",
            ECHO_CAP,
            duration=1.0,
            grid=((KIB, 1),),
            bulk=256 * KIB,
            what="1 KiB requests on one connection while a bulk echo of 256 KiB messages "
            "runs on another to the same server, and the same requests on the idle server",
            primary=p99_beside_bulk,
            label="p99 ms beside a bulk echo",
            higher_is_better=False,
            chart_title="p99 latency of 1 KiB requests beside a bulk echo (ms, median, min–max)",
            per=REQUEST,
            fills_link=False,
            columns=(
                Column(
                    "latency ms p50/p99/p99.9 beside a bulk echo, medians",
                    lambda r: _three(r.latency_p50_ms, r.latency_p99_ms, r.latency_p999_ms),
                ),
                Column("p99 × blocking's, median of pairs (min–max)", lambda r: spread(r.ratio)),
                Column(
                    "latency ms p50/p99/p99.9 idle, medians",
                    lambda r: _three(r.idle_p50_ms, r.idle_p99_ms, r.idle_p999_ms),
                ),
                Column("p99 × idle, median", lambda r: number(r.slowdown, 1)),
                Column("bulk echo MB/s beside, median", lambda r: number(r.beside_mb_per_s, 0)),
                SERVER_DELAY,
            ),
            more=_under_load,
        ),
    )
}


#: ``--workload all``: the one-way workloads, in turn (the echo workloads run a grid of
#: their own: ``--workload echo``, ``--workload echo-under-load``).
ALL = ("stream", "many", "churn", "small-writes")
