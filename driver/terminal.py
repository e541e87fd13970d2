"""Reports as tables in a terminal, with rich: the same :class:`nbio.report.Table` objects
that become Markdown, laid out for a screen (or 240 columns when piped)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence

from .record import Report
from .report import Table, header, machines_differ, side_by_side, tables

__all__ = ["render", "render_side_by_side"]


def _console_text(lines: Sequence[str | Table]) -> str:
    from rich.console import Console
    from rich.table import Table as RichTable

    text = io.StringIO()
    width = os.get_terminal_size().columns if sys.stdout.isatty() else 240
    console = Console(file=text, width=width, force_terminal=sys.stdout.isatty())
    for item in lines:
        if isinstance(item, str):
            console.print(item, highlight=False)
            continue
        if item.title:
            console.print(item.title, highlight=False)
        grid = RichTable(show_edge=False, pad_edge=False)
        for name in item.headers:
            grid.add_column(name, justify="left" if name in ("impl", "loop") else "right")
        for row in item.rows:
            grid.add_row(*row)
        console.print(grid)
    return text.getvalue().rstrip("\n")


def render(report: Report) -> str:
    """The report for a terminal: its header, then its tables."""
    return _console_text([header(report), *tables(report)])


def render_side_by_side(reports: Sequence[tuple[str, Report]]) -> str:
    """Several reports for a terminal: each one's header, then one table of them all."""
    lines: list[str | Table] = [f"{label}: {header(stored)}" for label, stored in reports]
    differ = machines_differ(reports)
    if differ:
        lines += ["What differs between the machines:", *(f"  {line}" for line in differ)]
    return _console_text([*lines, side_by_side(reports)])
