"""A signal before an implementation takes signals over is never lost."""

from __future__ import annotations

import signal

import pytest

from nbio import cli, registry


def test_a_signal_whose_exception_was_swallowed_still_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The early handler raises, but an exception raised inside an import's weakref
    callback is only printed ("Exception ignored", seen on 3.12): the signal it recorded
    stops the process once the implementation is loaded, before it serves."""
    monkeypatch.setattr(cli, "_arrived", [signal.SIGTERM])
    with pytest.raises(cli.Interrupted) as stopped:
        cli._implementation(registry.get("blocking"))
    assert stopped.value.args == (signal.SIGTERM,)


def test_no_signal_loads_the_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a signal, loading hands back the implementation."""
    monkeypatch.setattr(cli, "_arrived", [])
    assert cli._implementation(registry.get("blocking")) is not None
