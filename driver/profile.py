"""``nbio profile``: a py-spy flame graph of the client and of the server doing the same
transfer, one SVG each, to see where each framework's time goes.

py-spy samples both processes' Python stacks (idle threads left out: a loop waiting in
``epoll_wait`` is not work) until they exit: the client from its start, the server from the
moment it listens. The transfer is checked like any other: every byte accounted for.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

from .bench import SIDES, run_wrapped
from .transfer import Settings, Target, Transfer, TransferFailed, checked

__all__ = ["RATE", "Profile", "py_spy", "record"]

#: Samples per second (py-spy's default is 100): a 256 MiB stream lasts a tenth of a second
#: on the fastest rows, so sample more often to see it.
RATE = 1000


@dataclass(frozen=True)
class Profile:
    """The transfer profiled, and the flame graph of each side."""

    transfer: Transfer
    svgs: dict[str, str]


def py_spy() -> str | None:
    """The py-spy executable: on the PATH, or beside this interpreter (a venv's bin)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def record(target: Target, settings: Settings, out: str, name: str) -> Profile:
    """Run one transfer of ``target`` to itself under py-spy; write ``out/NAME-SIDE.svg``."""
    spy = py_spy()
    if spy is None:
        raise TransferFailed("py-spy is not installed (pip install 'nbio[profile]')")
    svgs = {side: os.path.join(out, f"{name}-{side}.svg") for side in SIDES}
    spying = {
        side: [spy, "record", "--rate", str(RATE), "--format", "flamegraph", "-o", svg]
        for side, svg in svgs.items()
    }
    # The server is watched from when it listens: its imports and start-up are left out.
    # The client's are in its graph (py-spy starts it), a small share of a long transfer.
    wrappers = {"client": [*spying["client"], "--"]}
    transfer = run_wrapped(target, target, settings, wrappers, attach=spying["server"])
    return Profile(checked(transfer, settings), svgs)
