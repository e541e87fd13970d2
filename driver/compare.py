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

from . import iperf, registry, sockperf
from .bench import LOOPBACK, OUTSIDERS, Placement, run_transfer, strace_missing
from .common.options import ServerTls
from .common.sizes import format_size
from .iperf import IPERF
from .loc import implementation_modules, lines_of_code
from .machine import Stolen, machine
from .record import BASELINE, Cell, CompareSettings, Report, Row, Run
from .sockperf import SOCKPERF
from .transfer import REFERENCE, Settings, Target, Transfer, TransferFailed
from .workloads import WORKLOADS, Workload

__all__ = [
    "Asked",
    "label",
    "measure",
    "measure_steps",
    "plans",
    "run",
    "run_matrix",
    "saved_path",
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
    message_size: int | None = None
    rate: float | None = None
    tls: bool = False


def plans(workload: Workload, asked: Asked) -> list[CompareSettings]:
    """The settings of each run of ``workload``: what was asked, else the workload's own
    (a ``--size`` without ``--duration`` replaces a time-based workload's duration); one
    per cell of an echo workload's grid that ``--message-size`` and ``--connections``
    leave in."""
    duration = asked.duration
    if duration is None and asked.size is None:
        duration = workload.duration
    plain = CompareSettings(
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
        tls=asked.tls,
    )
    if not workload.grid:
        return [plain]
    cells = [
        (size, connections)
        for size, connections in workload.grid
        if asked.message_size in (None, size) and asked.connections in (None, connections)
    ]
    if not cells:  # a cell of the caller's own, off the grid
        first_size, first_connections = workload.grid[0]
        cells = [(asked.message_size or first_size, asked.connections or first_connections)]
    return [
        replace(plain, message_size=size, connections=connections, rate=asked.rate)
        for size, connections in cells
    ]


def label(settings: CompareSettings) -> str:
    """A run's name: its workload, and for a cell of an echo grid its message size and
    connections (``echo-1KiB-10c``)."""
    if settings.message_size is None or not WORKLOADS[settings.workload].grid[1:]:
        return settings.workload
    return f"{settings.workload}-{format_size(settings.message_size)}-{settings.connections}c"


def saved_path(save: str, name: str, several: bool) -> str:
    """Where the report of the run called ``name`` is stored: ``save`` itself, or with
    several runs one file each, ``FILE-NAME.json``."""
    if not several:
        return save
    stem, dot, suffix = save.rpartition(".")
    return f"{stem}-{name}.{suffix}" if dot else f"{save}-{name}"


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
    files: ServerTls | None = None,
) -> Report:
    """Run ``settings`` over ``chosen`` (every client against every server with
    ``matrix``), each transfer where ``placement`` says, timing the whole run as the report
    keeps it."""
    started = time.monotonic()
    transfer = functools.partial(run_transfer, placement=placement)
    if settings.matrix:
        measured = run_matrix(settings, chosen, advance, transfer, files)
    else:
        tracer = functools.partial(run_transfer, strace=True, placement=placement)
        measured = run(settings, chosen, advance, transfer=transfer, tracer=tracer, files=files)
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
        return {REFERENCE: "plain sockets", IPERF: "iperf3 (C)", SOCKPERF: "sockperf (C)"}[
            target.impl
        ]
    return registry.get(target.impl).framework


def _modules(target: Target) -> list[str]:
    if target.impl in OUTSIDERS:
        return ["nbio.reference"] if target.impl == REFERENCE else []
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
    files: ServerTls | None = None,
) -> Report:
    """Verify and time every target in ``chosen`` (the baseline among them), and the
    yardsticks if asked (``reference``: nbio's plain sockets; ``kernel``: iperf3 or
    sockperf, where installed); over TLS, with the certificate and CA in ``files``.
    Return the raw report."""
    rng = random.Random(settings.seed)
    stolen = Stolen()
    base = replace(settings.transfer, tls=files if settings.tls else None)
    everyone, notes = _everyone(settings, chosen, reference, kernel)
    rows = {t: Row(t, _framework(t), lines_of_code(_modules(t)), _modules(t)) for t in everyone}
    sequence = itertools.count()

    # 1. Verification, hashed on both sides; it warms each row up too (page cache, the
    # kernel's socket buffers), as the separate warm-up run did before it, at half the time.
    for target in _shuffled(everyone, rng):
        _verify(rows[target], base, transfer)
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
                paired = _time(rows[baseline], next(sequence), None, base, transfer)
            _time(rows[target], next(sequence), paired, base, transfer)
            advance(2)
        if not others and with_baseline:
            _time(rows[baseline], next(sequence), None, base, transfer)
            advance(2)
    if settings.syscalls:  # 3. the counts, apart: strace slows every call it counts
        tracer = tracer or functools.partial(run_transfer, strace=True)
        for target in timed:
            _trace(rows[target], base, tracer)
            advance(2)
    ran = replace(settings, min_rounds=MIN_ROUNDS)  # the rule the rounds followed
    return Report(machine(stolen.percent()), ran, [rows[t] for t in everyone], notes=notes)


def _everyone(
    settings: CompareSettings, chosen: list[Target], reference: bool, kernel: bool
) -> tuple[list[Target], list[str]]:
    """The rows of a run: ``chosen``; in an echo run each server again with the neutral
    client (the reference's), so that server rows compare servers; and the yardsticks of
    one stream or one ping-pong, where they fit, with a note where they do not. None in a
    run that times hashing: they hash nothing."""
    everyone = list(chosen)
    notes: list[str] = []
    echo = settings.message_size is not None
    if echo:
        everyone += [
            Target(t.impl, t.loop, t.tune, client=REFERENCE)
            for t in chosen
            if t.impl not in OUTSIDERS and t.client is None
        ]
    if not reference or settings.digest != "none" or settings.transfer.beside is not None:
        return everyone, notes
    stream = WORKLOADS[settings.workload].yardsticks
    if stream or echo:
        everyone.append(Target(REFERENCE))
    if not kernel:
        return everyone, notes
    name, missing = (SOCKPERF, sockperf.missing()) if echo else (IPERF, iperf.missing())
    if not stream and not echo:
        return everyone, notes
    if missing is not None:
        notes.append(f"{missing}: no row of the kernel's own figure")
    elif name == IPERF and settings.duration is None:
        # Its receiver's count stops with its clock; a run of a size is not its kind.
        notes.append("iperf3 times whole seconds: its row is in time-based runs (--duration)")
    elif settings.tls:
        notes.append(f"{name} speaks no TLS: no row of the kernel's own figure")
    elif echo and settings.connections != 1:
        notes.append("sockperf's ping-pong is one connection: its row is in the 1-connection runs")
    elif echo and (settings.message_size or 0) > sockperf.MAX_MESSAGE:
        notes.append(f"sockperf's ping-pong takes messages up to {sockperf.MAX_MESSAGE} bytes")
    else:
        everyone.append(Target(name))
    return everyone, notes


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


def _trace(row: Row, base: Settings, tracer: RunTransfer) -> None:
    """The row's system calls: one transfer under strace, and a tiny one to subtract."""
    missing = strace_missing()
    if missing is not None:
        row.traced_error = missing
        return
    tiny = replace(base, size=1, connections=1, concurrency=None, duration=None)
    if base.echo is not None:  # one request of one byte: start-up, connect, close
        tiny = replace(tiny, echo=replace(base.echo, message_size=1, requests=1), beside=None)
    target = row.target
    if target.impl in (IPERF, SOCKPERF):  # they time whole runs: no 1-byte one to subtract
        row.traced_error = f"not counted: {target.impl} cannot make the 1-byte transfer subtracted"
        return
    try:
        row.traced = [tracer(target.server_side, target.client_side, s) for s in (base, tiny)]
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


#: What each connection of a run of several, timed by a duration, sends to be verified.
VERIFIED_BYTES = 1024 * 1024


def _verify(row: Row, base: Settings, transfer: RunTransfer) -> None:
    """One transfer with sha256 on both sides (the yardsticks hash nothing: they are
    checked by their byte counts); record what failed."""
    target = row.target
    reference = target.impl in OUTSIDERS or target.client in OUTSIDERS
    digest = "none" if reference else "sha256"
    checked = replace(base, digest=digest)
    if base.duration is not None and base.connections > 1:
        # Connections of a duration each send what they had time for, and a client hashes
        # one payload for all of them: so a fixed amount each, VERIFIED_BYTES at least.
        checked = replace(checked, duration=None, size=max(base.chunk_size, VERIFIED_BYTES))
        if base.echo is not None:
            requests = -(-VERIFIED_BYTES // base.echo.message_size)
            checked = replace(checked, echo=replace(base.echo, requests=requests, rate=None))
    try:
        row.verification = transfer(target.server_side, target.client_side, checked)
    except TransferFailed as exc:
        row.errors.append(f"verification: {exc}")
        return
    row.verified = "bytes" if reference else "sha256"


def _time(
    row: Row, seq: int, paired: int | None, base: Settings, transfer: RunTransfer
) -> int | None:
    """One timed transfer into ``row``; return its number, or None if it failed."""
    try:
        done = transfer(row.target.server_side, row.target.client_side, base)
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
    files: ServerTls | None = None,
) -> Report:
    """Every client against every server, on their default loops: each pair verified with
    sha256 on both sides, then timed once with the run's settings."""
    defaults = [t for t in chosen if t.loop == "default"]
    stolen = Stolen()
    cells = []
    base = replace(settings.transfer, tls=files if settings.tls else None)
    checked = replace(base, digest="sha256")
    for client, server in itertools.product(defaults, defaults):
        try:
            transfer(server, client, checked)
            timed = transfer(server, client, base)
        except TransferFailed as exc:
            cells.append(Cell(client.impl, server.impl, False, error=str(exc)))
        else:
            cells.append(Cell(client.impl, server.impl, True, timed))
        advance(1)
    return Report(machine(stolen.percent()), settings, matrix=cells)
