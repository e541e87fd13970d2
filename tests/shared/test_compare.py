"""``nbio compare`` end to end on a tiny payload: every row, every byte, every format."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from harness import Target, run_nbio
from nbio import registry

ROW_FIELDS = {
    "impl",
    "loop",
    "tune",
    "framework",
    "loc",
    "modules",
    "verified",
    "verification",
    "runs",
    "errors",
    "figures",
    "traced",
    "traced_error",
}
RUN_FIELDS = {"seq", "paired_with", "listening", "sent", "received", "received_count", "stopped"}


def _impls(config: pytest.Config) -> list[str]:
    names = config.getoption("--impl") or [e.name for e in registry.ENTRIES]
    return [n for n in names if not registry.get(n).missing()]


def test_compare_reports_a_row_per_implementation_and_loop(
    request: pytest.FixtureRequest,
) -> None:
    """Every installed implementation on every loop (``--loops all``) gets a row, plus the
    blocking baseline, the reference and, where it is installed, iperf3 (else a note says
    it is not); every row accounts for every byte (an unaccounted one would be an error)."""
    impls = _impls(request.config)
    done = run_nbio(
        "compare",
        "--size",
        "2MiB",
        "--repeat",
        "1",
        "--impls",
        ",".join(impls),
        "--loops",
        "all",
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
    yardsticks = {"reference"}  # and iperf3 in a time-based run, not one of a --size
    assert {(row["impl"], row["loop"]) for row in report["rows"]} == expected | {
        (name, "default") for name in yardsticks
    }
    why = "iperf3 times whole seconds" if shutil.which("iperf3") else "iperf3 not installed"
    assert any(why in note for note in report["notes"]), report["notes"]
    for row in report["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["errors"] == [], row["errors"]
        assert row["verified"] == ("bytes" if row["impl"] in yardsticks else "sha256")
        others = len(expected) - 1 + len(yardsticks)
        assert len(row["runs"]) == (others if row["impl"] == "blocking" else 1)
        assert all(set(run) == RUN_FIELDS | ({"tool"} if row["impl"] == "iperf3" else set())
                   for run in row["runs"])  # fmt: skip
        figures = row["figures"]
        assert figures["mb_per_s"]["median"] > 0
        assert (row["loc"] > 0 and row["modules"]) or row["impl"] == "iperf3"
        check = row["verification"]  # always hashed on both sides (the reference hashes nothing)
        assert check["received"][0]["sha256"] == check["sent"]["sha256"]
        for run in row["runs"]:  # the timed runs: the defaults, said by the processes
            (received,) = run["received"]
            assert received["sha256"] is None and run["sent"]["sha256"] is None
            assert run["sent"]["chunk_size"] == 256 * 1024 and run["sent"]["chunks"] == 8
            if row["impl"] not in yardsticks:
                assert run["listening"]["digest"] == run["sent"]["digest"] == "none"
    figures = {row["impl"] + "/" + row["loop"]: row["figures"] for row in report["rows"]}
    assert figures["blocking/default"]["ratio"]["median"] == 1.0
    assert all(f["ratio"] is not None for f in figures.values())
    machine = report["machine"]
    assert {"cpu", "cores", "python", "mitigations", "steal_percent"} <= set(machine)
    assert {"twisted", "tornado", "uvloop"} <= set(machine["packages"])
    assert report["settings"]["size"] == 2 * 1024 * 1024
    assert isinstance(report["settings"]["seed"], int)


def test_settings_given_to_compare_reach_every_run(request: pytest.FixtureRequest) -> None:
    """With --digest sha256 --chunk-size 64KiB, every timed run of every row hashes on both
    sides, with equal digests, and hands its framework one chunk per 64 KiB: the processes'
    own events say so (a digest dropped on the way once made every figure hashlib's). With
    --syscalls, every row has non-zero sends and receives per GiB from strace, and the
    counts of both processes are kept (without strace, each row says so)."""
    done = run_nbio(
        "compare",
        "--size",
        "8MiB",
        "--repeat",
        "1",
        "--impls",
        ",".join(_impls(request.config)),
        "--digest",
        "sha256",
        "--chunk-size",
        "64KiB",
        "--syscalls",
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["rows"]
    assert rows and "reference" not in {row["impl"] for row in rows}  # it hashes nothing
    assert report["settings"]["syscalls"] is True
    for row in rows:
        for run in row["runs"]:
            assert run["listening"]["digest"] == run["sent"]["digest"] == "sha256"
            assert run["sent"]["chunk_size"] == 64 * 1024 and run["sent"]["chunks"] == 128
            (received,) = run["received"]
            assert received["sha256"] == run["sent"]["sha256"] is not None
        # --syscalls: sends and receives per GiB from strace, or the reason there are none.
        calls = row["figures"]["syscalls"]
        if shutil.which("strace") is None:
            assert calls["error"] == "strace not installed"
            continue
        assert calls["error"] is None and calls["per"] == "GiB", row["impl"]
        # 8 MiB: a process's own reads beside the socket's (trio's wake-up pipe, a signal)
        # vary by a few between runs, which 1 MiB's 16 receives did not outweigh (seen: -4).
        assert calls["client_sends"] > 0 and calls["server_receives"] > 0, (row["impl"], calls)
        full, tiny = row["traced"]
        assert full["sent"]["bytes"] == 8 * 1024 * 1024 and tiny["sent"]["bytes"] == 1
        assert set(full["syscalls"]) == {"client", "server"}


@pytest.mark.once
def test_compare_saves_a_report_that_renders_the_same(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """--save stores the raw report; nbio report renders it exactly as compare printed it,
    or several side by side, and a file that is not a report is refused with one line."""
    saved = tmp_path / "run.json"
    args = ["--size", "64KiB", "--repeat", "1", "--impls", "asyncio-protocol", "--loops", "default"]
    done = run_nbio("compare", *args, "--markdown", "--save", str(saved), timeout=300)
    assert done.returncode == 0, done.stderr
    rendered = run_nbio("report", str(saved), "--markdown")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == done.stdout
    both = run_nbio("report", str(saved), str(saved), "--markdown")  # side by side
    assert both.returncode == 0, both.stderr
    assert both.stdout.count(f"`{saved}`: Workload `stream`") == 2
    assert "| asyncio-protocol | default |" in both.stdout
    (tmp_path / "bad.json").write_text("{}")
    refused = run_nbio("report", str(tmp_path / "bad.json"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1


@pytest.mark.once
def test_compare_writes_table_markdown_and_plot(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
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
    assert "asyncio-protocol" in table.stdout and "MB/s median (min–max)" in table.stdout
    markdown = run_nbio(*args, "--markdown", timeout=300)
    assert markdown.stdout.startswith("Workload `stream`. Measured on ")
    assert "| asyncio-protocol | default |" in markdown.stdout
    assert "| blocking | default |" in markdown.stdout
    assert "| reference | default |" in markdown.stdout
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("the plot extra (matplotlib) is not installed")
    chart = tmp_path / "compare.png"
    plotted = run_nbio(*args, "--plot", str(chart), timeout=300)
    assert plotted.returncode == 0, plotted.stderr
    assert chart.read_bytes().startswith(b"\x89PNG")


@pytest.mark.once
def test_compare_matrix_runs_every_client_against_every_server(
    request: pytest.FixtureRequest,
) -> None:
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
    assert all(c["verified"] and c["transfer"]["received"][0]["bytes"] == 65536 for c in cells)


#: Each workload on a small size, and the figures its rows must have.
WORKLOAD_RUNS = {
    "many": (
        ["--size", "64KiB", "--connections", "200"],
        ["primary", "mb_per_s", "server_kib_per_connection"],
    ),
    "churn": (
        ["--size", "4KiB", "--connections", "300"],
        ["primary", "latency_p50_ms", "latency_p99_ms", "server_cpu_s_per_unit"],
    ),
    "small-writes": (["--size", "256KiB"], ["primary", "client_cpu_s_per_unit"]),
}


@pytest.mark.parametrize("workload", sorted(WORKLOAD_RUNS))
def test_each_workload_gives_its_figures_for_every_row(
    request: pytest.FixtureRequest, workload: str
) -> None:
    """--workload many, churn and small-writes each give every implementation a verified
    row with that workload's own figures (the ratio of its primary one); its settings reach
    the processes (churn's 50 at a time, small-writes' 512-byte writes), and the server
    accounts for every connection."""
    args, expected = WORKLOAD_RUNS[workload]
    impls = _impls(request.config)
    done = run_nbio(
        "compare", "--workload", workload, *args, "--repeat", "1", "--impls", ",".join(impls),
        "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    settings = report["settings"]
    assert settings["workload"] == workload
    rows = report["rows"]
    assert {row["impl"] for row in rows} == set(impls) | {"blocking"}  # no reference: one stream
    for row in rows:
        assert row["errors"] == [] and row["verified"] == "sha256", row["errors"]
        for name in ["ratio", *expected]:
            assert row["figures"][name] is not None, (row["impl"], name)
        for run in row["runs"]:
            sent, stopped = run["sent"], run["stopped"]
            assert sent["connections"] == stopped["connections"] == settings["connections"]
            assert sent["concurrency"] == settings["concurrency"]
            assert sent["chunk_size"] == settings["chunk_size"]
            if workload == "churn":
                assert settings["concurrency"] == 50
                assert sent["latency_count"] == settings["connections"]
            if workload == "small-writes":
                assert sent["chunk_size"] == 512 and sent["chunks"] == 512


#: Each echo workload, short, on its own caps (a default once asked a client for 2**30
#: requests, beyond what --requests takes), and the figures its rows must have.
ECHO_RUNS = {
    "echo": (["--message-size", "1KiB", "--connections", "2"], ["latency_p99_ms"]),
    "echo-under-load": ([], ["idle_p99_ms", "beside_mb_per_s"]),
}


@pytest.mark.once  # compare's own settings and checks: each echo client is test_echo's
@pytest.mark.parametrize("workload", sorted(ECHO_RUNS))
def test_each_echo_workload_gives_its_figures_for_every_row(
    request: pytest.FixtureRequest, workload: str
) -> None:
    """--workload echo (one cell of the grid, two connections for a short --duration) and
    echo-under-load: every implementation's row, and every server's with the neutral
    client, is verified (sha256 over a fixed amount: connections of a duration each send
    what they had time for) and has the workload's figures; every client says it sent the
    message size asked."""
    args, expected = ECHO_RUNS[workload]
    impls = _impls(request.config)
    done = run_nbio(
        "compare", "--workload", workload, *args, "--duration", "0.3", "--repeat", "1",
        "--impls", ",".join(impls), "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["rows"]
    servers = set(impls) | {"blocking"}
    assert {row["impl"] for row in rows} >= servers
    neutral = [row for row in rows if row["impl"] in servers and row["verified"] == "bytes"]
    assert {row["impl"] for row in neutral} == servers  # each server with the neutral client
    for row in rows:
        assert row["errors"] == [], (row["impl"], row["errors"])
        for name in ["primary", "ratio", *expected]:
            assert row["figures"][name] is not None, (row["impl"], name)
        for run in row["runs"]:
            assert run["sent"]["message_size"] == report["settings"]["message_size"]
            assert run["sent"]["duration"] == 0.3


@pytest.mark.once
def test_a_one_connection_echo_has_sockperf_beside_the_rows() -> None:
    """An echo cell of one connection has sockperf's ping-pong as a row where it is
    installed, its server stopped like any other's (it once waited forever for a sockperf
    that had inherited its blocked SIGTERM); where it is not, a note says so."""
    done = run_nbio(
        "compare", "--workload", "echo", "--message-size", "1KiB", "--connections", "1",
        "--duration", "1", "--repeat", "1", "--impls", "blocking", "--json", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["impl"]: row for row in report["rows"]}
    if shutil.which("sockperf") is None:
        assert any("sockperf not installed" in note for note in report["notes"])
        return
    row = rows["sockperf"]
    assert row["errors"] == [] and row["figures"]["latency_p99_ms"] is not None, row["errors"]
    (run,) = row["runs"]
    assert run["sent"]["message_size"] == 1024 and run["stopped"] is not None


def test_a_transfer_over_a_link_runs_at_its_rate(default_target: Target) -> None:
    """``--link``: server and client each in a network namespace of its own, joined by a
    veth pair shaped to 1 Gbit/s: a checked transfer of 32 MiB arrives whole, at about the
    link's payload rate (at most 15 % over the ceiling: tbf's bucket starts full), far
    below what loopback gives. Needs root (CI runs as root)."""
    from nbio import bench, link
    from nbio.transfer import Settings

    missing = link.missing_privileges()
    if missing is not None:
        pytest.skip(missing)
    with link.Link(link.parse_rate("1gbit")) as net:
        where = bench.Placement(net.server_host, tuple(net.server_prefix), tuple(net.client_prefix))
        done = bench.run_transfer(
            default_target, default_target, Settings(32 * 1024 * 1024), placement=where
        )
        ceiling = net.payload_ceiling / 1e6
    assert done.listening.host == net.server_host
    assert 0.2 * ceiling < done.server_mb_per_s < 1.15 * ceiling, (done.server_mb_per_s, ceiling)


@pytest.mark.once
def test_a_time_based_stream_has_iperf3_beside_the_rows() -> None:
    """A stream of ``--duration``: each row sends for that long (its processes say so),
    and where iperf3 is installed it is a row of the same rounds, its ``-J`` output kept
    whole in each run; where it is not, a note says so."""
    done = run_nbio(
        "compare", "--impls", "blocking", "--duration", "0.5", "--repeat", "1", "--json",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["impl"]: row for row in report["rows"]}
    for run in rows["blocking"]["runs"]:
        assert run["sent"]["duration"] == 0.5 and 0.4 < run["sent"]["seconds"] < 5
    if shutil.which("iperf3") is None:
        assert any("iperf3 not installed" in note for note in report["notes"])
        return
    (run,) = rows["iperf3"]["runs"]
    assert run["tool"]["end"]["sum_received"]["bytes"] == run["sent"]["bytes"] > 0
    assert rows["iperf3"]["figures"]["mb_per_s"]["median"] > 0
