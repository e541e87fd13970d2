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
  max alone; a row whose processes never ticked says "no ticks".
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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.to_json()
        return data


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _growth(peak_kib: int, baseline_kib: int) -> float:
    return (peak_kib - baseline_kib) / 1024


def reduce(report: Report) -> list[Figures]:
    """Every row of ``report``, reduced from its raw runs."""
    base = next((row for row in report.rows if row.target == Target(BASELINE)), None)
    baseline_runs = {run.seq: run.transfer for run in base.runs} if base else {}
    return [_reduce(row, baseline_runs) for row in report.rows]


def _reduce(row: Row, baseline_runs: dict[int, Transfer]) -> Figures:
    plain = Figures(row.target, row.framework, row.verified, row.error, len(row.runs), row.loc)
    if row.error is not None:
        return plain
    transfers = [run.transfer for run in row.runs]
    gib = [t.sent["bytes"] / GIB for t in transfers]
    pairs = [
        run.transfer.server_mb_per_s / baseline_runs[run.paired_with].server_mb_per_s
        for run in row.runs
        if run.paired_with in baseline_runs
    ]
    if row.target == Target(BASELINE):
        pairs = [1.0] * len(transfers)
    return replace(
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


def figures(report: Report) -> list[dict[str, Any]]:
    """Each row's figures as JSON, for a report's readers (``--json``, ``--save``)."""
    return [row.to_json() for row in reduce(report)]


# --- text --------------------------------------------------------------------------------

#: Column headers, each naming its statistic ("c/s" is client/server).
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


def header(report: Report) -> str:
    """One paragraph: the machine, the settings and the method the figures belong to."""
    m, s = report.machine, report.settings
    packages = ", ".join(
        f"{name} {version}"
        for name, version in m.items()
        if name not in ("cpu", "cores", "python", "system") and version != "not installed"
    )
    digest = "sha256 on both sides" if s.digest == "sha256" else "none"
    return (
        f"Measured on {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; "
        f"{packages}. {human_size(s.size)} per connection × {s.connections} connection(s), "
        f"{format_size(s.chunk_size)} per write, digest {digest} in the timed runs. Every "
        "row was first verified by one transfer with sha256 on both sides (the reference "
        "by its byte counts), then warmed up once; then "
        f"{s.repeat} round(s), each running every row once in shuffled order right after "
        f"a run of the baseline (seed {s.seed}: `--seed {s.seed}` repeats the order). "
        f"The run took {report.seconds:.0f} s. Loop delay: with fewer than "
        f"{MIN_TICKS_FOR_P99} ticks in a run there is no p99, and the cell shows its max alone."
    )


def cells(row: Figures) -> list[str]:
    """A row's figures as the strings of :data:`COLUMNS`."""
    loc = str(row.loc)
    if row.error is not None:
        return [row.target.impl, _loop(row.target), f"error: {row.error}", *[""] * 7, loc]
    assert row.mb_per_s is not None
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


def to_markdown(report: Report) -> str:
    """The report as Markdown: what it ran on, the rows, and the matrix if there is one."""
    lines = [header(report), ""]
    rows = reduce(report)
    if rows:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + " --- |" * len(COLUMNS))
        lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    if report.matrix:
        lines += ["", matrix_markdown(report)]
    return "\n".join(lines) + "\n"


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
