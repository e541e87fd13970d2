"""A raw ``nbio compare`` report as text: its header (the machine, the settings, the
method), its tables (the rows, their system calls, the ``--matrix`` cells), and several
reports side by side. The figures come from :mod:`nbio.figures`, the columns from each
workload's definition (:mod:`nbio.workloads`); Markdown is rendered here, the terminal's
tables by :mod:`nbio.terminal`, from the same :class:`Table` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .common.loopdelay import MIN_TICKS_FOR_P99
from .common.sizes import format_size, human_size
from .compare import AGREE
from .figures import Figures, Spread, reduce
from .machine import differences
from .record import BASELINE, Cell, Report
from .transfer import Target
from .workloads import WORKLOADS, Column, number, spread

__all__ = [
    "SYSCALLS_TITLE",
    "Table",
    "agreement",
    "cells",
    "header",
    "machines_differ",
    "side_by_side",
    "side_by_side_markdown",
    "tables",
    "to_markdown",
]


@dataclass(frozen=True)
class Table:
    """A table to render, as Markdown or in a terminal: an optional line before it."""

    headers: tuple[str, ...]
    rows: list[list[str]]
    title: str | None = None

    def markdown(self) -> str:
        """The table as Markdown, its title first."""
        lines = [self.title, ""] if self.title else []
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + " --- |" * len(self.headers))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def header(report: Report) -> str:
    """One paragraph: the machine, the settings and the method the figures belong to."""
    m, s = report.machine, report.settings
    packages = ", ".join(
        f"{name} {version}" for name, version in m.packages.items() if version != "not installed"
    )
    digest = "sha256 on both sides" if s.digest == "sha256" else "none"
    at_once = "" if s.concurrency is None else f", {s.concurrency} at a time"
    if s.duration is None:
        amount = f"{human_size(s.size)} per connection"
    else:
        amount = f"{s.duration:g} s per connection (at most {human_size(s.size)})"
    where = "over 127.0.0.1"
    if s.link is not None:
        where = (
            f"over a link of {s.link}: server and client each in a network namespace of its "
            "own, joined by a veth pair with a tbf qdisc at that rate on both ends"
        )
    if s.tls:
        where += f", over TLS ({_negotiated(report)})"
    writes = f"{format_size(s.chunk_size)} per write"
    if s.message_size is not None:  # echo: what is written is a request, whatever the chunk
        loop = "closed loop" if s.rate is None else f"open loop at {s.rate:g} a second each"
        writes = f"requests of {format_size(s.message_size)}, {loop}"
        bulk = WORKLOADS[s.workload].bulk
        if bulk is not None:
            writes += f", beside a bulk echo of {format_size(bulk)} messages on another connection"
    return (
        f"Workload `{s.workload}`. "
        f"Measured on {m.summary()}; {packages}. {amount} × {s.connections} connection(s)"
        f"{at_once}, {writes}, {where}, digest {digest} in the "
        f"timed runs. {_method(report)} (seed {s.seed}: `--seed {s.seed}` repeats the order). "
        f"The run took {report.seconds:.0f} s. Loop delay: with fewer than "
        f"{MIN_TICKS_FOR_P99} ticks in a run there is no p99, and the cell shows its max alone."
        + "".join(f" Note: {note}." for note in report.notes)
    )


def _negotiated(report: Report) -> str:
    """What the timed runs' clients say their handshakes agreed, as the events have it."""
    agreed: dict[str, int] = {}
    for row in report.rows:
        for run in row.runs:
            sent = run.transfer.sent
            if sent.tls_version is not None:
                what = f"{sent.tls_version} with {sent.tls_cipher}"
                agreed[what] = agreed.get(what, 0) + 1
    if not agreed:
        return "no run said what it negotiated"
    if len(agreed) == 1:
        return f"every timed run negotiated {next(iter(agreed))}"
    return "the timed runs negotiated " + ", ".join(f"{k} ({n})" for k, n in agreed.items())


def _method(report: Report) -> str:
    """How the rows were verified and timed (a report stored before format 4 had a warm-up
    run and every row got every round)."""
    s = report.settings
    verified = (
        "Every row was first verified by one transfer with sha256 on both sides (the "
        "reference by its byte counts)"
    )
    if s.min_rounds is None:
        return (
            f"{verified}, then warmed up once; then {s.repeat} round(s), each running every "
            "row once in shuffled order right after a run of the baseline"
        )
    more = [
        f"{row.target.id} {len(row.runs)}"
        for row in report.rows
        if len(row.runs) > s.min_rounds and row.target.impl != BASELINE
    ]
    rounds = (
        f"{verified}, which was its warm-up too; then {min(s.min_rounds, s.repeat)} round(s), "
        "each running every row once in shuffled order right after a run of the baseline"
    )
    if s.repeat <= s.min_rounds:
        return rounds
    return (
        f"{rounds}, and up to {s.repeat} for rows whose ratios to their baseline runs still "
        f"differed by more than {AGREE:.0%} of their median ({', '.join(more) or 'none did'})"
    )


def cells(row: Figures, workload: str = "stream", link: bool = False) -> list[str]:
    """A row's figures as the strings of ``workload``'s columns (over a ``--link``, its
    link view)."""
    columns = WORKLOADS[workload].view(link)
    first = [row.target.impl, _loop(row.target)]
    loc = str(row.loc) if row.loc else "-"  # iperf3 has no Python to count
    if row.error is not None:
        return [*first, f"error: {row.error}", *[""] * (len(columns) - 1), loc]
    return [*first, *(column.cell(row) for column in columns), loc]


def _loop(target: Target) -> str:
    """The loop, the knobs set with ``--tune`` if any, and the client, if another's (an
    echo server with the neutral client)."""
    tune = [f"{path.rsplit('.', 1)[-1]}={format_size(v)}" for path, v in target.tune]
    client = [] if target.client is None else [f"{target.client} client"]
    return ", ".join([target.loop, *tune, *client])


SYSCALLS_TITLE = (
    "System calls per {per} (`strace -f -c` of one more transfer, minus a 1-byte one's):"
)
SYSCALL_COLUMNS = ("impl", "loop", "sends, client", "receives, server", "waits c/s")


def _syscall_cells(row: Figures) -> list[str]:
    """A row's system call counts as the strings of :data:`SYSCALL_COLUMNS`."""
    calls = row.syscalls
    assert calls is not None
    if calls.error is not None:
        return [row.target.impl, _loop(row.target), calls.error, "", ""]
    digits = 1 if calls.per == "connection" else 0
    return [
        row.target.impl,
        _loop(row.target),
        number(calls.client_sends, digits),
        number(calls.server_receives, digits),
        f"{number(calls.client_waits, digits)}/{number(calls.server_waits, digits)}",
    ]


def tables(report: Report) -> list[Table]:
    """Every table of ``report``: its rows, their system calls if counted, the matrix."""
    rows = reduce(report)
    workload = WORKLOADS[report.settings.workload]
    link = report.settings.link is not None
    found = []
    if rows:
        found.append(
            Table(workload.headers(link), [cells(row, workload.name, link) for row in rows])
        )
    if any(row.syscalls for row in rows):
        found.append(
            Table(
                SYSCALL_COLUMNS,
                [_syscall_cells(row) for row in rows if row.syscalls],
                SYSCALLS_TITLE.format(per=workload.per.name),
            )
        )
    if report.matrix:
        found.append(_matrix(report))
    return found


def to_markdown(report: Report) -> str:
    """The report as Markdown: what it ran on, then its tables."""
    return "\n\n".join([header(report), *(t.markdown() for t in tables(report))]) + "\n"


def _matrix(report: Report) -> Table:
    """The ``--matrix`` cells: clients down, servers across."""
    servers = sorted({c.server for c in report.matrix})
    rows = []
    for client in sorted({c.client for c in report.matrix}):
        found = {c.server: c for c in report.matrix if c.client == client}
        rows.append([client, *(_cell(found[s]) for s in servers)])
    return Table(("client ↓ server →", *servers), rows)


def _cell(cell: Cell) -> str:
    if cell.transfer is None:
        return f"FAIL: {cell.error}"
    return f"{cell.transfer.server_mb_per_s:.0f} MB/s"


# --- several reports side by side ----------------------------------------------------------


def side_by_side(reports: Sequence[tuple[str, Report]]) -> Table:
    """Several stored reports (each with a label: its file, say) as one table: a row per
    implementation and loop, a group of columns per report (the first figure, its ratio,
    each side's CPU, the workload's figures that may travel, and the system calls where
    they were counted); "-" where a report has no row."""
    names = {stored.settings.workload for _, stored in reports}
    if len(names) > 1:
        raise ValueError(f"reports of different workloads ({', '.join(sorted(names))})")
    workload = WORKLOADS[names.pop()]
    reduced = [{row.target: row for row in reduce(stored)} for _, stored in reports]
    counted = any(row.syscalls is not None for rows in reduced for row in rows.values())
    columns = [workload.cpu(), *workload.beside]
    headers = ["impl", "loop"]
    for label, stored in reports:
        python = stored.machine.python
        headers += [f"{label} (Python {python}): {workload.label}", "× blocking"]
        headers += [column.header for column in columns]
        if counted:
            headers.append(f"sends c/receives s per {workload.per.name}")
    order: list[Target] = []
    for rows in reduced:
        order += [target for target in rows if target not in order]
    table = []
    for target in order:
        line = [target.impl, _loop(target)]
        for rows in reduced:
            line += _group(rows.get(target), columns, counted)
        table.append(line)
    return Table(tuple(headers), table)


def _group(row: Figures | None, columns: Sequence[Column], counted: bool) -> list[str]:
    width = 2 + len(columns) + counted
    if row is None:
        return ["-"] * width
    if row.error is not None:
        return [f"error: {row.error}"] + [""] * (width - 1)
    cells = [spread(row.primary, 0), spread(row.ratio), *(c.cell(row) for c in columns)]
    if counted:
        cells.append(_calls(row))
    return cells


def _calls(row: Figures) -> str:
    """The client's sends and the server's receives per unit, or why there are none."""
    calls = row.syscalls
    if calls is None:
        return "-"
    if calls.error is not None:
        return "not counted"
    digits = 1 if calls.per == "connection" else 0
    return f"{number(calls.client_sends, digits)}/{number(calls.server_receives, digits)}"


def _cpu(row: Figures) -> Spread | None:
    """Both sides' CPU per unit of work, added: the medians, and the lows and the highs
    (a range at least as wide as the sum's own)."""
    client, server = row.client_cpu_s_per_unit, row.server_cpu_s_per_unit
    if client is None or server is None:
        return None
    return Spread(client.median + server.median, client.low + server.low, client.high + server.high)


def _ahead(
    rows: Sequence[dict[Target, Figures]],
    figure: Callable[[Figures], Spread | None],
    higher_is_better: bool,
) -> dict[Target, list[Target]]:
    """For each target every report has, the others it is ahead of in every report: its
    worst run better than their best, report by report (spreads that touch rank nothing)."""
    common = [t for t in rows[0] if all(t in r and r[t].error is None for r in rows)]
    ahead: dict[Target, list[Target]] = {}
    for target in common:
        ahead[target] = []
        for other in common:
            if other == target:
                continue
            everywhere = True
            for r in rows:
                mine, theirs = figure(r[target]), figure(r[other])
                if mine is None or theirs is None:
                    everywhere = False
                elif higher_is_better:
                    everywhere = everywhere and mine.low > theirs.high
                else:
                    everywhere = everywhere and mine.high < theirs.low
            if everywhere:
                ahead[target].append(other)
    return ahead


def agreement(reports: Sequence[tuple[str, Report]]) -> Table:
    """What ranks the same in every report: for each implementation and loop all of them
    ran, the others it is ahead of in each, on the workload's ratio to blocking (its min–max
    above theirs in every report; the ratio, since each machine's blocking runs beside it)
    and on both sides' CPU per unit of work added (less is ahead; a figure a link-limited
    team pays for). An order missing here flipped, or overlapped, on some machine."""
    workload = WORKLOADS[reports[0][1].settings.workload]
    rows = [{row.target: row for row in reduce(stored)} for _, stored in reports]
    by_ratio = _ahead(rows, lambda row: row.ratio, workload.higher_is_better)
    by_cpu = _ahead(rows, _cpu, higher_is_better=False)
    headers = (
        "impl",
        "loop",
        f"ahead on every machine: {workload.label} × blocking",
        f"ahead on every machine: CPU s/{workload.per.name}, client + server",
    )
    table = [
        [target.impl, _loop(target), _names(by_ratio[target]), _names(by_cpu[target])]
        for target in by_ratio
    ]
    return Table(headers, table)


def _names(targets: Sequence[Target]) -> str:
    return ", ".join(target.id for target in targets) or "-"


def machines_differ(reports: Sequence[tuple[str, Report]]) -> list[str]:
    """What differs between the machines of several reports, one line each (none if they
    ran on one machine, or on machines that record the same)."""
    return differences([(label, stored.machine) for label, stored in reports])


def side_by_side_markdown(reports: Sequence[tuple[str, Report]]) -> str:
    """:func:`side_by_side` as Markdown: each report's header first, then what differs
    between their machines."""
    lines = [f"- `{label}`: {header(stored)}" for label, stored in reports]
    differ = machines_differ(reports)
    if differ:
        lines += ["", "What differs between the machines:", ""]
        lines += [f"- {line}" for line in differ]
    text = "\n".join(lines) + "\n\n" + side_by_side(reports).markdown() + "\n"
    if len(reports) > 1:
        text += "\nWhat ranks the same on every machine:\n\n" + agreement(reports).markdown() + "\n"
    return text
