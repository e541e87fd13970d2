"""What the figures were measured on, as a report's header names it: the processor, its
cores, the kernel and its active CPU mitigations, whether it is virtualized, its clock
source, the CPU time stolen by a hypervisor over the run, Python and every framework's
version.

Machines of the same kind differ: on two 2-core AMD EPYC virtual machines with the same
packages, whose kernels differed in one mitigation (``spec_rstack_overflow: Mitigation:
Safe RET``), per-call work cost three times more on one (``../shared/evidence/``). So a
report records what can make two machines disagree, and ``nbio report A.json B.json``
says where they differ.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import registry

__all__ = ["Machine", "Stolen", "differences", "machine"]

_VULNERABILITIES = "/sys/devices/system/cpu/vulnerabilities"
_CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


@dataclass(frozen=True)
class Machine:
    """A machine, as a stored report keeps it. ``None``: not recorded (a report stored
    before nbio recorded it) or not readable here."""

    cpu: str
    cores: str
    python: str
    system: str
    packages: dict[str, str] = field(default_factory=dict)
    #: Each entry of the kernel's vulnerabilities that is not "Not affected".
    mitigations: dict[str, str] | None = None
    virtualization: str | None = None
    clocksource: str | None = None
    #: CPU time the hypervisor gave to others over the run, in % of all CPU time.
    steal_percent: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "cores": self.cores,
            "python": self.python,
            "system": self.system,
            "virtualization": self.virtualization,
            "clocksource": self.clocksource,
            "mitigations": self.mitigations,
            "steal_percent": self.steal_percent,
            "packages": self.packages,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Machine:
        """Reads every format: before format 4 the packages stood beside the machine's
        fields, and nothing else was recorded."""
        known = {"cpu", "cores", "python", "system", "virtualization", "clocksource"}
        known |= {"mitigations", "steal_percent", "packages"}
        packages = dict(data.get("packages") or {})
        packages |= {k: str(v) for k, v in data.items() if k not in known}
        return cls(
            cpu=str(data.get("cpu", "?")),
            cores=str(data.get("cores", "?")),
            python=str(data.get("python", "?")),
            system=str(data.get("system", "?")),
            packages=packages,
            mitigations=data.get("mitigations"),
            virtualization=data.get("virtualization"),
            clocksource=data.get("clocksource"),
            steal_percent=data.get("steal_percent"),
        )

    def summary(self) -> str:
        """One clause for a header: ``AMD EPYC, 2 cores, Linux 6.18.44-fc-v657 (VM: kvm;
        clock tsc; CPU vulnerabilities: retbleed vulnerable, spectre_v2 mitigated; steal
        0.1 % of CPU time over the run), Python 3.11.7``."""
        details = []
        if self.virtualization is not None:
            details.append(self.virtualization)
        if self.clocksource is not None:
            details.append(f"clock {self.clocksource}")
        if self.mitigations is not None:
            states = [f"{name} {_state(value)}" for name, value in sorted(self.mitigations.items())]
            details.append(f"CPU vulnerabilities: {', '.join(states) or 'none affected'}")
        if self.steal_percent is not None:
            details.append(f"steal {self.steal_percent:.1f} % of CPU time over the run")
        said = "; ".join(d for d in details if d) or "mitigations and steal not recorded"
        return f"{self.cpu}, {self.cores} cores, {self.system} ({said}), Python {self.python}"


def _state(text: str) -> str:
    """ "Mitigation: Safe RET" is mitigated, "Vulnerable" vulnerable, as the kernel says."""
    return "mitigated" if text.startswith("Mitigation") else text.split(":")[0].lower()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError:
        return None


def _cpu() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def mitigations() -> dict[str, str] | None:
    """Each CPU vulnerability the kernel reports that is not "Not affected": what it
    does about it ("Mitigation: Safe RET", "Vulnerable"). None off Linux."""
    try:
        names = sorted(os.listdir(_VULNERABILITIES))
    except OSError:
        return None
    found = {}
    for name in names:
        state = _read(os.path.join(_VULNERABILITIES, name))
        if state is not None and state != "Not affected":
            found[name] = state
    return found


def virtualization() -> str | None:
    """What runs this machine: systemd-detect-virt's answer (a VM and a container may
    both be true: each is said), else whether the CPU says it runs under a hypervisor."""
    said = []
    detect = shutil.which("systemd-detect-virt")
    if detect is not None:
        for kind in ("--vm", "--container"):
            done = subprocess.run([detect, kind], capture_output=True, text=True, check=False)
            answer = done.stdout.strip()
            if answer and answer != "none":
                said.append(f"{'VM' if kind == '--vm' else 'container'}: {answer}")
    flags = next(
        (line for line in (_read("/proc/cpuinfo") or "").splitlines() if line.startswith("flags")),
        "",
    )
    if not any(s.startswith("VM") for s in said):
        said.append("VM: a hypervisor (cpu flag)" if " hypervisor" in flags else "no VM seen")
    return ", ".join(said)


def machine(steal_percent: float | None = None) -> Machine:
    """This machine, with the steal measured over the run (see :class:`Stolen`)."""
    import importlib.metadata  # here: a serve or send process never needs it

    versions = {}
    packages = {m for e in registry.ENTRIES for m in e.requires}
    packages |= {m for e in registry.ENTRIES for loop in e.loops for m in loop.requires}
    for package in sorted(packages):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return Machine(
        cpu=_cpu(),
        cores=str(os.cpu_count()),
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
        packages=versions,
        mitigations=mitigations(),
        virtualization=virtualization(),
        clocksource=_read(_CLOCKSOURCE),
        steal_percent=steal_percent,
    )


class Stolen:
    """The CPU time a hypervisor gave to other guests while a run went on: the ``steal``
    column of ``/proc/stat``'s ``cpu`` line, as a share of all CPU time, between this
    object's creation and :meth:`percent`."""

    def __init__(self) -> None:
        self._start = _cpu_times()

    def percent(self) -> float | None:
        """Stolen time since the start, in % of all CPU time; None if it cannot be read."""
        end = _cpu_times()
        if self._start is None or end is None:
            return None
        steal, total = end[0] - self._start[0], end[1] - self._start[1]
        return round(100 * steal / total, 2) if total > 0 else 0.0


def _cpu_times() -> tuple[int, int] | None:
    """``/proc/stat``'s steal and total jiffies (user, nice, system, idle, iowait, irq,
    softirq, steal; guest time is already in user)."""
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("cpu "):
            fields = [int(value) for value in line.split()[1:9]]
            return fields[7], sum(fields)
    return None


def _who(labels: list[str]) -> str:
    return (
        ", ".join(f"`{label}`" for label in labels)
        if len(labels) <= 3
        else f"{len(labels)} reports"
    )


def differences(machines: list[tuple[str, Machine]]) -> list[str]:
    """What differs between the machines of several reports, one line per field: the
    processor, the kernel, its CPU vulnerabilities, virtualization, clock, Python, a
    package's version (a package one run did not install is no difference: its rows are
    not there). Each value names the reports that have it, or how many when more than 3."""
    lines = []

    def compare(name: str, values: list[str]) -> None:
        if len(set(values)) < 2:
            return
        have: dict[str, list[str]] = {}
        for (label, _), value in zip(machines, values, strict=True):
            have.setdefault(value, []).append(label)
        each = [f"{value} ({_who(labels)})" for value, labels in have.items()]
        lines.append(f"{name}: {'; '.join(each)}")

    def text(value: object) -> str:
        return "not recorded" if value is None else str(value)

    for name in ("cpu", "cores", "system", "virtualization", "clocksource", "python"):
        compare(name, [text(getattr(m, name)) for _, m in machines])
    recorded = [m.mitigations for _, m in machines]
    names = sorted({n for found in recorded if found for n in found})
    for name in names:
        compare(
            f"CPU vulnerability {name}",
            [
                text(None if found is None else found.get(name, "Not affected"))
                for found in recorded
            ],
        )
    packages = sorted({p for _, m in machines for p in m.packages})
    for package in packages:
        versions = [m.packages.get(package, "not installed") for _, m in machines]
        if "not installed" not in versions:
            compare(package, versions)
    return lines
