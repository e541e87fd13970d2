"""``nbio compare``: which targets it runs, in which order, and the raw report it keeps.

A run, for every target (each implementation on each loop, plus the blocking baseline and
the plain-socket reference):

1. one **verification** transfer with sha256 on both sides: the byte counts and digests
   must match, or the row is an error and is not timed;
2. one **warm-up** transfer with the run's settings, discarded;
3. ``repeat`` **rounds**: each round runs every target once in a shuffled order (a fresh
   seed per run, printed, ``--seed`` repeats it), each right after a run of the baseline,
   so each target's ratio to the baseline comes from two neighbouring runs and a drift of
   the machine cancels out.

The report keeps every timed run's raw events (:class:`Run`); :mod:`nbio.report` reduces
and renders them, here and from a saved file alike.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import itertools
import json
import os
import platform
import random
import token
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import registry
from .bench import (
    REFERENCE,
    Settings,
    Target,
    Transfer,
    TransferFailed,
    run_transfer,
    strace_missing,
)
from .common.payload import DEFAULT_CHUNK_SIZE
from .workloads import WORKLOADS, Workload

__all__ = [
    "BASELINE",
    "FORMAT",
    "WORKLOADS",
    "Cell",
    "CompareSettings",
    "Report",
    "Row",
    "Run",
    "Workload",
    "lines_of_code",
    "machine",
    "run",
    "run_matrix",
    "targets",
]

BASELINE = "blocking"
#: The version of the saved report's layout.
FORMAT = 3
#: Formats :meth:`Report.from_json` reads: format 2 is format 3's ``stream`` workload,
#: before workloads, ``--syscalls`` and ``received_count``.
READABLE = (2, FORMAT)


#: Packages whose modules count as an implementation's code (a reader reads them).
_IMPL_SUFFIX = "_impl"

Advance = Callable[[int], None]
#: Runs one transfer: :func:`nbio.bench.run_transfer`, or a fake in the unit tests.
RunTransfer = Callable[[Target, Target, Settings], Transfer]


@dataclass(frozen=True)
class CompareSettings:
    """What ``nbio compare`` was asked for."""

    size: int
    seed: int
    repeat: int = 3
    connections: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    digest: str = "none"
    matrix: bool = False
    workload: str = "stream"
    concurrency: int | None = None
    syscalls: bool = False  # one more transfer per row under strace, and a tiny one

    @property
    def transfer(self) -> Settings:
        """The settings of every timed transfer."""
        return Settings(self.size, self.connections, self.chunk_size, self.digest, self.concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "seed": self.seed,
            "repeat": self.repeat,
            "connections": self.connections,
            "chunk_size": self.chunk_size,
            "digest": self.digest,
            "matrix": self.matrix,
            "workload": self.workload,
            "concurrency": self.concurrency,
            "syscalls": self.syscalls,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompareSettings:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass(frozen=True)
class Run:
    """One timed transfer of a target, numbered in the order of the whole run, and the
    number of the baseline run just before it (None for the baseline's own runs, or when
    that baseline run failed)."""

    seq: int
    transfer: Transfer
    paired_with: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "paired_with": self.paired_with, **self.transfer.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        return cls(data["seq"], Transfer.from_json(data), data["paired_with"])


@dataclass
class Row:
    """One target's raw results: its verification, its timed runs, and what failed."""

    target: Target
    framework: str
    loc: int = 0
    modules: list[str] = field(default_factory=list)  # what ``loc`` counts
    verified: str | None = None  # "sha256", or "bytes" for the reference (it hashes nothing)
    verification: Transfer | None = None
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: With ``--syscalls``: the transfer run under strace, then the tiny one (1 byte, one
    #: connection) whose counts are start-up and shutdown, subtracted; or why there are none.
    traced: list[Transfer] = field(default_factory=list)
    traced_error: str | None = None

    @property
    def error(self) -> str | None:
        """Why this row has no figures, or None."""
        if self.errors:
            return self.errors[0]
        return None if self.runs else "no run finished"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.target.to_json(),
            "framework": self.framework,
            "loc": self.loc,
            "modules": self.modules,
            "verified": self.verified,
            "verification": self.verification.to_json() if self.verification else None,
            "runs": [run.to_json() for run in self.runs],
            "errors": self.errors,
            "traced": [transfer.to_json() for transfer in self.traced],
            "traced_error": self.traced_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        return cls(
            target=Target.from_json(data),
            framework=data["framework"],
            loc=data["loc"],
            modules=list(data["modules"]),
            verified=data["verified"],
            verification=Transfer.from_json(data["verification"]) if data["verification"] else None,
            runs=[Run.from_json(run) for run in data["runs"]],
            errors=list(data["errors"]),
            traced=[Transfer.from_json(t) for t in data.get("traced", [])],
            traced_error=data.get("traced_error"),
        )


@dataclass(frozen=True)
class Cell:
    """One client against one server, in ``--matrix``: verified with sha256, then timed."""

    client: str
    server: str
    verified: bool
    transfer: Transfer | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "server": self.server,
            "verified": self.verified,
            "transfer": self.transfer.to_json() if self.transfer else None,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        transfer = Transfer.from_json(data["transfer"]) if data["transfer"] else None
        return cls(data["client"], data["server"], data["verified"], transfer, data["error"])


@dataclass
class Report:
    """Everything a run measured, raw: what ``--save`` stores and ``nbio report`` reads."""

    machine: dict[str, str]
    settings: CompareSettings
    rows: list[Row] = field(default_factory=list)
    matrix: list[Cell] = field(default_factory=list)
    seconds: float = 0.0  # how long the whole run took

    def to_json(self, figures: Callable[[Report], list[dict[str, Any]]] | None = None) -> str:
        """The report as JSON; ``figures`` adds each row's reduced figures for readers (a
        saved report is always reduced again from its raw runs when rendered)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "machine": self.machine,
            "settings": self.settings.to_json(),
            "seconds": round(self.seconds, 1),
            "baseline": BASELINE,
            "rows": [row.to_json() for row in self.rows],
            "matrix": [cell.to_json() for cell in self.matrix],
        }
        if figures is not None:
            for row, reduced in zip(data["rows"], figures(self), strict=True):
                row["figures"] = reduced
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        if data.get("format") not in READABLE:
            raise ValueError(f"not an nbio report of format {FORMAT}")
        return cls(
            machine=data["machine"],
            settings=CompareSettings.from_json(data["settings"]),
            rows=[Row.from_json(row) for row in data["rows"]],
            matrix=[Cell.from_json(cell) for cell in data["matrix"]],
            seconds=data["seconds"],
        )


# --- what to run ------------------------------------------------------------------------


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
    return "plain sockets" if target.impl == REFERENCE else registry.get(target.impl).framework


def _modules(target: Target) -> list[str]:
    if target.impl == REFERENCE:
        return ["nbio.reference"]
    entry = registry.get(target.impl)
    return implementation_modules([entry.server, entry.client])


# --- running ----------------------------------------------------------------------------


def run(
    settings: CompareSettings,
    chosen: list[Target],
    advance: Advance = lambda steps: None,
    reference: bool = True,
    transfer: RunTransfer = run_transfer,
    tracer: RunTransfer | None = None,
) -> Report:
    """Verify, warm up and time every target in ``chosen`` (the baseline among them), and
    the reference if asked; return the raw report."""
    rng = random.Random(settings.seed)
    # The reference hashes nothing: it has no place in a run that times hashing.
    # Nor in one of many connections: it is the yardstick of one stream.
    reference = reference and settings.digest == "none" and settings.workload == "stream"
    everyone = list(chosen) + ([Target(REFERENCE)] if reference else [])
    rows = {t: Row(t, _framework(t), lines_of_code(_modules(t)), _modules(t)) for t in everyone}
    sequence = itertools.count()

    for target in _shuffled(everyone, rng):  # 1. verification
        _verify(rows[target], settings, transfer)
        advance(1)
    ready = [t for t in everyone if rows[t].verified]
    for target in _shuffled(ready, rng):  # 2. warm-up, discarded
        try:
            transfer(target, target, settings.transfer)
        except TransferFailed as exc:
            rows[target].errors.append(f"warm-up: {exc}")
        advance(1)

    baseline = Target(BASELINE)
    timed = [t for t in ready if not rows[t].errors]
    others = [t for t in timed if t != baseline]
    with_baseline = baseline in timed  # a failed baseline: the others run, without ratios
    for _ in range(settings.repeat):  # 3. rounds: the baseline, then a target, and again
        for target in _shuffled(others, rng):
            paired = None
            if with_baseline:
                paired = _time(rows[baseline], next(sequence), None, settings, transfer)
            _time(rows[target], next(sequence), paired, settings, transfer)
            advance(2)
        if not others and with_baseline:
            _time(rows[baseline], next(sequence), None, settings, transfer)
            advance(2)
    if settings.syscalls:  # 4. the counts, apart: strace slows every call it counts
        tracer = tracer or functools.partial(run_transfer, strace=True)
        for target in timed:
            _trace(rows[target], settings, tracer)
            advance(2)
    return Report(machine(), settings, [rows[t] for t in everyone])


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
    """How many transfers :func:`run` makes for ``count`` targets, the reference included
    (for progress bars)."""
    traced = 2 * count if settings.syscalls else 0
    return 2 * count + settings.repeat * 2 * max(1, count - 1) + traced


def _shuffled(items: Iterable[Target], rng: random.Random) -> list[Target]:
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled


def _verify(row: Row, settings: CompareSettings, transfer: RunTransfer) -> None:
    """One transfer with sha256 on both sides (the reference hashes nothing: it is checked
    by its byte counts); record what failed."""
    reference = row.target.impl == REFERENCE
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


def run_matrix(settings: CompareSettings, chosen: list[Target], advance: Advance) -> Report:
    """Every client against every server, on their default loops: each pair verified with
    sha256 on both sides, then timed once with the run's settings."""
    defaults = [t for t in chosen if t.loop == "default"]
    report = Report(machine(), settings)
    checked = replace(settings.transfer, digest="sha256")
    for client, server in itertools.product(defaults, defaults):
        try:
            run_transfer(server, client, checked)
            transfer = run_transfer(server, client, settings.transfer)
        except TransferFailed as exc:
            report.matrix.append(Cell(client.impl, server.impl, False, error=str(exc)))
        else:
            report.matrix.append(Cell(client.impl, server.impl, True, transfer))
        advance(1)
    return report


# --- what the figures were measured on, and the code they measure -----------------------


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
    import importlib.metadata  # here: a serve or send process never needs it

    versions = {}
    packages = {m for e in registry.ENTRIES for m in e.requires}
    packages |= {m for e in registry.ENTRIES for loop in e.loops for m in loop.requires}
    for package in sorted(packages):
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


def implementation_modules(start: list[str]) -> list[str]:
    """``start`` and every module of an implementation package (``*_impl``) they import,
    directly or not: the code a reader of that implementation reads."""
    found: list[str] = []
    todo = list(start)
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        found.append(name)
        with open(spec.origin, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        todo += [m for m in _imports(tree, package) if _is_implementation(m)]
    return found


def _imports(tree: ast.Module, package: str) -> list[str]:
    """Modules an AST imports, absolute names (``from x import y`` may name module x.y)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def _is_implementation(module: str) -> bool:
    """Whether ``module`` is a module (not a name inside one) of an implementation package."""
    if not any(part.endswith(_IMPL_SUFFIX) for part in module.split(".")):
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # "package.module.NAME": a name, not a module
        return False


def lines_of_code(modules: list[str]) -> int:
    """Lines of ``modules`` with code on them: not blank, not only a comment, not part of a
    docstring, read with :mod:`tokenize` (so a string or bracket spanning lines counts each
    line it covers)."""
    total = 0
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        with open(spec.origin, encoding="utf-8") as source:
            total += _code_lines(source.read())
    return total


_NOT_CODE = {
    token.COMMENT,
    token.NL,
    token.NEWLINE,
    token.INDENT,
    token.DEDENT,
    token.ENCODING,
    token.ENDMARKER,
}


def _code_lines(text: str) -> int:
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)
