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
    from .figures import Delay, Figures, Spread
    from .transfer import Transfer

__all__ = ["CONNECTION", "GIB", "MIB", "WORKLOADS", "Column", "Unit", "Workload"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Unit:
    """What costs are counted per: ``name`` for people, ``of`` how many of them a
    transfer's client sent."""

    name: str
    of: Callable[[Transfer], float]


GIB = Unit("GiB", lambda transfer: transfer.sent.bytes / 1024**3)
CONNECTION = Unit("connection", lambda transfer: float(transfer.sent.connections))


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
    size: int  # bytes per connection
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
    #: The figures it shows besides the ones every workload has.
    more: Callable[[Figures, Sequence[Transfer]], Figures] = _no_more

    @property
    def headers(self) -> tuple[str, ...]:
        """Every column header of its table."""
        return ("impl", "loop", *(c.header for c in self.columns), "LOC")


# --- what a run's figure is ------------------------------------------------------------


def mb_per_s(transfer: Transfer) -> float:
    """Every byte the server counted over its wall span, in MB/s."""
    return transfer.server_mb_per_s


def connections_per_s(transfer: Transfer) -> float:
    """Connections the server served over its wall span."""
    seconds = transfer.server_seconds
    return transfer.server_connections / seconds if seconds > 0 else 0.0


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


#: ``nbio compare --workload NAME``: what separates frameworks beyond one big stream.
WORKLOADS = {
    w.name: w
    for w in (
        Workload(
            "stream",
            256 * MIB,
            what="one connection, a big payload: the kernel's copies",
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
        ),
        Workload(
            "churn",
            4 * 1024,
            connections=10_000,
            concurrency=50,
            what="10,000 connections of 4 KiB, 50 at a time: what a connection's life costs",
            primary=connections_per_s,
            label="connections/s",
            chart_title="connections/s, server-measured (median, min–max)",
            per=CONNECTION,
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
    )
}
