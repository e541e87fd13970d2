"""The implementations mirror each other, read with ``ast``: the same modules, the same
sections, the same public functions in the same order with the same parameters. What a
framework forces otherwise (its own classes per connection, Twisted's reactor passed first,
a helper only it needs) is allowed, and a ``# No NAME`` comment names what a package lacks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(path.name for path in ROOT.glob("*_impl") if path.is_dir())
#: Modules every package has, and asyncio's second level, read as the same kind.
KINDS = {
    "server.py": "server",
    "client.py": "client",
    "loops.py": "loops",
    "ticker.py": "ticker",
    "protocol_server.py": "server",
    "protocol_client.py": "client",
}
#: After the connection section, these functions and no other, in this order.
SECTIONS = {
    "server": (
        ["connection", "server", "run"],
        ["start_listening", "serve_until_stopped", "serve", "main"],
    ),
    "client": (["connection", "client", "run"], ["send_all", "send", "main"]),
}
#: In loops.py, these names in this order (defined here or re-exported from asyncio's).
LOOPS = ["run", "loop_name", "Signals", "wait_or_signal", "wait_idle"]
#: A first parameter that is where the loop goes: the same position wherever there is one.
LOOP_LIKE = {"reactor", "loop", "io_loop", "hub", "nursery", "task_group", "lock"}
BANNER = re.compile(r"^# --- (\w+) -+$")


def _modules() -> list[tuple[str, Path]]:
    return [
        (pkg, ROOT / pkg / name)
        for pkg in PACKAGES
        for name in KINDS
        if (ROOT / pkg / name).exists()
    ]


def _public(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
    ]


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = [a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]]
    return names[1:] if names and names[0] in LOOP_LIKE else names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_the_same_modules(package: str) -> None:
    """server.py, client.py, loops.py and ticker.py in each implementation package."""
    for name in ("server.py", "client.py", "loops.py", "ticker.py", "__init__.py"):
        assert (ROOT / package / name).exists(), f"{package} has no {name}"


@pytest.mark.parametrize(("package", "path"), _modules(), ids=lambda v: getattr(v, "name", v))
def test_servers_and_clients_have_the_same_sections_and_functions(package: str, path: Path) -> None:
    """Banners ``# --- connection``, then server or client, then run; after the connection
    section the same public functions in the same order, with the same parameters (the
    reactor, passed first in Twisted, aside); every client has its send_one."""
    kind = KINDS[path.name]
    if kind not in SECTIONS:
        pytest.skip("not a server or client module")
    banners, functions = SECTIONS[kind]
    text = path.read_text()
    found = [m.group(1) for line in text.splitlines() if (m := BANNER.match(line))]
    assert found == banners, f"{path}: banners {found}"
    section_starts = [n for n, line in enumerate(text.splitlines(), 1) if BANNER.match(line)]
    tree = ast.parse(text)
    after = [
        node
        for node in _public(tree)
        if node.lineno > section_starts[1] and not isinstance(node, ast.ClassDef)
    ]
    assert [node.name for node in after] == functions, path
    reference = ast.parse((ROOT / "asyncio_impl" / path.name.replace("protocol_", "")).read_text())
    expected = {
        n.name: _parameters(n) for n in _public(reference) if not isinstance(n, ast.ClassDef)
    }
    for node in after:
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        assert _parameters(node) == expected[node.name], f"{path}: {node.name}"
    if kind == "client":
        assert "send_one" in {node.name for node in _public(tree)}, path


@pytest.mark.parametrize("package", PACKAGES)
def test_loops_expose_the_same_names_or_say_which_they_lack(package: str) -> None:
    """loops.py runs the loop, names it, delivers signals and waits; what a package lacks
    (threads have no loop to wait in) a ``# No NAME`` comment says, with why."""
    text = (ROOT / package / "loops.py").read_text()
    tree = ast.parse(text)
    defined = [node.name for node in _public(tree)]
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    lacking = {
        name
        for line in text.splitlines()
        if line.startswith("# No ")
        for name in re.findall(r"\b(\w+)\b", line)
        if name in LOOPS
    }
    for name in LOOPS:
        assert name in defined or name in imported or name in lacking, f"{package}: {name}"
    order = [name for name in defined if name in LOOPS]
    assert order == [name for name in LOOPS if name in order], f"{package}: {order}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_ticker_starts_the_same_way(package: str) -> None:
    """start_ticker(loop, delay, on_tick): the loop (or what stands for it) first."""
    tree = ast.parse((ROOT / package / "ticker.py").read_text())
    (start,) = [n for n in _public(tree) if n.name == "start_ticker"]
    assert isinstance(start, ast.FunctionDef)
    assert start.args.args[0].arg in LOOP_LIKE
    assert _parameters(start) == ["delay", "on_tick"]


def test_no_hand_written_sibling_lists_remain() -> None:
    """The mirror is checked here, not listed by hand in docstrings (which drifted)."""
    stale = [
        str(p) for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py") if "Siblings" in p.read_text()
    ]
    assert not stale


#: The deliberate copies: asyncio's Protocol level repeats these functions of its streams
#: level line for line, so that each module reads whole beside its sibling in another
#: framework (``start_listening`` and the connection section are the level's own).
COPIES = {
    ("server.py", "protocol_server.py"): ["serve_until_stopped", "serve", "main"],
    ("client.py", "protocol_client.py"): ["send_all", "send", "main"],
}


def _sources(path: Path, names: list[str]) -> dict[str, str]:
    text = path.read_text()
    tree = ast.parse(text)
    found = {
        node.name: ast.get_source_segment(text, node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names
    }
    main = text[text.index('\nif __name__ == "__main__":') :]
    found["__main__"] = main
    return found


@pytest.mark.parametrize(("original", "copy"), list(COPIES), ids=lambda name: name)
def test_the_protocol_level_copies_of_the_streams_level_have_not_drifted(
    original: str, copy: str
) -> None:
    """``asyncio_impl/protocol_server.py`` and ``protocol_client.py`` repeat the server,
    client and run sections of ``server.py`` and ``client.py``: the same source, but for the
    implementation's name (as httpcore checks its generated sync code). Change both."""
    names = COPIES[(original, copy)]
    ours = _sources(ROOT / "asyncio_impl" / original, names)
    theirs = _sources(ROOT / "asyncio_impl" / copy, names)
    assert set(ours) == set(theirs) == {*names, "__main__"}
    for name in ours:
        copied = theirs[name].replace('"asyncio-protocol"', '"asyncio-streams"')
        assert copied == ours[name], f"{copy} {name} drifted from {original}'s"
