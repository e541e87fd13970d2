"""The registry: lookups by name, loops, and loading through the interface."""

from __future__ import annotations

import pytest

from nbio import registry
from nbio.common.interface import Implementation


def test_every_entry_has_a_default_loop_and_unique_name() -> None:
    """Names are unique; every implementation runs on its 'default' loop first."""
    names = [entry.name for entry in registry.ENTRIES]
    assert len(names) == len(set(names))
    for entry in registry.ENTRIES:
        assert entry.loops[0].name == "default"


def test_unknown_names_list_the_known_ones() -> None:
    """Asking for a name that does not exist says which do."""
    with pytest.raises(registry.UnknownImplementation, match="asyncio-streams"):
        registry.get("no-such-impl")


def test_loaded_entries_satisfy_the_interface() -> None:
    """Each installed implementation loads as an Implementation."""
    for entry in registry.available():
        implementation = registry.load(entry)
        assert isinstance(implementation, Implementation)
        assert implementation.name == entry.name
