"""One suite, every implementation: tests that take ``target`` run once per implementation
and loop (``test_x[asyncio-streams]``, ``test_x[asyncio-streams-uvloop]``), except the
loops that only swap the readiness call (``Loop.poller_only``: select or poll for epoll),
which only the tests marked ``readiness`` run; tests that take
``default_target`` once per implementation, on its default loop; tests that take
``client_target`` and ``server_target`` run once per pair. ``--impl NAME`` (repeatable)
narrows the set; an implementation that is not installed is skipped with the reason."""

from __future__ import annotations

import itertools

import pytest

from harness import Target, param_id
from nbio import registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--impl",
        action="append",
        default=[],
        help="run the shared suite for this implementation only (repeatable; default: all)",
    )


def _selected(config: pytest.Config) -> list[registry.Entry]:
    names = config.getoption("--impl")
    if not names:
        return list(registry.ENTRIES)
    try:
        return [registry.get(name) for name in names]
    except registry.UnknownImplementation as exc:
        raise pytest.UsageError(str(exc)) from None


def _param(targets: tuple[Target, ...]) -> object:
    """One test parameter: a target, or a (client, server) pair, skipped if not installed."""
    reasons = []
    for target in targets:
        entry = registry.get(target.impl)
        if entry.missing():
            reasons.append(f"{entry.name} needs {', '.join(entry.missing())}, not installed")
        elif entry.loop(target.loop).missing():
            reasons.append(
                f"loop {target.loop} needs {', '.join(entry.loop(target.loop).missing())}"
            )
    marks = [pytest.mark.skip(reason="; ".join(reasons))] if reasons else []
    return pytest.param(*targets, marks=marks, id="-to-".join(param_id(t) for t in targets))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    entries = _selected(metafunc.config)
    if "target" in metafunc.fixturenames:
        # A loop that only swaps select or poll for epoll runs the framework's own code
        # unchanged: it runs the tests of what the poller changes (readiness at scale,
        # hang-ups and errors, descriptor limits), and the others would repeat the default's.
        readiness = metafunc.definition.get_closest_marker("readiness") is not None
        targets = [
            Target(e.name, loop.name)
            for e in entries
            for loop in e.loops
            if readiness or not loop.poller_only
        ]
        metafunc.parametrize("target", [_param((t,)) for t in targets])
    if "default_target" in metafunc.fixturenames:  # each implementation on its default loop
        metafunc.parametrize("default_target", [_param((Target(e.name),)) for e in entries])
    if "client_target" in metafunc.fixturenames:
        # Every client against every server, on their default loops.
        defaults = [Target(e.name) for e in entries]
        pairs = list(itertools.product(defaults, defaults))
        metafunc.parametrize(("client_target", "server_target"), [_param(p) for p in pairs])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``once`` test nbio itself (its CLI, compare's report), whatever the
    implementation: they run where asyncio is selected, or nothing is, and are skipped in
    the other envs, which would only repeat them."""
    names = config.getoption("--impl")
    if not names or "asyncio-protocol" in names:
        return
    skip = pytest.mark.skip(reason="a test of nbio itself: runs once, with asyncio")
    for item in items:
        if item.get_closest_marker("once") is not None:
            item.add_marker(skip)
