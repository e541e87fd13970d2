"""What this process has cost so far: CPU seconds and peak resident memory."""

from __future__ import annotations

import resource
import sys

__all__ = ["cpu_seconds", "peak_rss_kib", "raise_fd_limit"]


def peak_rss_kib() -> int:
    """Peak resident set size of this process, in KiB.

    On Linux this is ``VmHWM`` from /proc/self/status: ``ru_maxrss`` also remembers the
    memory of the process we were forked from before exec, so a child of a large parent
    (a test runner) would report the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit; return the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def cpu_seconds() -> float:
    """User plus system CPU time of this process, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
