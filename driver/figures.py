"""Figures from a raw ``nbio compare`` report: each row's timed runs reduced to medians and
spreads, whether the report was just measured or read back from a saved file, so a
published table is always the rendering of a stored raw report.

Every workload (:mod:`nbio.workloads`) is reduced the same way: its own first figure (MB/s,
connections/s, writes/s) per run, the ratio of each run's figure to that of the baseline
run just before it, each side's CPU and waits per unit of the workload (a GiB, a
connection), memory and loop delay; then whatever else the workload shows.

- **CPU per unit**: each process's CPU seconds over the span that moved the bytes (the
  client's first write to its last close; the server's first byte to its last end), per
  unit; median (min–max).
- **waits per unit**: the times each process went to sleep over that same span (voluntary
  context switches, from ``getrusage``), per unit; medians. A process that never waits is
  one the kernel keeps fed.
- **peak RSS** and **growth**: peak resident memory, and how far it grew over the process's
  own baseline after its imports (the server's at ``listening``); medians.
- **loop delay**: each run's p50, p99 and max lateness of a 10 ms timer, and its ticks;
  medians over the runs. With fewer than 100 ticks a run has no p99, and the row shows the
  max alone; a row whose processes never ticked says "no ticks". The server's is over its
  busiest period, the longest stretch with a connection open.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from .common.loopdelay import DelayStats
from .record import BASELINE, Report, Row
from .transfer import Target, Transfer
from .workloads import WORKLOADS

if TYPE_CHECKING:
    from .workloads import Unit, Workload

__all__ = [
    "RECEIVES",
    "SENDS",
    "WAITS",
    "Delay",
    "Figures",
    "Spread",
    "Syscalls",
    "figures",
    "median",
    "reduce",
]


@dataclass(frozen=True)
class Spread:
    """A median with the smallest and largest value it came from."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values``; None for none."""
        return cls(statistics.median(values), min(values), max(values)) if values else None

    def scaled(self, factor: float) -> Spread:
        """The same spread in another unit: seconds as milliseconds, say."""
        return Spread(self.median * factor, self.low * factor, self.high * factor)

    def text(self, digits: int = 0) -> str:
        """``4824 (4666–4893)``."""
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


@dataclass(frozen=True)
class Delay:
    """A process's loop delay over a row's runs: medians of each run's figures (ms)."""

    ticks: float
    early: int  # ticks that fired before the loop's own due time, over all runs
    p50: float | None = None
    p99: float | None = None  # None unless every run had MIN_TICKS_FOR_P99 ticks or more
    max: float | None = None

    @classmethod
    def of(cls, runs: Sequence[DelayStats]) -> Delay:
        """The medians of each run's loop delay."""
        ticked = [d for d in runs if d.ticks]
        early = sum(d.early for d in runs)
        if not ticked:
            return cls(ticks=0, early=early)
        p99s = [d.p99_ms for d in ticked]
        return cls(
            ticks=statistics.median(d.ticks for d in runs),
            early=early,
            p50=statistics.median(d.p50_ms or 0.0 for d in ticked),
            p99=statistics.median(p for p in p99s if p is not None)
            if None not in p99s and len(ticked) == len(runs)
            else None,
            max=statistics.median(d.max_ms or 0.0 for d in ticked),
        )

    def text(self) -> str:
        """``0.1/1.4/6.3 (247)``, ``max 0.5 (21)`` below 100 ticks, or ``no ticks``."""
        if not self.ticks:
            return "no ticks"
        if self.p99 is None:
            return f"max {self.max:.1f} ({self.ticks:.0f})"
        return f"{self.p50:.1f}/{self.p99:.1f}/{self.max:.1f} ({self.ticks:.0f})"


#: The system calls counted as each kind (``write``/``read`` too: Twisted and others use
#: them on sockets; the 1-byte transfer subtracts those of start-up, imports and logs).
SENDS = frozenset({"sendto", "sendmsg", "sendmmsg", "send", "write", "writev", "sendfile"})
RECEIVES = frozenset({"recvfrom", "recvmsg", "recvmmsg", "recv", "read", "readv"})
WAITS = frozenset(
    {"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6"}
)


@dataclass(frozen=True)
class Syscalls:
    """System calls per unit of the workload (a GiB, a connection) from ``strace -f -c``:
    the traced transfer's counts minus those of a 1-byte one, which are start-up and
    shutdown. ``error`` says why there are none ("strace not installed")."""

    per: str  # "GiB" or "connection"
    client_sends: float | None = None
    server_receives: float | None = None
    client_waits: float | None = None
    server_waits: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, row: Row, unit: Unit) -> Syscalls | None:
        """The row's counts per ``unit``; None if it was not traced."""
        if row.traced_error is not None:
            return cls(unit.name, error=row.traced_error)
        if not row.traced:
            return None
        full, tiny = row.traced
        units = unit.of(full) - unit.of(tiny)

        def rate(side: str, names: frozenset[str]) -> float:
            calls = [full.syscalls[side].get(n, 0) - tiny.syscalls[side].get(n, 0) for n in names]
            return sum(calls) / units

        return cls(
            unit.name,
            rate("client", SENDS),
            rate("server", RECEIVES),
            rate("client", WAITS),
            rate("server", WAITS),
        )


@dataclass(frozen=True)
class Figures:
    """One row of the table: a target's runs reduced (None where it has no figures)."""

    target: Target
    framework: str
    verified: str | None
    error: str | None
    runs: int
    loc: int
    #: The workload's first figure (MB/s, connections/s, writes/s): median (min–max).
    primary: Spread | None = None
    #: Each run's first figure over the baseline run's just before it: median (min–max).
    ratio: Spread | None = None
    #: Each side's CPU per unit over the baseline run's, the same pairs: what ``--link``
    #: ranks on, every row running at the link's rate.
    client_cpu_ratio: Spread | None = None
    server_cpu_ratio: Spread | None = None
    #: The server's MB/s as a share of the link's rate (``--link``), in %.
    link_percent: Spread | None = None
    #: Bytes the server's sink was handed per read, in KiB: median.
    server_kib_per_read: float | None = None
    mb_per_s: Spread | None = None
    client_cpu_s_per_unit: Spread | None = None
    server_cpu_s_per_unit: Spread | None = None
    client_waits_per_unit: float | None = None
    server_waits_per_unit: float | None = None
    client_rss_mib: float | None = None
    server_rss_mib: float | None = None
    client_growth_mib: float | None = None
    server_growth_mib: float | None = None
    client_delay: Delay | None = None
    server_delay: Delay | None = None
    syscalls: Syscalls | None = None
    # What some workloads show besides (see their definitions in nbio.workloads).
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p999_ms: float | None = None
    server_kib_per_connection: float | None = None
    idle_p50_ms: float | None = None
    idle_p99_ms: float | None = None
    idle_p999_ms: float | None = None
    slowdown: float | None = None  # p99 beside a bulk echo over p99 on the idle server
    beside_mb_per_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON, for a report's readers."""
        data = asdict(self)
        data["target"] = self.target.to_json()
        return data


def median(values: Sequence[float]) -> float | None:
    """The median of ``values``; None for none."""
    return statistics.median(values) if values else None


def _growth(peak_kib: int | None, baseline_kib: int) -> float:
    return ((peak_kib or 0) - baseline_kib) / 1024


def reduce(report: Report) -> list[Figures]:
    """Every row of ``report``, reduced from its raw runs."""
    workload = WORKLOADS[report.settings.workload]
    base = next((row for row in report.rows if row.target == Target(BASELINE)), None)
    baseline_runs = {run.seq: run.transfer for run in base.runs} if base else {}
    bits = report.settings.link_bits
    return [_reduce(row, baseline_runs, workload, row is base, bits) for row in report.rows]


def _pairs(
    row: Row,
    baseline_runs: dict[int, Transfer],
    is_baseline: bool,
    figure: Callable[[Transfer], float],
) -> list[float]:
    """Each run's ``figure`` over that of the baseline run it was paired with."""
    if is_baseline:
        return [1.0] * len(row.runs)
    return [
        figure(run.transfer) / figure(baseline_runs[run.paired_with])
        for run in row.runs
        if run.paired_with in baseline_runs and figure(baseline_runs[run.paired_with]) > 0
    ]


def _reduce(
    row: Row,
    baseline_runs: dict[int, Transfer],
    workload: Workload,
    is_baseline: bool,
    link_bits: int | None = None,
) -> Figures:
    plain = Figures(
        row.target,
        row.framework,
        row.verified,
        row.error,
        len(row.runs),
        row.loc,
        syscalls=Syscalls.of(row, workload.per),
    )
    if row.error is not None:
        return plain
    primary = workload.primary
    transfers = [run.transfer for run in row.runs]
    units = [workload.per.of(t) for t in transfers]

    def client_cpu(transfer: Transfer) -> float:
        return transfer.sent.cpu_s / workload.per.of(transfer)

    def server_cpu(transfer: Transfer) -> float:
        return transfer.server_cpu_s / workload.per.of(transfer)

    both = list(zip(transfers, units, strict=True))
    figures = replace(
        plain,
        primary=Spread.of([primary(t) for t in transfers]),
        ratio=Spread.of(_pairs(row, baseline_runs, is_baseline, primary)),
        client_cpu_ratio=Spread.of(_pairs(row, baseline_runs, is_baseline, client_cpu)),
        server_cpu_ratio=Spread.of(_pairs(row, baseline_runs, is_baseline, server_cpu)),
        link_percent=Spread.of([t.server_mb_per_s * 8e8 / link_bits for t in transfers])
        if link_bits
        else None,
        server_kib_per_read=median(
            [t.server_bytes / t.stopped.reads / 1024 for t in transfers if t.stopped.reads]
        ),
        mb_per_s=Spread.of([t.server_mb_per_s for t in transfers]),
        client_cpu_s_per_unit=Spread.of([t.sent.cpu_s / u for t, u in both]),
        server_cpu_s_per_unit=Spread.of([t.server_cpu_s / u for t, u in both]),
        client_waits_per_unit=median([t.sent.waits / u for t, u in both]),
        server_waits_per_unit=median([t.server_waits / u for t, u in both]),
        client_rss_mib=median([t.sent.peak_rss_kib / 1024 for t in transfers]),
        server_rss_mib=median([(t.stopped.peak_rss_kib or 0) / 1024 for t in transfers]),
        client_growth_mib=median([_growth(t.sent.peak_rss_kib, t.sent.rss_kib) for t in transfers]),
        server_growth_mib=median(
            [_growth(t.stopped.peak_rss_kib, t.listening.rss_kib) for t in transfers]
        ),
        client_delay=Delay.of([t.sent.loop_delay for t in transfers]),
        server_delay=Delay.of([t.server_delay for t in transfers]),
    )
    return workload.more(figures, transfers)


def figures(report: Report) -> list[dict[str, Any]]:
    """Each row's figures as JSON, for a report's readers (``--json``, ``--save``)."""
    return [row.to_json() for row in reduce(report)]
