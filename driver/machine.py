"""What the figures were measured on: the processor, its cores, the kernel, Python and
every framework's version, as a report's header names them."""

from __future__ import annotations

import os
import platform

from . import registry

__all__ = ["machine"]


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
