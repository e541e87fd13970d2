"""The raw report of ``nbio compare``: what it was asked (:class:`CompareSettings`), each
row's verification, timed runs and failures (:class:`Row`, :class:`Run`), the
``--matrix`` cells (:class:`Cell`), and the machine, all as JSON. It keeps every timed
run's raw events: ``--save`` stores it, ``nbio report`` reads it back and
:mod:`nbio.figures` reduces it, so a published table is always the rendering of a stored
raw report.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .common.options import MAX_REQUESTS, Echo
from .common.payload import DEFAULT_CHUNK_SIZE
from .machine import Machine
from .transfer import Settings, Target, Transfer
from .workloads import BESIDE_LEAD, WORKLOADS

__all__ = ["BASELINE", "FORMAT", "READABLE", "Cell", "CompareSettings", "Report", "Row", "Run"]

#: The row every other row's ratio is to.
BASELINE = "blocking"
#: The version of the saved report's layout: 4 records the machine's mitigations,
#: virtualization, clock and steal, ``--duration``, ``--link`` and the rounds' rule.
FORMAT = 4
#: Formats :meth:`Report.from_json` reads: format 3 is format 4 without those; format 2 is
#: format 3's ``stream`` workload, before workloads, ``--syscalls`` and ``received_count``.
READABLE = (2, 3, FORMAT)


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
    #: Each connection sent for this long (``size`` capping it); None: ``size`` bytes each.
    duration: float | None = None
    #: ``--link RATE`` as given (``1gbit``) and in bits/s: each server and client ran in a
    #: network namespace of its own, joined by a veth pair shaped to that rate.
    link: str | None = None
    link_bits: int | None = None
    #: Rounds every row got before only those whose ratios disagreed got more (format 4);
    #: None: every row got ``repeat`` rounds, after a warm-up run (formats 2 and 3).
    min_rounds: int | None = None
    #: Echo workloads: each request's bytes, and the rate of an open loop (None: closed).
    message_size: int | None = None
    rate: float | None = None
    #: Every connection spoke TLS 1.3 through its framework's own layer.
    tls: bool = False

    @property
    def transfer(self) -> Settings:
        """The settings of every timed transfer (the TLS files are the run's own, given
        by :func:`nbio.compare.run`)."""
        echo = None
        beside = None
        workload = WORKLOADS[self.workload]
        if self.message_size is not None:
            # A run of a duration is capped far above what it can send, but within what a
            # client takes (1 TiB of 1 KiB requests would be 2**30 of them).
            requests = min(MAX_REQUESTS, max(1, self.size // self.message_size))
            echo = Echo(self.message_size, requests, self.rate)
        if workload.bulk is not None and self.duration is not None:
            bulk = workload.bulk
            beside = Settings(
                bulk * max(1, self.size // bulk),
                digest=self.digest,
                duration=self.duration + 2 * BESIDE_LEAD,
                echo=Echo(bulk, min(MAX_REQUESTS, max(1, self.size // bulk))),
            )
        return Settings(
            self.size,
            self.connections,
            self.chunk_size,
            self.digest,
            self.concurrency,
            self.duration,
            echo=echo,
            beside=beside,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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

    machine: Machine
    settings: CompareSettings
    rows: list[Row] = field(default_factory=list)
    matrix: list[Cell] = field(default_factory=list)
    seconds: float = 0.0  # how long the whole run took
    #: What the run could not do here, and says so ("iperf3 not installed ...").
    notes: list[str] = field(default_factory=list)

    def to_json(self, figures: Callable[[Report], list[dict[str, Any]]] | None = None) -> str:
        """The report as JSON; ``figures`` adds each row's reduced figures for readers (a
        saved report is always reduced again from its raw runs when rendered)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "machine": self.machine.to_json(),
            "settings": self.settings.to_json(),
            "seconds": round(self.seconds, 1),
            "baseline": BASELINE,
            "rows": [row.to_json() for row in self.rows],
            "matrix": [cell.to_json() for cell in self.matrix],
            "notes": self.notes,
        }
        if figures is not None:
            for row, reduced in zip(data["rows"], figures(self), strict=True):
                row["figures"] = reduced
        return json.dumps(data, indent=1)

    def problems(self) -> list[str]:
        """Values no run can have (a report edited by hand, or not one at all)."""
        s = self.settings
        found = []
        for name in ("size", "seed", "repeat", "connections", "chunk_size"):
            value = getattr(s, name)
            if not isinstance(value, int) or isinstance(value, bool):
                found.append(f"settings.{name} is not a whole number: {value!r}")
            elif value < (0 if name == "seed" else 1):
                found.append(f"settings.{name} is {value}")
        if s.duration is not None and not (isinstance(s.duration, int | float) and s.duration > 0):
            found.append(f"settings.duration is {s.duration!r}")
        if not self.rows and not self.matrix:
            found.append("no rows")
        return found

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get("format") not in READABLE:
            raise ValueError(f"not an nbio report of format {FORMAT}")
        return cls(
            machine=Machine.from_json(data["machine"]),
            settings=CompareSettings.from_json(data["settings"]),
            rows=[Row.from_json(row) for row in data["rows"]],
            matrix=[Cell.from_json(cell) for cell in data["matrix"]],
            seconds=data["seconds"],
            notes=list(data.get("notes", [])),
        )
