"""SIGINT and SIGTERM from the moment nbio's code runs until an implementation takes them
over: each ends the command cleanly, with one line and exit 130 or 143, during a
framework's imports included.

The handler raises :class:`Interrupted`. An exception raised inside a weakref callback of
the import system (an import's module-lock callback, seen in CI on 3.12) is handed to
``sys.unraisablehook`` and lost: the process would carry on, listen, and never stop. So the
handler also records the signal, a swallowed one is delivered again a moment later (to our
handler, or to the implementation's if it took signals over meanwhile), and loading an
implementation stops at once if a signal arrived while it was imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from . import registry
from .common.interface import Implementation

__all__ = ["Interrupted", "forget", "install", "load"]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (its number is ``args[0]``) arrived before the implementation took
    signals over. A KeyboardInterrupt, so that asyncio lets it through its callbacks."""


#: Signals :func:`_interrupt` saw, in case the exception it raised was swallowed.
_arrived: list[int] = []
#: The re-delivery of a swallowed signal, pending (see :func:`_unraisable`).
_again: list[threading.Timer] = []


def _interrupt(signum: int, frame: object) -> None:
    _arrived.append(signum)
    raise Interrupted(signum)


def _unraisable(unraisable: Any) -> None:
    """Our Interrupted, swallowed where exceptions cannot propagate: say nothing, and
    deliver the signal again in a moment. Anything else goes to Python's own hook."""
    if isinstance(unraisable.exc_value, Interrupted):
        signum = unraisable.exc_value.args[0]
        timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
        timer.daemon = True
        _again.append(timer)
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def install() -> None:
    """From now until an implementation takes them over, SIGINT and SIGTERM raise
    :class:`Interrupted`."""
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, _interrupt)
    sys.unraisablehook = _unraisable


def forget() -> None:
    """We are stopping because of the signal: no re-delivery."""
    for timer in _again:
        timer.cancel()


def load(entry: registry.Entry) -> Implementation:
    """Import ``entry``'s modules; a signal that arrived meanwhile stops us now, even if
    the exception it raised was swallowed on the way."""
    loaded = registry.load(entry)
    if _arrived:
        forget()
        raise Interrupted(_arrived[0])
    return loaded
