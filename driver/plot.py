"""Bar charts of an ``nbio compare`` report: throughput, CPU per GiB, peak RSS, loop delay.
Needs matplotlib (``pip install 'nbio[plot]'``); imported only when a chart is asked for.
A row that failed keeps its place, marked "error", so no failure disappears from a chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common.sizes import human_size
from .figures import Delay, Figures, Spread, reduce
from .record import Report
from .workloads import WORKLOADS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot"]


def plot(report: Report, path: str) -> None:
    """Write the report's rows as a PNG of four bar charts to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    rows = reduce(report)
    labels = [_label(row) for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(max(10, len(rows) * 1.1), 9), layout="constrained")
    positions = list(range(len(rows)))
    width = 0.4

    def mark_errors(ax: Axes) -> None:
        for position, row in zip(positions, rows, strict=True):
            if row.error is not None:
                ax.text(position, 0, "error", rotation=90, ha="center", va="bottom", color="red")

    def pair(ax: Axes, client: list[float], server: list[float], title: str) -> None:
        ax.bar([p - width / 2 for p in positions], client, width, label="client")
        ax.bar([p + width / 2 for p in positions], server, width, label="server")
        ax.set_title(title)
        ax.legend()

    throughput = axes[0][0]
    # The workload's first figure, the one its ratio is of.
    workload = WORKLOADS[report.settings.workload]
    spreads: list[Spread | None] = [row.primary for row in rows]
    medians = [_median(spread) for spread in spreads]
    errors = [
        [m - (sp.low if sp else 0) for m, sp in zip(medians, spreads, strict=True)],
        [(sp.high if sp else 0) - m for m, sp in zip(medians, spreads, strict=True)],
    ]
    throughput.bar(positions, medians, yerr=errors, color="tab:green", capsize=3)
    throughput.set_title(workload.chart_title)
    pair(
        axes[0][1],
        [_median(r.client_cpu_s_per_unit) for r in rows],
        [_median(r.server_cpu_s_per_unit) for r in rows],
        f"CPU seconds per {workload.per.name} (median)",
    )
    pair(
        axes[1][0],
        [r.client_rss_mib or 0 for r in rows],
        [r.server_rss_mib or 0 for r in rows],
        "peak RSS (MiB, median)",
    )
    pair(
        axes[1][1],
        [_worst(r.client_delay) for r in rows],
        [_worst(r.server_delay) for r in rows],
        "loop delay (ms, median of runs: p99, or max below 100 ticks)",
    )
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
        mark_errors(ax)
    m, s = report.machine, report.settings
    figure.suptitle(
        f"nbio compare --workload {s.workload}: {human_size(s.size)} × {s.connections}, "
        f"{s.repeat} rounds, "
        f"seed {s.seed} — {m.cpu}, {m.cores} cores, Python {m.python}",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _label(row: Figures) -> str:
    target = row.target
    return (
        target.impl
        if target.id == target.impl
        else f"{target.impl}\n{target.id[len(target.impl) + 1 :]}"
    )


def _median(spread: Spread | None) -> float:
    return spread.median if spread is not None else 0.0


def _worst(delay: Delay | None) -> float:
    if delay is None or not delay.ticks:
        return 0.0
    return (delay.p99 if delay.p99 is not None else delay.max) or 0.0
