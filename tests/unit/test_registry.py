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


def test_only_loops_that_swap_the_poller_are_left_to_the_readiness_tests() -> None:
    """Only the suite's readiness tests run on poller_only loops: the default loop never is
    one (so every implementation runs the whole suite), and the loops whose code differs from
    the default's (uvloop, Twisted's asyncio reactor, gevent's libuv, Eventlet's asyncio hub,
    anyio's backends) never are."""
    differ = {"uvloop", "asyncio", "libuv", "trio"}
    for entry in registry.ENTRIES:
        assert not entry.loops[0].poller_only, entry.name
        for loop in entry.loops:
            if loop.name in differ:
                assert not loop.poller_only, (entry.name, loop.name)
            if loop.poller_only:
                assert loop.name in ("select", "poll", "epoll"), (entry.name, loop.name)


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
