"""``nbio compare``: what it runs, and how it reduces and shows what the processes reported.

The plan and the reduction are plain functions over the events of :mod:`common.bench`, so
they are tested without sockets. Figures are medians over the repeats with their spread.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from common import registry
from common.bench import Transfer

__all__ = [
    "BASELINE",
    "COLUMNS",
    "Cell",
    "Report",
    "Row",
    "Spread",
    "Target",
    "cells",
    "describe_run",
    "lines_of_code",
    "machine",
    "matrix_markdown",
    "plan",
    "summarize",
    "targets",
    "to_markdown",
]

BASELINE = "blocking"
GIB = 1024**3


@dataclass(frozen=True)
class Target:
    """One implementation on one loop."""

    impl: str
    loop: str = "default"

    @property
    def id(self) -> str:
        return self.impl if self.loop == "default" else f"{self.impl} ({self.loop})"


@dataclass(frozen=True)
class Spread:
    """A median with the smallest and largest value it came from."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, digits: int = 0) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


@dataclass(frozen=True)
class Row:
    """One implementation and loop, reduced over its repeats."""

    impl: str
    loop: str
    framework: str
    runs: int
    mb_per_s: Spread | None = None
    ratio: float | None = None  # to the blocking baseline's median, same run
    client_cpu_s_per_gib: float | None = None
    server_cpu_s_per_gib: float | None = None
    client_rss_mib: float | None = None
    server_rss_mib: float | None = None
    client_delay_ms: dict[str, float] = field(default_factory=dict)
    server_delay_ms: dict[str, float] = field(default_factory=dict)
    server_loc: int = 0
    client_loc: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Cell:
    """One client against one server, in ``--matrix``."""

    client: str
    server: str
    ok: bool
    mb_per_s: float | None = None
    error: str | None = None


@dataclass
class Report:
    """Everything ``nbio compare`` prints, in every format."""

    machine: dict[str, str]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    matrix: list[Cell] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def targets(impls: list[str] | None, loops: list[str] | None) -> list[Target]:
    """Every installed implementation and loop asked for; the blocking baseline always."""
    chosen = []
    for entry in registry.available():
        if impls and entry.name not in impls and entry.name != BASELINE:
            continue
        for loop in entry.available_loops():
            if loops and loop not in loops and entry.name != BASELINE:
                continue
            chosen.append(Target(entry.name, loop))
    return chosen


def plan(chosen: list[Target], repeat: int, seed: int = 863) -> list[Target]:
    """The order to run in: every target once per round, each round shuffled, so a drift
    on a noisy machine spreads over every row instead of landing on one."""
    rng = random.Random(seed)
    order = []
    for _ in range(repeat):
        round_ = list(chosen)
        rng.shuffle(round_)
        order.extend(round_)
    return order


def _delay(events: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The worst lateness over a set of events (connections, or repeats)."""
    delays = [e["loop_delay_ms"] for e in events]
    return {
        "p50": statistics.median(d["p50"] for d in delays),
        "p99": max(d["p99"] for d in delays),
        "max": max(d["max"] for d in delays),
    }


def summarize(
    target: Target,
    transfers: list[Transfer],
    errors: list[str],
    baseline: float | None = None,
) -> Row:
    """Reduce one target's repeats to a row; any failed repeat makes the row an error."""
    entry = registry.get(target.impl)
    server_loc, client_loc = lines_of_code(entry.server), lines_of_code(entry.client)
    if errors or not transfers:
        return Row(
            target.impl,
            target.loop,
            entry.framework,
            len(transfers) + len(errors),
            server_loc=server_loc,
            client_loc=client_loc,
            error=errors[0] if errors else "no run finished",
        )
    throughput = Spread.of([t.server_mb_per_s for t in transfers])
    gib = [t.sent["bytes"] / GIB for t in transfers]
    return Row(
        impl=target.impl,
        loop=target.loop,
        framework=entry.framework,
        runs=len(transfers),
        mb_per_s=throughput,
        ratio=throughput.median / baseline if baseline else None,
        client_cpu_s_per_gib=statistics.median(
            t.sent["cpu_s"] / g for t, g in zip(transfers, gib, strict=True)
        ),
        server_cpu_s_per_gib=statistics.median(
            t.stopped["cpu_s"] / g for t, g in zip(transfers, gib, strict=True)
        ),
        client_rss_mib=statistics.median(t.sent["peak_rss_kib"] / 1024 for t in transfers),
        server_rss_mib=statistics.median(t.stopped["peak_rss_kib"] / 1024 for t in transfers),
        client_delay_ms=_delay([t.sent for t in transfers]),
        server_delay_ms=_delay([r for t in transfers for r in t.received]),
        server_loc=server_loc,
        client_loc=client_loc,
    )


def lines_of_code(module: str) -> int:
    """Lines of a module that are neither blank, comments nor docstrings: the reading cost."""
    spec = importlib.util.find_spec(module)  # finds the file without importing it
    if spec is None or spec.origin is None:
        return 0
    count = 0
    in_docstring = False
    with open(spec.origin, encoding="utf-8") as source:
        for raw in source:
            line = raw.strip()
            quotes = line.count('"""')
            if in_docstring:
                in_docstring = quotes % 2 == 0
                continue
            if line.startswith('"""'):
                in_docstring = quotes == 1
                continue
            if line and not line.startswith("#"):
                count += 1
    return count


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("twisted", "tornado", "uvloop"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        **versions,
    }


#: Column headers of the table and the Markdown; "c/s" is client/server.
COLUMNS = (
    "impl",
    "loop",
    "MB/s (server)",
    "× blocking",
    "CPU s/GiB c/s",
    "RSS MiB c/s",
    "delay ms client p50/p99/max",
    "delay ms server p50/p99/max",
    "LOC s+c",
)


def describe_run(report: Report) -> str:
    """One paragraph: the machine and the settings the figures belong to."""
    m = report.machine
    s = report.settings
    return (
        f"Measured on {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; "
        f"Twisted {m['twisted']}, Tornado {m['tornado']}, uvloop {m['uvloop']}. "
        f"{s['size']} per connection × {s['connections']} connection(s), "
        f"{s['repeat']} run(s) per row in shuffled rounds, digest {s['digest']}; "
        f"medians (min–max)."
    )


def cells(row: Row) -> list[str]:
    """A row's figures as the strings of :data:`COLUMNS`."""
    loc = f"{row.server_loc}+{row.client_loc}"
    if row.error is not None:
        return [row.impl, row.loop, f"error: {row.error}", "", "", "", "", "", loc]
    assert row.mb_per_s is not None
    return [
        row.impl,
        row.loop,
        row.mb_per_s.text(),
        f"{row.ratio:.2f}" if row.ratio is not None else "-",
        f"{row.client_cpu_s_per_gib:.2f}/{row.server_cpu_s_per_gib:.2f}",
        f"{row.client_rss_mib:.1f}/{row.server_rss_mib:.1f}",
        _delays(row.client_delay_ms),
        _delays(row.server_delay_ms),
        loc,
    ]


def to_markdown(report: Report) -> str:
    """The report as Markdown: the machine, the rows, and the matrix if there is one."""
    lines = [describe_run(report), ""]
    if report.rows:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + " --- |" * len(COLUMNS))
        lines += ["| " + " | ".join(cells(row)) + " |" for row in report.rows]
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


def _delays(delay: dict[str, float]) -> str:
    return f"{delay['p50']:.1f}/{delay['p99']:.1f}/{delay['max']:.1f}"


def _cell(cell: Cell) -> str:
    return f"{cell.mb_per_s:.0f} MB/s" if cell.ok else f"FAIL: {cell.error}"
