"""Figures from a raw ``nbio compare`` report, and the report as text, Markdown and a table.

Every figure is reduced here from the processes' own events, whether the report was just
measured or read back from a saved file, so a published table is always the rendering of a
stored raw report. Each column names its statistic:

- **MB/s**: every byte the server counted over the wall span from the earliest first byte
  to the latest end of a connection; median of the timed runs (min–max).
- **× blocking**: each run's MB/s over the MB/s of the baseline run just before it; median
  of those pairs (min–max).
- **CPU s/GiB**: each process's CPU seconds over the span that moved the bytes (the
  client's first write to its last close; the server's first byte to its last end), per GiB;
  median (min–max).
- **waits per GiB**: the times each process went to sleep over that same span (voluntary
  context switches, from ``getrusage``), per GiB; medians. A process that never waits is
  one the kernel keeps fed.
- **peak RSS** and **growth**: peak resident memory, and how far it grew over the process's
  own baseline after its imports (the server's at ``listening``); medians.
- **loop delay**: each run's p50, p99 and max lateness of a 10 ms timer, and its ticks;
  medians over the runs. With fewer than 100 ticks a run has no p99, and the row shows the
  max alone; a row whose processes never ticked says "no ticks". The server's is over its
  busiest period, the longest stretch with a connection open.

Each workload (:data:`nbio.compare.WORKLOADS`) shows the figures that fit it, and its ratio
to the baseline is of its own first figure:

- ``stream``: MB/s, CPU and waits per GiB, memory, loop delay (above).
- ``many``: MB/s over the wall span of all 1000 connections; **KiB per connection**, how far
  the server grew over its ``listening`` size, per connection served; loop delay on both
  sides while they are open.
- ``churn``: **connections/s**, connections the server served over its span (first byte of
  the first to the end of the last); **latency**, each connection's connect to the sink's
  close as the client saw it, p50 and p99 (medians over the runs); CPU ms and waits per
  connection.
- ``small-writes``: **writes/s**, the client's writes (chunks handed to its framework) over
  its span; CPU s/GiB on each side.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .bench import GIB, Target, Transfer
from .common.loopdelay import MIN_TICKS_FOR_P99
from .common.sizes import format_size, human_size
from .compare import BASELINE, Cell, Report, Row

__all__ = [
    "COLUMNS",
    "Delay",
    "Figures",
    "Spread",
    "cells",
    "figures",
    "header",
    "matrix_markdown",
    "reduce",
    "to_markdown",
]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Spread:
    """A median with the smallest and largest value it came from."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None

    def text(self, digits: int = 0) -> str:
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
    def of(cls, events: Sequence[dict[str, Any]]) -> Delay:
        ticked = [e for e in events if e.get("loop_delay_ms")]
        early = sum(int(e.get("early_ticks", 0)) for e in events)
        if not ticked:
            return cls(ticks=0, early=early)
        delays = [e["loop_delay_ms"] for e in ticked]
        p99s = [d["p99"] for d in delays]
        return cls(
            ticks=statistics.median(int(e["ticks"]) for e in events),
            early=early,
            p50=statistics.median(d["p50"] for d in delays),
            p99=statistics.median(p99s)
            if None not in p99s and len(ticked) == len(events)
            else None,
            max=statistics.median(d["max"] for d in delays),
        )

    def text(self) -> str:
        if not self.ticks:
            return "no ticks"
        if self.p99 is None:
            return f"max {self.max:.1f} ({self.ticks:.0f})"
        return f"{self.p50:.1f}/{self.p99:.1f}/{self.max:.1f} ({self.ticks:.0f})"


@dataclass(frozen=True)
class Syscalls:
    """System calls per GiB (per connection for ``churn``) from ``strace -f -c``: the
    traced transfer's counts minus those of a 1-byte one, which are start-up and shutdown.
    ``error`` says why there are none ("strace not installed")."""

    per: str  # "GiB" or "connection"
    client_sends: float | None = None
    server_receives: float | None = None
    client_waits: float | None = None
    server_waits: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, row: Row, workload: str) -> Syscalls | None:
        per = "connection" if workload == "churn" else "GiB"
        if row.traced_error is not None:
            return cls(per, error=row.traced_error)
        if not row.traced:
            return None
        full, tiny = row.traced
        if per == "GiB":
            units = float(full.sent["bytes"] - tiny.sent["bytes"]) / GIB
        else:
            units = float(full.sent["connections"] - tiny.sent["connections"])

        def rate(side: str, names: frozenset[str]) -> float:
            calls = [full.syscalls[side].get(n, 0) - tiny.syscalls[side].get(n, 0) for n in names]
            return sum(calls) / units

        return cls(
            per,
            rate("client", SENDS),
            rate("server", RECEIVES),
            rate("client", WAITS),
            rate("server", WAITS),
        )


#: The system calls counted as each kind (``write``/``read`` too: Twisted and others use
#: them on sockets; the 1-byte transfer subtracts those of start-up, imports and logs).
SENDS = frozenset({"sendto", "sendmsg", "sendmmsg", "send", "write", "writev", "sendfile"})
RECEIVES = frozenset({"recvfrom", "recvmsg", "recvmmsg", "recv", "read", "readv"})
WAITS = frozenset(
    {"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6"}
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
    mb_per_s: Spread | None = None
    ratio: Spread | None = None
    client_cpu_s_per_gib: Spread | None = None
    server_cpu_s_per_gib: Spread | None = None
    client_waits_per_gib: float | None = None
    server_waits_per_gib: float | None = None
    client_rss_mib: float | None = None
    server_rss_mib: float | None = None
    client_growth_mib: float | None = None
    server_growth_mib: float | None = None
    client_delay: Delay | None = None
    server_delay: Delay | None = None
    connections_per_s: Spread | None = None
    writes_per_s: Spread | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    server_kib_per_connection: float | None = None
    client_cpu_ms_per_connection: float | None = None
    server_cpu_ms_per_connection: float | None = None
    client_waits_per_connection: float | None = None
    server_waits_per_connection: float | None = None
    syscalls: Syscalls | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.to_json()
        return data


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _growth(peak_kib: int, baseline_kib: int) -> float:
    return (peak_kib - baseline_kib) / 1024


def _mb_per_s(transfer: Transfer) -> float:
    return transfer.server_mb_per_s


def _connections_per_s(transfer: Transfer) -> float:
    seconds = transfer.server_seconds
    return transfer.server_connections / seconds if seconds > 0 else 0.0


def _writes_per_s(transfer: Transfer) -> float:
    seconds = float(transfer.sent["seconds"])
    return int(transfer.sent["chunks"]) / seconds if seconds > 0 else 0.0


#: Each workload's first figure, the one its ratio to the baseline is of.
PRIMARY = {
    "stream": _mb_per_s,
    "many": _mb_per_s,
    "churn": _connections_per_s,
    "small-writes": _writes_per_s,
}


def reduce(report: Report) -> list[Figures]:
    """Every row of ``report``, reduced from its raw runs."""
    base = next((row for row in report.rows if row.target == Target(BASELINE)), None)
    baseline_runs = {run.seq: run.transfer for run in base.runs} if base else {}
    return [_reduce(row, baseline_runs, report.settings.workload) for row in report.rows]


def _reduce(row: Row, baseline_runs: dict[int, Transfer], workload: str = "stream") -> Figures:
    plain = Figures(
        row.target,
        row.framework,
        row.verified,
        row.error,
        len(row.runs),
        row.loc,
        syscalls=Syscalls.of(row, workload),
    )
    if row.error is not None:
        return plain
    primary = PRIMARY[workload]
    transfers = [run.transfer for run in row.runs]
    gib = [t.sent["bytes"] / GIB for t in transfers]
    pairs = [
        primary(run.transfer) / primary(baseline_runs[run.paired_with])
        for run in row.runs
        if run.paired_with in baseline_runs
    ]
    if row.target == Target(BASELINE):
        pairs = [1.0] * len(transfers)
    figures = replace(
        plain,
        mb_per_s=Spread.of([t.server_mb_per_s for t in transfers]),
        ratio=Spread.of(pairs),
        client_cpu_s_per_gib=Spread.of(
            [t.sent["cpu_s"] / g for t, g in zip(transfers, gib, strict=True)]
        ),
        server_cpu_s_per_gib=Spread.of(
            [t.server_cpu_s / g for t, g in zip(transfers, gib, strict=True)]
        ),
        client_waits_per_gib=_median(
            [t.sent["waits"] / g for t, g in zip(transfers, gib, strict=True)]
        ),
        server_waits_per_gib=_median(
            [t.server_waits / g for t, g in zip(transfers, gib, strict=True)]
        ),
        client_rss_mib=_median([t.sent["peak_rss_kib"] / 1024 for t in transfers]),
        server_rss_mib=_median([t.stopped["peak_rss_kib"] / 1024 for t in transfers]),
        client_growth_mib=_median(
            [_growth(t.sent["peak_rss_kib"], t.sent["rss_kib"]) for t in transfers]
        ),
        server_growth_mib=_median(
            [_growth(t.stopped["peak_rss_kib"], t.listening["rss_kib"]) for t in transfers]
        ),
        client_delay=Delay.of([t.sent for t in transfers]),
        server_delay=Delay.of([t.server_delay for t in transfers]),
    )
    if workload == "many":
        figures = replace(
            figures,
            server_kib_per_connection=_median(
                [
                    (t.stopped["peak_rss_kib"] - t.listening["rss_kib"]) / t.server_connections
                    for t in transfers
                ]
            ),
        )
    if workload == "churn":
        latencies = [t.sent["latency_ms"] for t in transfers]
        figures = replace(
            figures,
            connections_per_s=Spread.of([_connections_per_s(t) for t in transfers]),
            latency_p50_ms=_median([latency["p50"] for latency in latencies]),
            latency_p99_ms=_median([lat["p99"] for lat in latencies if lat["p99"] is not None]),
            client_cpu_ms_per_connection=_median(
                [1000 * t.sent["cpu_s"] / t.sent["connections"] for t in transfers]
            ),
            server_cpu_ms_per_connection=_median(
                [1000 * t.server_cpu_s / t.server_connections for t in transfers]
            ),
            client_waits_per_connection=_median(
                [t.sent["waits"] / t.sent["connections"] for t in transfers]
            ),
            server_waits_per_connection=_median(
                [t.server_waits / t.server_connections for t in transfers]
            ),
        )
    if workload == "small-writes":
        figures = replace(figures, writes_per_s=Spread.of([_writes_per_s(t) for t in transfers]))
    return figures


def figures(report: Report) -> list[dict[str, Any]]:
    """Each row's figures as JSON, for a report's readers (``--json``, ``--save``)."""
    return [row.to_json() for row in reduce(report)]


# --- text --------------------------------------------------------------------------------

#: Column headers of the ``stream`` workload, each naming its statistic ("c/s" is
#: client/server); :func:`columns` gives each workload's.
COLUMNS = (
    "impl",
    "loop",
    "MB/s median (min–max)",
    "× blocking, median of pairs (min–max)",
    "CPU s/GiB client, median (min–max)",
    "CPU s/GiB server, median (min–max)",
    "waits/GiB c/s, medians",
    "peak RSS MiB c/s (growth), medians",
    "client delay ms p50/p99/max (ticks), medians",
    "server delay ms p50/p99/max (ticks), medians",
    "LOC",
)


#: The other workloads' columns (``impl``, ``loop`` first and ``LOC`` last, as above).
WORKLOAD_COLUMNS = {
    "many": (
        "MB/s over all, median (min–max)",
        "× blocking, median of pairs (min–max)",
        "server KiB per connection, median",
        "CPU s/GiB c/s, medians",
        "client delay ms p50/p99/max (ticks), medians",
        "server delay ms p50/p99/max (ticks), medians",
    ),
    "churn": (
        "connections/s, server, median (min–max)",
        "× blocking, median of pairs (min–max)",
        "latency ms p50/p99, client, medians",
        "CPU ms per connection c/s, medians",
        "waits per connection c/s, medians",
        "server delay ms p50/p99/max (ticks), medians",
    ),
    "small-writes": (
        "writes/s, client, median (min–max)",
        "× blocking, median of pairs (min–max)",
        "CPU s/GiB client, median (min–max)",
        "CPU s/GiB server, median (min–max)",
        "client delay ms p50/p99/max (ticks), medians",
    ),
}


def columns(workload: str) -> tuple[str, ...]:
    """The column headers of a report of ``workload``."""
    if workload == "stream":
        return COLUMNS
    return ("impl", "loop", *WORKLOAD_COLUMNS[workload], "LOC")


def header(report: Report) -> str:
    """One paragraph: the machine, the settings and the method the figures belong to."""
    m, s = report.machine, report.settings
    packages = ", ".join(
        f"{name} {version}"
        for name, version in m.items()
        if name not in ("cpu", "cores", "python", "system") and version != "not installed"
    )
    digest = "sha256 on both sides" if s.digest == "sha256" else "none"
    at_once = "" if s.concurrency is None else f", {s.concurrency} at a time"
    return (
        f"Workload `{s.workload}`. "
        f"Measured on {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; "
        f"{packages}. {human_size(s.size)} per connection × {s.connections} connection(s)"
        f"{at_once}, {format_size(s.chunk_size)} per write, digest {digest} in the timed "
        "runs. Every row was first verified by one transfer with sha256 on both sides "
        "(the reference by its byte counts), then warmed up once; then "
        f"{s.repeat} round(s), each running every row once in shuffled order right after "
        f"a run of the baseline (seed {s.seed}: `--seed {s.seed}` repeats the order). "
        f"The run took {report.seconds:.0f} s. Loop delay: with fewer than "
        f"{MIN_TICKS_FOR_P99} ticks in a run there is no p99, and the cell shows its max alone."
    )


def cells(row: Figures, workload: str = "stream") -> list[str]:
    """A row's figures as the strings of :func:`columns` of ``workload``."""
    loc = str(row.loc)
    width = len(columns(workload))
    if row.error is not None:
        return [row.target.impl, _loop(row.target), f"error: {row.error}", *[""] * (width - 4), loc]
    assert row.mb_per_s is not None
    ratio = row.ratio.text(2) if row.ratio is not None else "-"
    delays = [row.client_delay.text() if row.client_delay else "-"]
    delays.append(row.server_delay.text() if row.server_delay else "-")
    if workload == "many":
        return [
            row.target.impl,
            _loop(row.target),
            row.mb_per_s.text(),
            ratio,
            _number(row.server_kib_per_connection, 1),
            f"{_number(row.client_cpu_s_per_gib.median if row.client_cpu_s_per_gib else None, 2)}"
            f"/{_number(row.server_cpu_s_per_gib.median if row.server_cpu_s_per_gib else None, 2)}",
            *delays,
            loc,
        ]
    if workload == "churn":
        assert row.connections_per_s is not None
        return [
            row.target.impl,
            _loop(row.target),
            row.connections_per_s.text(),
            ratio,
            f"{_number(row.latency_p50_ms, 2)}/{_number(row.latency_p99_ms, 2)}",
            f"{_number(row.client_cpu_ms_per_connection, 3)}"
            f"/{_number(row.server_cpu_ms_per_connection, 3)}",
            f"{_number(row.client_waits_per_connection, 1)}"
            f"/{_number(row.server_waits_per_connection, 1)}",
            delays[1],
            loc,
        ]
    if workload == "small-writes":
        assert row.writes_per_s is not None
        return [
            row.target.impl,
            _loop(row.target),
            row.writes_per_s.text(),
            ratio,
            _spread(row.client_cpu_s_per_gib),
            _spread(row.server_cpu_s_per_gib),
            delays[0],
            loc,
        ]
    return [
        row.target.impl,
        _loop(row.target),
        row.mb_per_s.text(),
        row.ratio.text(2) if row.ratio is not None else "-",
        _spread(row.client_cpu_s_per_gib),
        _spread(row.server_cpu_s_per_gib),
        f"{row.client_waits_per_gib:.0f}/{row.server_waits_per_gib:.0f}",
        f"{row.client_rss_mib:.1f}/{row.server_rss_mib:.1f} "
        f"({row.client_growth_mib:+.1f}/{row.server_growth_mib:+.1f})",
        row.client_delay.text() if row.client_delay else "-",
        row.server_delay.text() if row.server_delay else "-",
        loc,
    ]


def _loop(target: Target) -> str:
    """The loop, and the knobs set with ``--tune`` if any."""
    tune = ", ".join(f"{path.rsplit('.', 1)[-1]}={format_size(v)}" for path, v in target.tune)
    return f"{target.loop}, {tune}" if tune else target.loop


def _spread(spread: Spread | None) -> str:
    return spread.text(2) if spread is not None else "-"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_markdown(report: Report) -> str:
    """The report as Markdown: what it ran on, the rows, and the matrix if there is one."""
    lines = [header(report), ""]
    rows = reduce(report)
    workload = report.settings.workload
    if rows:
        lines.append("| " + " | ".join(columns(workload)) + " |")
        lines.append("|" + " --- |" * len(columns(workload)))
        lines += ["| " + " | ".join(cells(row, workload)) + " |" for row in rows]
    if any(row.syscalls for row in rows):
        lines += ["", SYSCALLS_TITLE.format(per=per(report)), ""]
        lines.append("| " + " | ".join(SYSCALL_COLUMNS) + " |")
        lines.append("|" + " --- |" * len(SYSCALL_COLUMNS))
        lines += ["| " + " | ".join(syscall_cells(row)) + " |" for row in rows if row.syscalls]
    if report.matrix:
        lines += ["", matrix_markdown(report)]
    return "\n".join(lines) + "\n"


SYSCALLS_TITLE = (
    "System calls per {per} (`strace -f -c` of one more transfer, minus a 1-byte one's):"
)
SYSCALL_COLUMNS = ("impl", "loop", "sends, client", "receives, server", "waits c/s")


def per(report: Report) -> str:
    return "connection" if report.settings.workload == "churn" else "GiB"


def syscall_cells(row: Figures) -> list[str]:
    """A row's system call counts as the strings of :data:`SYSCALL_COLUMNS`."""
    calls = row.syscalls
    assert calls is not None
    if calls.error is not None:
        return [row.target.impl, _loop(row.target), calls.error, "", ""]
    digits = 1 if calls.per == "connection" else 0
    return [
        row.target.impl,
        _loop(row.target),
        _number(calls.client_sends, digits),
        _number(calls.server_receives, digits),
        f"{_number(calls.client_waits, digits)}/{_number(calls.server_waits, digits)}",
    ]


def matrix_markdown(report: Report) -> str:
    """The ``--matrix`` cells: clients down, servers across."""
    servers = sorted({c.server for c in report.matrix})
    lines = [
        "| client ↓ server → | " + " | ".join(servers) + " |",
        "| --- |" + " --- |" * len(servers),
    ]
    for client in sorted({c.client for c in report.matrix}):
        found = {c.server: c for c in report.matrix if c.client == client}
        lines.append(f"| {client} | " + " | ".join(_cell(found[s]) for s in servers) + " |")
    return "\n".join(lines)


def _cell(cell: Cell) -> str:
    if cell.transfer is None:
        return f"FAIL: {cell.error}"
    return f"{cell.transfer.server_mb_per_s:.0f} MB/s"


# --- several reports side by side ----------------------------------------------------------

#: The columns of each report's group in :func:`side_by_side`.
GROUP_COLUMNS = ("primary, median", "× blocking", "CPU s/GiB c/s")


def side_by_side(reports: Sequence[tuple[str, Report]]) -> tuple[list[str], list[list[str]]]:
    """Several stored reports (each with a label: its file, say) as one table: a row per
    implementation and loop, a group of columns per report; "-" where a report has no row."""
    workloads = {stored.settings.workload for _, stored in reports}
    if len(workloads) > 1:
        raise ValueError(f"reports of different workloads ({', '.join(sorted(workloads))})")
    (workload,) = workloads
    primary = _PRIMARY_LABEL[workload]
    headers = ["impl", "loop"]
    for label, stored in reports:
        python = stored.machine.get("python", "?")
        headers += [f"{label} (Python {python}): {primary}", "× blocking", "CPU s/GiB c/s"]
    reduced = [{row.target: row for row in reduce(stored)} for _, stored in reports]
    order: list[Target] = []
    for rows in reduced:
        order += [target for target in rows if target not in order]
    table = []
    for target in order:
        line = [target.impl, _loop(target)]
        for rows in reduced:
            line += _group(rows.get(target), workload)
        table.append(line)
    return headers, table


_PRIMARY_LABEL = {
    "stream": "MB/s",
    "many": "MB/s over all",
    "churn": "connections/s",
    "small-writes": "writes/s",
}


def _group(row: Figures | None, workload: str) -> list[str]:
    if row is None:
        return ["-", "-", "-"]
    if row.error is not None:
        return [f"error: {row.error}", "", ""]
    spread = {
        "churn": row.connections_per_s,
        "small-writes": row.writes_per_s,
    }.get(workload, row.mb_per_s)
    client = row.client_cpu_s_per_gib.median if row.client_cpu_s_per_gib else None
    server = row.server_cpu_s_per_gib.median if row.server_cpu_s_per_gib else None
    return [
        spread.text() if spread is not None else "-",
        row.ratio.text(2) if row.ratio is not None else "-",
        f"{_number(client, 2)}/{_number(server, 2)}",
    ]


def side_by_side_markdown(reports: Sequence[tuple[str, Report]]) -> str:
    """:func:`side_by_side` as Markdown, each report's header first."""
    headers, table = side_by_side(reports)
    lines = [f"- `{label}`: {header(stored)}" for label, stored in reports]
    lines += ["", "| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(line) + " |" for line in table]
    return "\n".join(lines) + "\n"
