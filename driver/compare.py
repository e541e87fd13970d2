"""``nbio compare``: which targets it runs, with which settings, in which order, into the
raw report it keeps (:mod:`nbio.record`).

A run, for every target (each implementation on each loop, plus the blocking baseline and
the plain-socket reference):

1. one **verification** transfer with sha256 on both sides: the byte counts and digests
   must match, or the row is an error and is not timed;
2. one **warm-up** transfer with the run's settings, discarded;
3. ``repeat`` **rounds**: each round runs every target once in a shuffled order (a fresh
   seed per run, printed, ``--seed`` repeats it), each right after a run of the baseline,
   so each target's ratio to the baseline comes from two neighbouring runs and a drift of
   the machine cancels out.

The report keeps every timed run's raw events; :mod:`nbio.figures` reduces them and
:mod:`nbio.report` renders them, here and from a saved file alike.
"""

from __future__ import annotations

import functools
import itertools
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from . import iperf, registry
from .bench import LOOPBACK, OUTSIDERS, Placement, run_transfer, strace_missing
from .iperf import IPERF
from .loc import implementation_modules, lines_of_code
from .machine import Stolen, machine
from .record import BASELINE, Cell, CompareSettings, Report, Row, Run
from .transfer import REFERENCE, Settings, Target, Transfer, TransferFailed
from .workloads import WORKLOADS, Workload

__all__ = [
    "Asked",
    "measure",
    "measure_steps",
    "run",
    "run_matrix",
    "saved_path",
    "settings_for",
    "targets",
    "watches",
]

Advance = Callable[[int], None]
#: Runs one transfer: :func:`nbio.bench.run_transfer`, or a fake in the unit tests.
RunTransfer = Callable[[Target, Target, Settings], Transfer]


# --- what to run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """What ``nbio compare`` was asked for beyond each workload's own settings: ``None``
    means the workload's default."""

    seed: int
    repeat: int = 3
    size: int | None = None
    connections: int | None = None
    concurrency: int | None = None
    chunk_size: int | None = None
    digest: str = "none"
    matrix: bool = False
    syscalls: bool = False
    duration: float | None = None
    link: str | None = None
    link_bits: int | None = None


def settings_for(workload: Workload, asked: Asked) -> CompareSettings:
    """The settings of a run of ``workload``: what was asked, else the workload's own. A
    ``--size`` without ``--duration`` replaces a time-based workload's duration."""
    duration = asked.duration
    if duration is None and asked.size is None:
        duration = workload.duration

    return CompareSettings(
        size=workload.size if asked.size is None else asked.size,
        seed=asked.seed,
        repeat=asked.repeat,
        connections=workload.connections if asked.connections is None else asked.connections,
        chunk_size=workload.chunk_size if asked.chunk_size is None else asked.chunk_size,
        digest=asked.digest,
        matrix=asked.matrix,
        workload=workload.name,
        concurrency=workload.concurrency if asked.concurrency is None else asked.concurrency,
        syscalls=asked.syscalls,
        duration=duration,
        link=asked.link,
        link_bits=asked.link_bits,
    )


def saved_path(save: str, workload: str, several: bool) -> str:
    """Where the report of ``workload`` is stored: ``save`` itself, or with several
    workloads one file each, ``FILE-WORKLOAD.json``."""
    if not several:
        return save
    stem, dot, suffix = save.rpartition(".")
    return f"{stem}-{workload}.{suffix}" if dot else f"{save}-{workload}"


def watches(target: Target, connections: int) -> bool:
    """Whether ``target``'s loop can watch ``connections`` sockets at once (a ``select``
    loop cannot watch descriptor 1024)."""
    if target.impl in OUTSIDERS:
        return True
    limit = registry.get(target.impl).loop(target.loop).max_connections
    return limit is None or connections <= limit


def measure(
    settings: CompareSettings,
    chosen: list[Target],
    advance: Advance,
    placement: Placement = LOOPBACK,
) -> Report:
    """Run ``settings`` over ``chosen`` (every client against every server with
    ``matrix``), each transfer where ``placement`` says, timing the whole run as the report
    keeps it."""
    started = time.monotonic()
    transfer = functools.partial(run_transfer, placement=placement)
    if settings.matrix:
        measured = run_matrix(settings, chosen, advance, transfer)
    else:
        tracer = functools.partial(run_transfer, strace=True, placement=placement)
        measured = run(settings, chosen, advance, transfer=transfer, tracer=tracer)
    measured.seconds = round(time.monotonic() - started, 1)  # as the saved report keeps it
    return measured


def measure_steps(settings: CompareSettings, chosen: list[Target]) -> int:
    """How many transfers :func:`measure` makes (for progress bars)."""
    if settings.matrix:
        return len([t for t in chosen if t.loop == "default"]) ** 2
    return steps(settings, len(chosen) + 1)


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


def _framework(target: Target) -> str:
    if target.impl in OUTSIDERS:
        return "plain sockets" if target.impl == REFERENCE else "iperf3 (C)"
    return registry.get(target.impl).framework


def _modules(target: Target) -> list[str]:
    if target.impl in OUTSIDERS:
        return [] if target.impl == IPERF else ["nbio.reference"]
    entry = registry.get(target.impl)
    return implementation_modules([entry.server, entry.client])


# --- running ----------------------------------------------------------------------------


#: Rounds every row gets; then only rows whose ratios to the baseline still disagree.
MIN_ROUNDS = 2
#: Pairs "agree" when their ratios' spread (max − min) is within this share of the median.
AGREE = 0.10


def run(
    settings: CompareSettings,
    chosen: list[Target],
    advance: Advance = lambda steps: None,
    reference: bool = True,
    transfer: RunTransfer = run_transfer,
    tracer: RunTransfer | None = None,
    kernel: bool = True,
) -> Report:
    """Verify and time every target in ``chosen`` (the baseline among them), and the
    reference and iperf3 (``kernel``: where it is installed) if asked; return the raw
    report."""
    rng = random.Random(settings.seed)
    stolen = Stolen()
    # The reference and iperf3 hash nothing: they have no place in a run that times hashing.
    # Nor in one of many connections: they are the yardsticks of one stream.
    notes = []
    yardsticks = []
    if reference and settings.digest == "none" and settings.workload == "stream":
        yardsticks.append(Target(REFERENCE))
        missing = iperf.missing()
        if missing is None and kernel:
            yardsticks.append(Target(IPERF))
        elif kernel:
            notes.append(f"{missing}: no row of the kernel's own figure")
    everyone = list(chosen) + yardsticks
    rows = {t: Row(t, _framework(t), lines_of_code(_modules(t)), _modules(t)) for t in everyone}
    sequence = itertools.count()

    # 1. Verification, hashed on both sides; it warms each row up too (page cache, the
    # kernel's socket buffers), as the separate warm-up run did before it, at half the time.
    for target in _shuffled(everyone, rng):
        _verify(rows[target], settings, transfer)
        advance(1)

    baseline = Target(BASELINE)
    timed = [t for t in everyone if rows[t].verified and not rows[t].errors]
    others = [t for t in timed if t != baseline]
    with_baseline = baseline in timed  # a failed baseline: the others run, without ratios
    # 2. Rounds: each target right after a run of the baseline, in a shuffled order. After
    # MIN_ROUNDS, only the rows whose ratios still disagree get another, up to repeat.
    for number in range(settings.repeat):
        due = [t for t in others if number < MIN_ROUNDS or not _agrees(rows[t], rows, settings)]
        if number >= MIN_ROUNDS and not due:
            break
        for target in _shuffled(due, rng):
            paired = None
            if with_baseline:
                paired = _time(rows[baseline], next(sequence), None, settings, transfer)
            _time(rows[target], next(sequence), paired, settings, transfer)
            advance(2)
        if not others and with_baseline:
            _time(rows[baseline], next(sequence), None, settings, transfer)
            advance(2)
    if settings.syscalls:  # 3. the counts, apart: strace slows every call it counts
        tracer = tracer or functools.partial(run_transfer, strace=True)
        for target in timed:
            _trace(rows[target], settings, tracer)
            advance(2)
    ran = replace(settings, min_rounds=MIN_ROUNDS)  # the rule the rounds followed
    return Report(machine(stolen.percent()), ran, [rows[t] for t in everyone], notes=notes)


def _agrees(row: Row, rows: dict[Target, Row], settings: CompareSettings) -> bool:
    """Whether ``row``'s ratios to the baseline runs it was paired with (of the workload's
    first figure) agree within :data:`AGREE` of their median: then another round would
    hardly move it. A row without a baseline agrees once it has its runs."""
    primary = WORKLOADS[settings.workload].primary
    base = rows.get(Target(BASELINE))
    paired = {run.seq: run.transfer for run in base.runs} if base else {}
    ratios = [
        primary(run.transfer) / primary(paired[run.paired_with])
        for run in row.runs
        if run.paired_with in paired and primary(paired[run.paired_with]) > 0
    ]
    if not ratios:
        return bool(row.runs) and not paired
    middle = statistics.median(ratios)
    return middle > 0 and (max(ratios) - min(ratios)) <= AGREE * middle


def _trace(row: Row, settings: CompareSettings, tracer: RunTransfer) -> None:
    """The row's system calls: one transfer under strace, and a tiny one to subtract."""
    missing = strace_missing()
    if missing is not None:
        row.traced_error = missing
        return
    tiny = replace(settings.transfer, size=1, connections=1, concurrency=None)
    try:
        row.traced = [tracer(row.target, row.target, s) for s in (settings.transfer, tiny)]
    except TransferFailed as exc:
        row.traced_error = f"under strace: {exc}"


def steps(settings: CompareSettings, count: int) -> int:
    """How many transfers :func:`run` makes at most for ``count`` targets, the reference
    included (for progress bars)."""
    traced = 2 * count if settings.syscalls else 0
    return count + settings.repeat * 2 * max(1, count - 1) + traced


def _shuffled(items: Iterable[Target], rng: random.Random) -> list[Target]:
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled


def _verify(row: Row, settings: CompareSettings, transfer: RunTransfer) -> None:
    """One transfer with sha256 on both sides (the reference hashes nothing: it is checked
    by its byte counts); record what failed."""
    reference = row.target.impl in OUTSIDERS
    digest = "none" if reference else "sha256"
    checked = replace(settings.transfer, digest=digest)
    try:
        row.verification = transfer(row.target, row.target, checked)
    except TransferFailed as exc:
        row.errors.append(f"verification: {exc}")
        return
    row.verified = "bytes" if reference else "sha256"


def _time(
    row: Row, seq: int, paired: int | None, settings: CompareSettings, transfer: RunTransfer
) -> int | None:
    """One timed transfer into ``row``; return its number, or None if it failed."""
    try:
        done = transfer(row.target, row.target, settings.transfer)
    except TransferFailed as exc:
        row.errors.append(str(exc))
        return None
    row.runs.append(Run(seq, done, paired))
    return seq


def run_matrix(
    settings: CompareSettings,
    chosen: list[Target],
    advance: Advance,
    transfer: RunTransfer = run_transfer,
) -> Report:
    """Every client against every server, on their default loops: each pair verified with
    sha256 on both sides, then timed once with the run's settings."""
    defaults = [t for t in chosen if t.loop == "default"]
    stolen = Stolen()
    cells = []
    checked = replace(settings.transfer, digest="sha256")
    for client, server in itertools.product(defaults, defaults):
        try:
            transfer(server, client, checked)
            timed = transfer(server, client, settings.transfer)
        except TransferFailed as exc:
            cells.append(Cell(client.impl, server.impl, False, error=str(exc)))
        else:
            cells.append(Cell(client.impl, server.impl, True, timed))
        advance(1)
    return Report(machine(stolen.percent()), settings, matrix=cells)
