"""The comparison's plan and reduction, on made-up events: no processes, no sockets."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from nbio import bench, compare, figures, loc, record, report
from nbio.common.events import Listening, Received, Sent, Stopped
from nbio.common.loopdelay import DelayStats
from nbio.common.percentiles import Percentiles
from nbio.transfer import REFERENCE, Settings, Target, Transfer, TransferFailed
from nbio.workloads import CONNECTION, WORKLOADS
from nbio.workloads import GIB as PER_GIB

GIB = 1024**3
BLOCKING = Target("blocking")


def _events(size: int, mb_per_s: float, start: float = 10.0, ticks: int = 300) -> Transfer:
    """One transfer of ``size`` bytes at ``mb_per_s``, as both processes would report it."""
    seconds = size / (mb_per_s * 1e6)
    delay = DelayStats(ticks=ticks, p50_ms=0.1, p99_ms=1.0, max_ms=2.0)
    span = {
        "first_byte_at": start,
        "ended_at": start + seconds,
        "cpu_at_first_byte": 1.0,
        "cpu_at_end": 1.0 + seconds / 2,
        "waits_at_first_byte": 5,
        "waits_at_end": 15,
    }
    received = Received(
        peer="127.0.0.1:1", bytes=size, sha256=None, seconds=seconds, outcome="eof",
        loop_delay=delay, **span,
    )  # fmt: skip
    return Transfer(
        listening=Listening("x", "default", "127.0.0.1", 1, rss_kib=10240),
        sent=Sent(
            bytes=size,
            sha256=None,
            seconds=seconds,
            connections=1,
            cpu_s=seconds,
            waits=20,
            rss_kib=20480,
            peak_rss_kib=22528,
            loop_delay=replace(delay, early=1),
        ),
        received=[received],
        stopped=Stopped(
            connections=1,
            bytes=size,
            outcomes={"eof": 1},
            peak_rss_kib=11264,
            loop_delay=delay,
            **span,
        ),
    )


class FakeBench:
    """Stands in for real transfers: records each call, answers with made-up events."""

    def __init__(self, speeds: dict[str, float], failing: set[str] | None = None) -> None:
        self.speeds = speeds
        self.failing = failing or set()
        self.calls: list[tuple[str, str]] = []

    def __call__(self, server: Target, client: Target, settings: Settings) -> Transfer:
        assert server == client
        self.calls.append((server.impl, settings.digest))
        if server.impl in self.failing:
            raise TransferFailed("sent 5 bytes, server counted 4")
        return _events(settings.size, self.speeds[server.impl])


def _run(bench: FakeBench, seed: int = 1, repeat: int = 3) -> record.Report:
    settings = record.CompareSettings(size=GIB, seed=seed, repeat=repeat)
    chosen = [Target("asyncio-streams"), Target("twisted"), BLOCKING]
    return compare.run(settings, chosen, transfer=bench, kernel=False)


SPEEDS = {"asyncio-streams": 2000.0, "twisted": 1000.0, "blocking": 1000.0, REFERENCE: 4000.0}


def test_every_row_is_verified_then_timed_beside_the_baseline() -> None:
    """Verification (sha256; the reference hashes nothing) comes first for every row, and
    is its warm-up too; then rounds in which every run of a target directly follows a run
    of the baseline, and is paired with it. Rows whose ratios agree get two rounds."""
    bench = FakeBench(SPEEDS)
    measured = _run(bench)
    verify, timed = bench.calls[:4], bench.calls[4:]
    hashed = [("asyncio-streams", "sha256"), ("twisted", "sha256"), ("blocking", "sha256")]
    assert sorted(verify) == sorted([*hashed, (REFERENCE, "none")])
    assert all(digest == "none" for _, digest in timed)
    assert [impl for impl, _ in timed[::2]] == ["blocking"] * 6  # 2 rounds of 3 targets
    assert sorted(impl for impl, _ in timed[1::2]) == sorted(
        ["asyncio-streams", "twisted", REFERENCE] * 2
    )
    baseline = {run.seq for run in measured.rows[2].runs}
    for row in measured.rows:
        assert row.verified == ("bytes" if row.target.impl == REFERENCE else "sha256")
        if row.target != BLOCKING:
            assert [run.paired_with for run in row.runs] == [run.seq - 1 for run in row.runs]
            assert {run.paired_with for run in row.runs} <= baseline
    assert measured.settings.min_rounds == compare.MIN_ROUNDS == 2
    assert "up to 3 for rows whose ratios" in report.header(measured)


def test_only_rows_whose_ratios_disagree_get_more_rounds() -> None:
    """After two rounds, a row whose two ratios to the baseline differ by more than 10 %
    of their median runs again (up to --repeat); rows that agree do not, and the header
    names the rows that got more."""
    swing = itertools.cycle([1000.0, 1500.0])

    def swinging(server: Target, client: Target, settings: Settings) -> Transfer:
        speed = next(swing) if server.impl == "twisted" else SPEEDS[server.impl]
        return _events(settings.size, speed)

    settings = record.CompareSettings(size=GIB, seed=5, repeat=4)
    chosen = [Target("asyncio-streams"), Target("twisted"), BLOCKING]
    measured = compare.run(settings, chosen, transfer=swinging, reference=False)
    runs = {row.target.impl: len(row.runs) for row in measured.rows}
    assert runs["asyncio-streams"] == 2
    assert runs["twisted"] == 4
    assert "(twisted 4)" in report.header(measured)


def test_the_seed_repeats_the_order_and_a_new_seed_changes_it() -> None:
    """--seed N gives the same order again; another seed, another order."""
    orders = []
    for seed in (7, 7, 8):
        bench = FakeBench(SPEEDS)
        _run(bench, seed=seed, repeat=4)
        orders.append(bench.calls)
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]


def test_a_row_that_fails_verification_is_an_error_and_never_timed() -> None:
    """A target whose verification fails gets no timed run and no figures."""
    bench = FakeBench(SPEEDS, failing={"twisted"})
    measured = _run(bench)
    assert bench.calls.count(("twisted", "sha256")) == 1
    assert ("twisted", "none") not in bench.calls
    (row,) = [r for r in figures.reduce(measured) if r.target.impl == "twisted"]
    assert row.error is not None and row.error.startswith("verification: ")
    assert row.primary is None and row.ratio is None
    assert "error: verification" in report.cells(row)[2]


def test_a_failed_baseline_means_no_ratios() -> None:
    """Without a baseline that ran, no row has a ratio to it, but each has its figures."""
    measured = _run(FakeBench(SPEEDS, failing={"blocking"}))
    rows = {r.target.impl: r for r in figures.reduce(measured)}
    assert rows["blocking"].error is not None
    assert rows["asyncio-streams"].primary is not None
    assert all(r.ratio is None for r in rows.values())


def test_ratios_are_medians_of_neighbouring_pairs() -> None:
    """Each run's throughput over its own baseline run: a drift that slows both cancels."""
    drift = itertools.count()

    def drifting(server: Target, client: Target, settings: Settings) -> Transfer:
        slower = 1 + next(drift) / 10  # the machine gets slower and slower
        return _events(settings.size, SPEEDS[server.impl] / slower)

    settings = record.CompareSettings(size=GIB, seed=3, repeat=3)
    measured = compare.run(
        settings, [Target("asyncio-streams"), BLOCKING], transfer=drifting, kernel=False
    )
    rows = {r.target.impl: r for r in figures.reduce(measured)}
    ratio = rows["asyncio-streams"].ratio
    assert ratio is not None
    assert 1.8 < ratio.low <= ratio.median <= ratio.high < 2.0  # about 2, whatever the drift
    assert rows["blocking"].ratio == figures.Spread(1.0, 1.0, 1.0)


def test_a_report_stored_before_stopped_spanned_connections_reads_with_its_span() -> None:
    """Two 1 GB connections served one after the other (0–1 s, then 1–2 s) move 2 GB in
    2 s: 1000 MB/s, not the 2000 MB/s that bytes over the longest connection would say. A
    report stored when ``stopped`` did not yet span every connection (the reference's, or
    format 2) reads back with that span taken from its ``received`` events."""
    first, second = _events(10**9, 1000.0, start=0.0), _events(10**9, 1000.0, start=1.0)
    data = Transfer(first.listening, first.sent, first.received + second.received).to_json()
    data["stopped"] = {"event": "stopped", "connections": 2, "bytes": 2 * 10**9}
    both = Transfer.from_json(data)
    assert both.server_bytes == 2 * 10**9
    assert both.server_seconds == pytest.approx(2.0)
    assert both.server_mb_per_s == pytest.approx(1000.0)
    assert both.server_cpu_s == pytest.approx(0.5)  # the server's CPU over that same span
    assert both.server_delay.ticks == 300


def test_reduction_gives_medians_spreads_cpu_and_memory_growth() -> None:
    """Throughput is the median of the runs with its min and max; CPU is per GiB over the
    transfer's span; growth is peak RSS over the process's own baseline."""
    measured = _run(FakeBench(SPEEDS))
    row = next(r for r in figures.reduce(measured) if r.target.impl == "asyncio-streams")
    assert row.primary is not None and row.primary.median == pytest.approx(2000.0)
    assert row.ratio is not None and row.ratio.median == pytest.approx(2.0)
    seconds = GIB / 2000e6
    assert row.client_cpu_s_per_unit is not None
    assert row.client_cpu_s_per_unit.median == pytest.approx(seconds)
    assert (row.client_rss_mib, row.client_growth_mib) == (22.0, 2.0)
    assert (row.server_rss_mib, row.server_growth_mib) == (11.0, 1.0)
    assert row.client_delay == figures.Delay(ticks=300, early=2, p50=0.1, p99=1.0, max=2.0)


def test_few_ticks_show_the_max_alone_and_none_say_so() -> None:
    """Below 100 ticks a cell shows the max only; a process that never ticked, 'no ticks'."""
    few = figures.Delay.of([DelayStats(ticks=25, p50_ms=0.1, p99_ms=None, max_ms=2.0)])
    assert few.text() == "max 2.0 (25)"
    none = figures.Delay.of([DelayStats(ticks=0)])
    assert none.text() == "no ticks"


def test_markdown_names_each_statistic_and_the_seed() -> None:
    """The Markdown says what was run (seed included) and each column names its statistic."""
    measured = _run(FakeBench(SPEEDS), seed=42)
    markdown = report.to_markdown(measured)
    assert "seed 42" in markdown and "`--seed 42`" in markdown
    header = markdown.splitlines()[2]
    assert header.count("|") == len(WORKLOADS["stream"].headers()) + 1
    assert "median (min–max)" in header and "median of pairs" in header
    assert "| asyncio-streams | default | 2000 (2000–2000) | 2.00 (2.00–2.00) |" in markdown


def test_a_saved_report_renders_the_same() -> None:
    """A report read back from its JSON reduces and renders exactly as when measured."""
    measured = _run(FakeBench(SPEEDS))
    stored = record.Report.from_json(measured.to_json(figures.figures))
    assert report.to_markdown(stored) == report.to_markdown(measured)


def test_lines_of_code_follow_what_an_implementation_imports() -> None:
    """A reader of the selectors implementation reads its loop, its loops and its ticker
    too; asyncio's protocol level reads asyncio's loops and ticker, not the streams code;
    Tornado's reads asyncio's loops, on which its own are built."""
    selectors = loc.implementation_modules(
        ["nbio.selectors_impl.server", "nbio.selectors_impl.client"]
    )
    assert set(selectors) >= {
        "nbio.selectors_impl.server",
        "nbio.selectors_impl.client",
        "nbio.selectors_impl.mainloop",
        "nbio.selectors_impl.loops",
        "nbio.selectors_impl.ticker",
    }
    assert not any(m.startswith("nbio.common") for m in selectors)
    protocol = loc.implementation_modules(
        ["nbio.asyncio_impl.protocol_server", "nbio.asyncio_impl.protocol_client"]
    )
    assert {"nbio.asyncio_impl.loops", "nbio.asyncio_impl.ticker"} <= set(protocol)
    assert "nbio.asyncio_impl.server" not in protocol
    tornado = loc.implementation_modules(["nbio.tornado_impl.server", "nbio.tornado_impl.client"])
    assert "nbio.asyncio_impl.loops" in tornado
    assert loc.lines_of_code(selectors) > loc.lines_of_code(selectors[:2])


def test_code_lines_skip_docstrings_comments_and_blank_lines() -> None:
    """Only lines with code count; a string spanning lines that is not a docstring counts."""
    text = '''"""Module docstring,
on two lines."""

# a comment
def f() -> str:
    """Docstring."""
    return """not a
docstring"""  # a comment after code
'''
    assert loc._code_lines(text) == 3


def _churn(connections: int, seconds: float, latency_p50: float) -> Transfer:
    """A churn transfer: ``connections`` of 4 KiB over ``seconds`` as the server saw them."""
    size = 4096 * connections
    delay = DelayStats(ticks=5, p50_ms=0.1, max_ms=2.0)
    return Transfer(
        listening=Listening("x", "default", "127.0.0.1", 1, rss_kib=10240),
        sent=Sent(
            bytes=size,
            sha256=None,
            seconds=seconds,
            connections=connections,
            cpu_s=0.5,
            waits=4 * connections,
            rss_kib=20480,
            peak_rss_kib=22528,
            loop_delay=delay,
            latency=Percentiles(connections, latency_p50, 2 * latency_p50, 3 * latency_p50),
        ),
        received=[],
        stopped=Stopped(
            connections=connections,
            bytes=size,
            peak_rss_kib=10240 + connections,
            first_byte_at=10.0,
            ended_at=10.0 + seconds,
            cpu_at_first_byte=1.0,
            cpu_at_end=1.0 + seconds / 2,
            waits_at_first_byte=0,
            waits_at_end=2 * connections,
            loop_delay=delay,
        ),
    )


def test_churn_and_many_reduce_to_their_own_figures() -> None:
    """churn: connections per second over the server's span (the ratio is of that), client
    latency medians, CPU and waits per connection; many: server KiB per connection."""
    settings = record.CompareSettings(size=4096, seed=1, repeat=1, connections=1000)
    rows = [
        record.Row(BLOCKING, "sockets", runs=[record.Run(0, _churn(1000, 1.0, 10.0))]),
        record.Row(
            Target("asyncio-streams"),
            "asyncio",
            runs=[record.Run(1, _churn(1000, 0.25, 4.0), paired_with=0)],
        ),
    ]
    churn = figures.reduce(record.Report({}, replace(settings, workload="churn"), rows))
    fast = churn[1]
    assert fast.primary is not None and fast.primary.median == 4000.0
    assert fast.ratio is not None and fast.ratio.median == 4.0
    assert (fast.latency_p50_ms, fast.latency_p99_ms) == (4.0, 8.0)
    assert fast.server_cpu_s_per_unit is not None
    assert fast.server_cpu_s_per_unit.median == pytest.approx(0.125 / 1000)
    assert fast.client_waits_per_unit == 4 and fast.server_waits_per_unit == 2
    many = figures.reduce(record.Report({}, replace(settings, workload="many"), rows))
    assert many[1].server_kib_per_connection == 1.0
    assert len(WORKLOADS["churn"].headers()) == len(report.cells(fast, "churn"))


STRACE_C = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 77.77    0.055523         694        80        40 epoll_wait
  3.48    0.002488           1      1728           sendto
------ ----------- ----------- --------- --------- ----------------
100.00    0.071394          10      6880      1396 total
"""


def test_strace_counts_are_read_with_and_without_errors() -> None:
    """The calls column of ``strace -c``, whether or not the errors column is filled."""
    assert bench.syscall_counts(STRACE_C) == {"epoll_wait": 80, "sendto": 1728}


def test_syscalls_are_per_gib_minus_the_tiny_transfer() -> None:
    """A row's sends per GiB subtract the 1-byte transfer's calls (start-up, shutdown)."""
    full = replace(_events(GIB, 1000.0), syscalls={"client": {"sendto": 4100, "write": 5},
                   "server": {"recvfrom": 8200, "epoll_wait": 3}})  # fmt: skip
    tiny = replace(_events(1, 1000.0), syscalls={"client": {"sendto": 4, "write": 5},
                   "server": {"recvfrom": 8, "epoll_wait": 3}})  # fmt: skip
    row = record.Row(BLOCKING, "sockets", traced=[full, tiny])
    calls = figures.Syscalls.of(row, PER_GIB)
    assert calls is not None
    assert calls.client_sends == pytest.approx(4096, rel=1e-6)
    assert calls.server_receives == pytest.approx(8192, rel=1e-6)
    assert calls.server_waits == 0
    missing = figures.Syscalls.of(
        record.Row(BLOCKING, "s", traced_error="strace not installed"), CONNECTION
    )
    assert missing == figures.Syscalls("connection", error="strace not installed")


def test_the_kernels_tools_are_not_traced_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """--syscalls subtracts a 1-byte transfer, which iperf3 and sockperf cannot make (they
    time whole runs): their rows say so in one line, and are never run under strace."""
    monkeypatch.setattr(compare, "strace_missing", lambda: None)

    def tracer(*args: object) -> Transfer:
        raise AssertionError("traced")

    for name in (bench.IPERF, bench.SOCKPERF):
        row = record.Row(Target(name), "the kernel's")
        compare._trace(row, Settings(GIB), tracer)
        assert row.traced_error == f"not counted: {name} cannot make the 1-byte transfer subtracted"
        assert row.traced == []


def test_without_iperf3_the_report_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where iperf3 is not installed, a time-based stream run has no row of it, and its
    header says why; where it is, the row runs in the same rounds as every other; a run of
    a --size has none (iperf3's count stops with its clock), and says so."""
    monkeypatch.setattr(compare.iperf, "missing", lambda: "iperf3 not installed")
    settings = record.CompareSettings(size=GIB, seed=1, repeat=2, duration=1.0)
    measured = compare.run(settings, [BLOCKING], transfer=FakeBench(SPEEDS))
    assert {row.target.impl for row in measured.rows} == {"blocking", REFERENCE}
    assert "Note: iperf3 not installed: no row of the kernel's own figure." in report.header(
        measured
    )
    monkeypatch.setattr(compare.iperf, "missing", lambda: None)
    measured = compare.run(settings, [BLOCKING], transfer=FakeBench(SPEEDS | {"iperf3": 9e3}))
    (row,) = [row for row in measured.rows if row.target.impl == "iperf3"]
    assert row.verified == "bytes" and len(row.runs) == 2 and row.loc == 0
    assert report.cells(figures.reduce(measured)[-1])[-1] == "-"
    sized = compare.run(replace(settings, duration=None), [BLOCKING], transfer=FakeBench(SPEEDS))
    assert "iperf3" not in {row.target.impl for row in sized.rows}
    assert any("time-based runs" in note for note in sized.notes)


def test_only_orders_that_hold_in_every_report_are_ranked() -> None:
    """Two machines: asyncio-streams is 2× blocking on both, twisted 1.5× on one and 0.5×
    on the other. Across them asyncio-streams is ahead of both on each; twisted is ahead of
    nothing, though one machine alone would have put it ahead of blocking."""
    one = _run(FakeBench({**SPEEDS, "twisted": 1500.0}))
    other = _run(FakeBench({**SPEEDS, "twisted": 500.0}))
    agreed = report.agreement([("one", one), ("other", other)])
    ahead = {row[0]: row[2] for row in agreed.rows}
    assert ahead["asyncio-streams"] == "twisted, blocking"
    assert ahead["twisted"] == "-"
    alone = {row[0]: row[2] for row in report.agreement([("one", one)]).rows}
    assert alone["twisted"] == "blocking"  # what one machine alone would have said
    shown = report.side_by_side_markdown([("one", one), ("other", other)])
    assert "What ranks the same on every machine" in shown


def test_side_by_side_shows_cpu_in_each_workloads_unit_and_what_travels() -> None:
    """Set side by side, each machine's group has the first figure, its ratio, both sides'
    CPU in the unit the workload's own table uses (churn's per connection in milliseconds:
    in seconds it read 0.00), the workload's figures that may travel (many's KiB per
    connection), and no column of system calls where none were counted."""
    one = _run(FakeBench(SPEEDS))
    table = report.side_by_side([("one", one), ("other", one)])
    assert table.headers == (
        "impl", "loop", "one (Python " + one.machine.python + "): MB/s", "× blocking",
        "CPU s/GiB c/s", "other (Python " + one.machine.python + "): MB/s", "× blocking",
        "CPU s/GiB c/s",
    )  # fmt: skip
    row = replace(
        figures.reduce(one)[0],
        client_cpu_s_per_unit=figures.Spread(0.000125, 0.0001, 0.0002),
        server_cpu_s_per_unit=figures.Spread(0.0005, 0.0004, 0.0006),
        server_kib_per_connection=2.3,
    )
    churn, many = WORKLOADS["churn"], WORKLOADS["many"]
    assert churn.cpu().header == "CPU ms per connection c/s"
    assert churn.cpu().cell(row) == "0.125/0.500"
    assert [(c.header, c.cell(row)) for c in many.beside] == [("server KiB per connection", "2.3")]


def test_a_tls_runs_header_says_what_every_handshake_agreed() -> None:
    """Over TLS the header names the version and cipher the timed runs' own events say
    their handshakes agreed (one line when all agree), not what the settings asked for."""
    plain = _run(FakeBench(SPEEDS))
    tls = replace(plain, settings=replace(plain.settings, tls=True))
    assert "over TLS (no run said what it negotiated)" in report.header(tls)
    assert "over TLS" not in report.header(plain)
    for row in tls.rows:
        row.runs = [
            replace(run, transfer=replace(run.transfer, sent=replace(
                run.transfer.sent, tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384"
            )))
            for run in row.runs
        ]  # fmt: skip
    said = "over TLS (every timed run negotiated TLSv1.3 with TLS_AES_256_GCM_SHA384)"
    assert said in report.header(tls)


def test_a_server_with_the_neutral_client_is_labelled_so() -> None:
    """An echo run has each server twice, with its own client and with the reference's:
    the two rows must not read alike (they once both read ``asyncio-streams | default``)."""
    row = figures.reduce(_run(FakeBench(SPEEDS)))[0]
    own = report.cells(row)
    other = report.cells(replace(row, target=replace(row.target, client=REFERENCE)))
    assert own[:2] == ["asyncio-streams", "default"]
    assert other[:2] == ["asyncio-streams", "default, reference client"]


def test_an_echo_runs_header_says_what_each_request_is() -> None:
    """An echo run writes requests, not --chunk-size chunks: its header says their size,
    closed or open loop, and for echo-under-load the bulk echo beside them."""
    plain = _run(FakeBench(SPEEDS))
    echo = replace(plain, settings=replace(plain.settings, workload="echo", message_size=1024))
    assert "requests of 1KiB, closed loop," in report.header(echo)
    assert "per write" not in report.header(echo)
    paced = replace(echo, settings=replace(echo.settings, rate=100.0))
    assert "requests of 1KiB, open loop at 100 a second each," in report.header(paced)
    loaded = replace(echo, settings=replace(echo.settings, workload="echo-under-load"))
    assert "beside a bulk echo of 256KiB messages on another connection" in report.header(loaded)
