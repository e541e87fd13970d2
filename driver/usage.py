"""What this process has cost so far: CPU seconds and peak resident memory."""

from __future__ import annotations

import resource
import sys

__all__ = ["cpu_seconds", "peak_rss_kib", "raise_fd_limit", "rss_kib"]


def peak_rss_kib() -> int:
    """Peak resident set size of this process, in KiB.

    On Linux this is ``VmHWM`` from /proc/self/status: ``ru_maxrss`` also remembers the
    memory of the process we were forked from before exec, so a child of a large parent
    (a test runner) would report the parent's size."""
    peak = _status("VmHWM:")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (``VmRSS``; 0 where there is no /proc):
    the baseline that memory growth is measured from."""
    return _status("VmRSS:") or 0


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


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
