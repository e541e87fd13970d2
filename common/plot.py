"""Bar charts of an ``nbio compare`` report: throughput, CPU per GiB, peak RSS, loop delay.
Needs matplotlib (``pip install 'nbio[plot]'``); imported only when a chart is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.compare import Report, Row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot"]


def plot(report: Report, path: str) -> None:
    """Write the report's rows as a PNG of four bar charts to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    rows = [row for row in report.rows if row.error is None]
    labels = [row.impl if row.loop == "default" else f"{row.impl}\n({row.loop})" for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(max(10, len(rows) * 1.1), 9), layout="constrained")
    positions = list(range(len(rows)))
    width = 0.4

    def pair(ax: Axes, client: list[float], server: list[float], title: str) -> None:
        ax.bar([p - width / 2 for p in positions], client, width, label="client")
        ax.bar([p + width / 2 for p in positions], server, width, label="server")
        ax.set_title(title)
        ax.legend()

    throughput = axes[0][0]
    throughput.bar(positions, [_mb(row) for row in rows], color="tab:green")
    throughput.set_title("throughput, server-measured (MB/s, median)")
    pair(
        axes[0][1],
        [r.client_cpu_s_per_gib or 0 for r in rows],
        [r.server_cpu_s_per_gib or 0 for r in rows],
        "CPU seconds per GiB",
    )
    pair(
        axes[1][0],
        [r.client_rss_mib or 0 for r in rows],
        [r.server_rss_mib or 0 for r in rows],
        "peak RSS (MiB)",
    )
    pair(
        axes[1][1],
        [r.client_delay_ms.get("p99", 0) for r in rows],
        [r.server_delay_ms.get("p99", 0) for r in rows],
        "loop delay p99 (ms)",
    )
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
    m = report.machine
    figure.suptitle(
        f"nbio compare: {report.settings['size']} × {report.settings['connections']}, "
        f"{report.settings['repeat']} runs — {m['cpu']}, {m['cores']} cores, Python {m['python']}",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _mb(row: Row) -> float:
    return row.mb_per_s.median if row.mb_per_s is not None else 0.0
