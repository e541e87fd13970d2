"""The comparison's plan and reduction, on made-up events: no processes, no sockets."""

from __future__ import annotations

from typing import Any

from common import compare
from common.bench import Transfer

GIB = 1024**3


def _transfer(mb_per_s: float, cpu: float = 0.5, p99: float = 1.0) -> Transfer:
    seconds = GIB / (mb_per_s * 1e6)
    delay: dict[str, Any] = {"p50": 0.1, "p99": p99, "max": p99 * 2}
    return Transfer(
        listening={"port": 1},
        sent={"bytes": GIB, "cpu_s": cpu, "peak_rss_kib": 20480, "loop_delay_ms": delay},
        received=[{"bytes": GIB, "seconds": seconds, "loop_delay_ms": delay}],
        stopped={"cpu_s": cpu * 2, "peak_rss_kib": 10240},
    )


def test_plan_runs_every_target_once_per_round_in_shuffled_order() -> None:
    """Each round holds every target once; rounds are shuffled so drift spreads out."""
    targets = [compare.Target(name) for name in "abcdef"]
    order = compare.plan(targets, repeat=4)
    rounds = [order[i : i + 6] for i in range(0, 24, 6)]
    assert all(sorted(r, key=lambda t: t.impl) == targets for r in rounds)
    assert len({tuple(t.impl for t in r) for r in rounds}) > 1


def test_summarize_takes_medians_spread_and_the_baseline_ratio() -> None:
    """Throughput is the median of the repeats with min and max; CPU is per GiB."""
    target = compare.Target("asyncio-streams")
    transfers = [_transfer(400), _transfer(500, cpu=1.0, p99=3.0), _transfer(450)]
    row = compare.summarize(target, transfers, [], baseline=900.0)
    assert row.mb_per_s is not None
    assert round(row.mb_per_s.median) == 450
    assert (round(row.mb_per_s.low), round(row.mb_per_s.high)) == (400, 500)
    assert row.ratio is not None and round(row.ratio, 2) == 0.5
    assert row.client_cpu_s_per_gib == 0.5 and row.server_cpu_s_per_gib == 1.0
    assert row.client_delay_ms["p99"] == 3.0  # the worst run's
    assert row.client_rss_mib == 20.0
    assert row.server_loc > 0 and row.client_loc > 0


def test_a_failed_repeat_makes_the_row_an_error_not_a_number() -> None:
    """A row where a run failed reports the error and no figures."""
    row = compare.summarize(compare.Target("blocking"), [_transfer(900)], ["sent 5, got 4"])
    assert row.error == "sent 5, got 4"
    assert row.mb_per_s is None
    assert "error: sent 5, got 4" in compare.cells(row)


def test_markdown_names_the_machine_and_has_every_column() -> None:
    """The Markdown starts with the machine and has one header cell per column."""
    report = compare.Report(
        machine={
            "cpu": "Test CPU",
            "cores": "2",
            "system": "Linux",
            "python": "3.11",
            "twisted": "x",
            "tornado": "y",
            "uvloop": "z",
        },
        settings={"size": "1.00 GiB", "connections": 1, "repeat": 3, "digest": "none"},
        rows=[compare.summarize(compare.Target("blocking"), [_transfer(900)], [], 900.0)],
    )
    markdown = compare.to_markdown(report)
    assert markdown.startswith("Measured on Test CPU, 2 cores")
    header = markdown.splitlines()[2]
    assert header.count("|") == len(compare.COLUMNS) + 1
    assert "| blocking | default | 900 (900–900) | 1.00 |" in markdown


def test_lines_of_code_skip_docstrings_comments_and_blank_lines() -> None:
    """The reading cost counts code lines only."""
    total = compare.lines_of_code("common.sizes")
    with open("common/sizes.py") as source:
        raw = len(source.read().splitlines())
    assert 0 < total < raw
