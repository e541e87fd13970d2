"""The workloads of ``nbio compare --workload NAME``: what every run of a row sends.

A module of its own, light enough for the command line to import for ``--help``: the
machinery that runs them is :mod:`nbio.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .common.payload import DEFAULT_CHUNK_SIZE

__all__ = ["MIB", "WORKLOADS", "Workload"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    """What one kind of run sends, on the same sink and client protocol as every other."""

    name: str
    size: int  # bytes per connection
    connections: int = 1
    concurrency: int | None = None  # at most this many connections at once; None: all
    chunk_size: int = DEFAULT_CHUNK_SIZE
    what: str = ""  # one line for people


#: ``nbio compare --workload NAME``: what separates frameworks beyond one big stream.
WORKLOADS = {
    w.name: w
    for w in (
        Workload("stream", 256 * MIB, what="one connection, a big payload: the kernel's copies"),
        Workload(
            "many",
            1 * MIB,
            connections=1000,
            what="1000 connections at once, 1 MiB each: what an open connection costs",
        ),
        Workload(
            "churn",
            4 * 1024,
            connections=10_000,
            concurrency=50,
            what="10,000 connections of 4 KiB, 50 at a time: what a connection's life costs",
        ),
        Workload(
            "small-writes",
            16 * MIB,
            chunk_size=512,
            what="one connection, 512-byte writes: what each call costs",
        ),
    )
}
