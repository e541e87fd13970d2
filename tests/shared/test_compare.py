"""``nbio compare`` end to end on a tiny payload: every row, every byte, every format."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from harness import run_nbio

from common import registry

ROW_FIELDS = {
    "impl",
    "loop",
    "framework",
    "runs",
    "mb_per_s",
    "ratio",
    "client_cpu_s_per_gib",
    "server_cpu_s_per_gib",
    "client_rss_mib",
    "server_rss_mib",
    "client_delay_ms",
    "server_delay_ms",
    "server_loc",
    "client_loc",
    "error",
}


def _impls(config: pytest.Config) -> list[str]:
    names = config.getoption("--impl") or [e.name for e in registry.ENTRIES]
    return [n for n in names if not registry.get(n).missing()]


def test_compare_reports_a_row_per_implementation_and_loop(
    request: pytest.FixtureRequest,
) -> None:
    """Every installed implementation and loop asked for gets a row, plus the blocking
    baseline; every row accounts for every byte (an unaccounted one would be an error)."""
    impls = _impls(request.config)
    done = run_nbio(
        "compare",
        "--size",
        "2MiB",
        "--repeat",
        "1",
        "--impls",
        ",".join(impls),
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = {
        (entry.name, loop)
        for entry in registry.available()
        if entry.name in impls or entry.name == "blocking"
        for loop in entry.available_loops()
    }
    assert {(row["impl"], row["loop"]) for row in report["rows"]} == expected
    for row in report["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["error"] is None, row
        assert row["mb_per_s"]["median"] > 0
        assert set(row["client_delay_ms"]) == set(row["server_delay_ms"]) == {"p50", "p99", "max"}
        assert row["server_loc"] > 0 and row["client_loc"] > 0
    baseline = [row for row in report["rows"] if row["impl"] == "blocking"]
    assert baseline[0]["ratio"] == 1.0
    assert set(report["machine"]) >= {"cpu", "cores", "python", "twisted", "tornado", "uvloop"}
    assert report["settings"]["bytes"] == 2 * 1024 * 1024


def test_compare_writes_table_markdown_and_plot(tmp_path: Path) -> None:
    """The terminal table, the Markdown and the chart are written, naming the machine."""
    args = [
        "compare",
        "--size",
        "64KiB",
        "--repeat",
        "1",
        "--impls",
        "asyncio-protocol",
        "--loops",
        "default",
    ]
    table = run_nbio(*args, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "asyncio-protocol" in table.stdout and "MB/s (server)" in table.stdout
    markdown = run_nbio(*args, "--markdown", timeout=300)
    assert markdown.stdout.startswith("Measured on ")
    assert "| asyncio-protocol | default |" in markdown.stdout
    assert "| blocking | default |" in markdown.stdout
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("the plot extra (matplotlib) is not installed")
    chart = tmp_path / "compare.png"
    plotted = run_nbio(*args, "--plot", str(chart), timeout=300)
    assert plotted.returncode == 0, plotted.stderr
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_compare_matrix_runs_every_client_against_every_server() -> None:
    """--matrix reports pass or fail and throughput for each client and server pair."""
    done = run_nbio(
        "compare",
        "--size",
        "64KiB",
        "--matrix",
        "--impls",
        "asyncio-streams",
        "--json",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)["matrix"]
    pairs = {(c["client"], c["server"]) for c in cells}
    assert pairs == {
        (a, b) for a in ("asyncio-streams", "blocking") for b in ("asyncio-streams", "blocking")
    }
    assert all(c["ok"] and c["mb_per_s"] > 0 for c in cells)
