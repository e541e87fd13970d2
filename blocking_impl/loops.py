"""Running without a loop: threads block in their sockets, and the main thread ticks and
watches for signals (Python runs signal handlers in the main thread only)."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["Signals", "describe"]


def describe() -> str:
    """What runs: no loop, a thread per connection."""
    return "threads"


class Signals:
    """SIGINT and SIGTERM, noted as they arrive; the main thread looks at each tick."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.arrived.append(signum)

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
