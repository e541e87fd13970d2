"""The ``nbio`` command line: what it lists, and how it refuses bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from harness import Target, run_nbio
from nbio import registry
from nbio.bench import SIDES

BAD_INPUT = [
    (["send", "--size", "lots"], "not a size"),
    (["send", "--size", "-5"], "negative"),
    (["send", "--size", "12XB"], "unknown unit"),
    (["send", "--size", "0.5B"], "whole number of bytes"),
    (["send", "--size", "2PiB"], "unknown unit"),
    (["send", "--port", "65536"], "port must be 1 to 65535"),
    (["send", "--port", "-1"], "port must be a whole number"),
    (["send", "--port", "0"], "port must be 1 to 65535"),
    (["serve", "--port", "65536"], "port must be 0 to 65535"),
    (["serve", "--port", "http"], "port must be a whole number"),
    (["serve", "--port", "1_000"], "port must be a whole number"),
    (["send", "--size", "٣MiB"], "not a size"),
    (["send", "--connections", "１"], "connections must be a whole number"),
    (["serve", "--grace", "1_0"], "not a number of seconds"),
    (["serve", "--grace", "inf"], "not a number of seconds"),
    (["send", "--close-timeout", "0"], "seconds must be more than 0"),
    (["send", "--host", "no such host.invalid"], "cannot resolve host"),
    (["serve", "--host", ""], "host must not be empty"),
    (["send", "--impl", "no-such-impl"], "unknown implementation 'no-such-impl'"),
    (["serve", "--impl", "no-such-impl"], "unknown implementation 'no-such-impl'"),
    (["send", "--loop", "no-such-loop"], "has no loop 'no-such-loop'"),
    (["send", "--pattern", "lorem"], "invalid choice"),
    (["send", "--digest", "md5"], "invalid choice"),
    (["send", "--file", "/nonexistent/payload"], "cannot read"),
    (["send", "--file", "/"], "not a regular file: '/' is a directory"),
    (["send", "--file", "/dev/null"], "is a character device"),
    (["send", "--file", "/proc/cpuinfo"], "says it is empty but is not"),
    (["send", "--file", "/etc/hostname", "--size", "1MiB"], "not both"),
    (["send", "--connections", "0"], "connections must be 1 to"),
    (["send", "--chunk-size", "0"], "chunk size must be 1 to"),
    (["serve", "--grace", "soon"], "not a number of seconds"),
    (["frobnicate"], "invalid choice"),
    (["serve", "--idle-timeout", "0"], "seconds must be more than 0"),
    (["serve", "--max-connections", "0"], "max connections must be 1 to"),
    (["send", "--impl", "selectors", "--loop", "select", "--connections", "2000"], "at most 960"),
    (["compare", "--impls", "no-such-impl"], "unknown implementation no-such-impl"),
    (["compare", "--repeat", "0"], "repeat must be 1 to"),
    (
        ["serve", "--impl", "blocking", "--tune", "nbio.blocking_impl.server.READ_SIZE=0"],
        "1 or more",
    ),
    (["compare", "--variant", "blocking:nbio.nope.BAR=1"], "no such whole-number attribute"),
    (["compare", "--save", "/dev/full"], "cannot write '/dev/full': not a regular file"),
    (["compare", "--save", "/"], "cannot write '/': not a regular file"),
    (["compare", "--save", "/nonexistent/run.json"], "no folder there we can write in"),
    (["report", "/dev/zero"], "'/dev/zero' is not a regular file"),
    (["send", "--message-size", "10"], "--message-size needs --mode echo"),
    (["send", "--mode", "echo", "--size", "1MiB"], "not --size"),
    (["send", "--mode", "echo", "--rate", "0"], "not a number more than 0"),
    (["send", "--stall-timeout", "0"], "seconds must be more than 0"),
    (["serve", "--cert", "/etc/hostname"], "give --cert and --key together"),
    (["serve", "--cert", "/etc/hostname", "--key", "/etc/hostname"], "cannot use"),
    (["send", "--ca", "/etc/hostname"], "cannot use '/etc/hostname' as a CA"),
]


@pytest.mark.once
@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    """Bad input: exit status 2, one line on stderr naming the problem, no traceback."""
    done = run_nbio(*args)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_bad_loop_exits_2_for_each_implementation(target: Target) -> None:
    """Every implementation refuses a loop it does not have, naming the ones it has."""
    for command in ("serve", "send"):
        done = run_nbio(command, "--impl", target.impl, "--loop", "no-such-loop")
        assert done.returncode == 2
        assert f"{target.impl} has no loop 'no-such-loop' (use default" in done.stderr


@pytest.mark.once
def test_impls_json_lists_what_is_installed() -> None:
    """``nbio impls --json`` lists exactly the installed implementations, with their fields."""
    done = run_nbio("impls", "--json")
    assert done.returncode == 0
    listed = json.loads(done.stdout)
    assert [item["name"] for item in listed] == [e.name for e in registry.available()]
    for item in listed:
        assert set(item) == {"name", "framework", "variant", "loops", "note"}
        assert item["loops"][0] == "default"
        assert item["note"] == registry.get(item["name"]).note


@pytest.mark.once
def test_sending_with_asyncio_imports_no_other_framework(tmp_path: Path) -> None:
    """Asking for one implementation imports only that one's framework."""
    code = (
        "import sys\n"
        "from nbio import registry\n"
        "registry.load(registry.get('asyncio-streams'))\n"
        "print(sorted(m for m in ('twisted', 'tornado') if m in sys.modules))\n"
    )
    done = __import__("subprocess").run(
        # Elsewhere than the checkout, whose nbio/ folder would shadow the installed package.
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.once
def test_console_script_is_installed() -> None:
    """Installing the project puts an ``nbio`` command beside the interpreter."""
    script = shutil.which("nbio", path=str(Path(sys.executable).parent))
    assert script is not None
    assert run_nbio("--help").returncode == 0


def test_profile_writes_a_flame_graph_of_each_process(target: Target, tmp_path: Path) -> None:
    """nbio profile records both processes of one checked transfer with py-spy: two SVG
    flame graphs, and the client's shows the implementation's own send code."""
    if target.loop != "default":
        pytest.skip("one loop per implementation is enough to check the command")
    from nbio.profile import py_spy

    if py_spy() is None:
        pytest.skip("the profile extra (py-spy) is not installed")
    args = ["--impl", target.impl, "--size", "64MiB", "--out", str(tmp_path)]
    done = run_nbio("profile", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    svgs = {side: tmp_path / f"{target.impl}-default-stream-{side}.svg" for side in SIDES}
    for side, svg in svgs.items():
        assert f"{side}: {svg}" in done.stdout
        assert "<svg" in svg.read_text()[:2000]
    client = registry.get(target.impl).client.split(".")  # nbio.asyncio_impl.client
    assert f"{client[1]}/{client[2]}.py" in svgs["client"].read_text()


HOSTILE_REPORTS = {
    "a list": "[]",
    "null": "null",
    "deep": "[" * 100_000 + "]" * 100_000,
    "not JSON": "{nope",
}


@pytest.mark.once
@pytest.mark.parametrize("case", [*HOSTILE_REPORTS, "negative size", "a string size", "no rows"])
def test_a_report_that_is_not_one_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    """``nbio report`` on a file of the wrong shape or depth, or of impossible values (a
    negative size, a size that is a string, no rows): exit 2, one line, no traceback."""
    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "report.json"
    if case in HOSTILE_REPORTS:
        path.write_text(HOSTILE_REPORTS[case])
    else:
        data = json.loads((root / "docs/results/workloads-stream.json").read_text())
        if case == "no rows":
            data["rows"] = []
        else:
            data["settings"]["size"] = -5 if case == "negative size" else "big"
        path.write_text(json.dumps(data))
    done = run_nbio("report", str(path))
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
