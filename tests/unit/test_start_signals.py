"""A signal before an implementation takes signals over is never lost."""

from __future__ import annotations

import signal
import threading
import time
from types import SimpleNamespace

import pytest

from nbio import interrupts, registry


def test_a_signal_whose_exception_was_swallowed_still_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The early handler raises, but an exception raised inside an import's weakref
    callback is only printed ("Exception ignored", seen on 3.12): the signal it recorded
    stops the process once the implementation is loaded, before it serves."""
    monkeypatch.setattr(interrupts, "_arrived", [signal.SIGTERM])
    with pytest.raises(interrupts.Interrupted) as stopped:
        interrupts.load(registry.get("blocking"))
    assert stopped.value.args == (signal.SIGTERM,)


def test_no_signal_loads_the_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a signal, loading hands back the implementation."""
    monkeypatch.setattr(interrupts, "_arrived", [])
    assert interrupts.load(registry.get("blocking")) is not None


def test_a_swallowed_signal_is_delivered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python hands an exception raised where it cannot propagate to sys.unraisablehook:
    for our Interrupted, the hook prints nothing and sends the signal again, to whoever
    handles it by then (here SIGUSR1, to a handler of the test's own)."""
    arrived = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: arrived.set())
    monkeypatch.setattr(interrupts, "_again", [])
    try:
        interrupts._unraisable(SimpleNamespace(exc_value=interrupts.Interrupted(signal.SIGUSR1)))
        deadline = time.monotonic() + 10
        while not arrived.is_set() and time.monotonic() < deadline:
            signal.sigtimedwait([], 0.01)  # lets the main thread run the Python handler
        assert arrived.is_set()
    finally:
        signal.signal(signal.SIGUSR1, previous)
