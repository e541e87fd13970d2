"""When a reader or writer that never has to wait should let its loop run anyway.

On loopback the kernel can take, or hand over, every chunk at once for as long as a transfer
lasts, and a coroutine whose reads or writes complete at once never yields: the ticker, and
every other connection, starve. Each implementation therefore yields to its loop after a
burst: a MiB, or 256 calls, whichever comes first. Counting bytes alone is not enough: with
``--chunk-size 1`` a MiB is a million writes (the ticker was 18 s late, measured).
"""

from __future__ import annotations

__all__ = ["BURST_BYTES", "BURST_CALLS", "Burst"]

#: Most bytes moved without yielding to the loop.
BURST_BYTES = 1024 * 1024
#: Most reads or writes without yielding to the loop, however small.
BURST_CALLS = 256


class Burst:
    """Counts the calls since the last yield and says when to yield again."""

    __slots__ = ("_bytes", "_calls")

    def __init__(self) -> None:
        self._bytes = 0
        self._calls = 0

    def add(self, count: int) -> bool:
        """Count one call that moved ``count`` bytes; return True (and start over) when the
        caller should yield to its loop now."""
        self._bytes += count
        self._calls += 1
        if self._bytes >= BURST_BYTES or self._calls >= BURST_CALLS:
            self._bytes = self._calls = 0
            return True
        return False

    def reset(self) -> None:
        """The caller waited anyway (its loop ran): start counting again."""
        self._bytes = self._calls = 0
