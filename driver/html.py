"""Stored reports as one self-contained web page (``nbio report --html OUT.html A.json
B.json``): each run's header and machine, what differs between the machines, and per
run a chart of its first figure with each row's min–max spread (a row whose spread
overlaps the baseline's is marked), a chart of each side's CPU per unit, the echo
runs' latency percentiles, and the full table, sortable by any column and filterable by
framework and loop.

No request leaves the page: the CSS, the script and the charts (SVG drawn here) are
inline, so it opens from a file with no network. The charts and tables come from the same
reduced figures and :class:`nbio.report.Table` objects as the Markdown; the page reads
whole without script (the script only sorts and filters)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .figures import Figures, Spread, reduce
from .record import BASELINE, Report
from .report import Table, agreement, header, machines_differ, side_by_side, tables
from .transfer import Target
from .workloads import CONNECTION, REQUEST, WORKLOADS

__all__ = ["page"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WIDTH = 760
_LABEL = 250
_ROW = 22


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _label(target: Target) -> str:
    return target.id


# --- charts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bar:
    label: str
    spread: Spread | None
    baseline: bool = False
    overlaps: bool = False  # its min–max overlaps the baseline's


def _svg(title: str, desc: str, height: int, body: list[str]) -> str:
    ident = _slug(title)
    return (
        f'<svg class="chart" role="img" aria-labelledby="{ident}-t {ident}-d" '
        f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="{ident}-t">{_e(title)}</title>'
        f'<desc id="{ident}-d">{_e(desc)}</desc>{"".join(body)}</svg>'
    )


def _row_label(y: int, label: str) -> str:
    return f'<text x="{_LABEL - 6}" y="{y + 14}" text-anchor="end" class="label">{_e(label)}</text>'


def _scale(values: Sequence[float]) -> float:
    top = max([v for v in values if v > 0], default=1.0)
    return (_WIDTH - _LABEL - 70) / top


def spread_chart(title: str, unit: str, bars: Sequence[_Bar]) -> str:
    """Horizontal bars of each row's median, a whisker from its min to its max; the
    baseline's bar in its own colour, and a row whose spread overlaps the baseline's
    marked "≈ baseline" (no difference can be told)."""
    scale = _scale([b.spread.high for b in bars if b.spread])
    body = []
    for i, bar in enumerate(bars):
        y = 8 + i * _ROW
        label = bar.label + (" ≈ baseline" if bar.overlaps else "")
        body.append(_row_label(y, label))
        if bar.spread is None:
            body.append(f'<text x="{_LABEL + 4}" y="{y + 14}" class="error">error</text>')
            continue
        kind = "base" if bar.baseline else "near" if bar.overlaps else "bar"
        width = max(1.0, bar.spread.median * scale)
        low, high = _LABEL + bar.spread.low * scale, _LABEL + bar.spread.high * scale
        body.append(
            f'<rect x="{_LABEL}" y="{y + 3}" width="{width:.1f}" height="{_ROW - 8}" '
            f'class="{kind}"><title>{_e(bar.label)}: {bar.spread.text(2)} {_e(unit)}</title>'
            "</rect>"
        )
        body.append(
            f'<line x1="{low:.1f}" x2="{high:.1f}" y1="{y + 11}" y2="{y + 11}" class="whisker"/>'
        )
        body.append(
            f'<text x="{high + 4:.1f}" y="{y + 14}" class="value">{bar.spread.median:.4g}</text>'
        )
    desc = f"{unit}, median of each row's runs with a line from its smallest to its largest"
    return _svg(title, desc, 16 + len(bars) * _ROW, body)


def pair_chart(
    title: str, unit: str, rows: Sequence[tuple[str, float | None, float | None]]
) -> str:
    """Two bars per row: the client's and the server's."""
    scale = _scale([v for _, c, s in rows for v in (c, s) if v is not None])
    body = []
    for i, (label, client, server) in enumerate(rows):
        y = 8 + i * _ROW
        body.append(_row_label(y, label))
        for offset, (side, value) in enumerate((("client", client), ("server", server))):
            if value is None:
                continue
            width = max(1.0, value * scale)
            body.append(
                f'<rect x="{_LABEL}" y="{y + 2 + offset * 9}" width="{width:.1f}" height="8" '
                f'class="{side}"><title>{_e(label)}, {side}: {value:.4g} {_e(unit)}</title></rect>'
            )
        shown = " / ".join("-" if v is None else f"{v:.3g}" for v in (client, server))
        end = _LABEL + max(client or 0, server or 0) * scale
        body.append(f'<text x="{end + 4:.1f}" y="{y + 14}" class="value">{shown}</text>')
    desc = f"{unit}, median: the client's bar above the server's"
    return _svg(title, desc, 16 + len(rows) * _ROW, body)


def latency_chart(
    title: str, rows: Sequence[tuple[str, float | None, float | None, float | None]]
) -> str:
    """Each row's p50, p99 and p99.9 latency on a logarithmic scale (ms)."""
    values = [v for _, *ps in rows for v in ps if v]
    low = math.log10(min(values, default=0.01))
    high = math.log10(max(values, default=1.0))
    span = max(high - low, 1e-9)
    scale = (_WIDTH - _LABEL - 70) / span
    body = []
    for i, (label, *points) in enumerate(rows):
        y = 8 + i * _ROW
        body.append(_row_label(y, label))
        for name, value in zip(("p50", "p99", "p99.9"), points, strict=True):
            if not value:
                continue
            x = _LABEL + (math.log10(value) - low) * scale
            body.append(
                f'<circle cx="{x:.1f}" cy="{y + 11}" r="5" class="{name.replace(".", "")}">'
                f"<title>{_e(label)}: {name} {value:.3g} ms</title></circle>"
            )
    desc = "request latency in ms on a logarithmic scale: p50, p99 and p99.9 of each row"
    return _svg(title, desc, 16 + len(rows) * _ROW, body)


# --- a report -----------------------------------------------------------------------------


def _overlaps(spread: Spread | None, base: Spread | None) -> bool:
    return bool(spread and base and spread.low <= base.high and base.low <= spread.high)


def _charts(report: Report, rows: list[Figures]) -> list[str]:
    workload = WORKLOADS[report.settings.workload]
    link = report.settings.link is not None
    base = next((r for r in rows if r.target == Target(BASELINE)), None)
    charts = []
    if link:  # every row runs at the link's rate: what a side spends is the figure
        title, unit = "server CPU at the link's rate", f"CPU s per {workload.per.name}, server"
        figure = [(r, r.server_cpu_s_per_unit) for r in rows]
        base_spread = base.server_cpu_s_per_unit if base else None
    else:
        title, unit = workload.chart_title, workload.label
        figure = [(r, r.primary) for r in rows]
        base_spread = base.primary if base else None
    bars = [
        _Bar(
            _label(r.target),
            spread,
            r is base,
            r is not base and _overlaps(spread, base_spread),
        )
        for r, spread in figure
    ]
    charts.append(spread_chart(title, unit, bars))
    per = "ms per 1000 requests" if workload.per is REQUEST else f"s per {workload.per.name}"
    scale = 1e6 if workload.per is REQUEST else 1000 if workload.per is CONNECTION else 1
    per = "ms per connection" if workload.per is CONNECTION else per
    charts.append(
        pair_chart(
            f"CPU {per} of each side",
            f"CPU {per}",
            [
                (
                    _label(r.target),
                    r.client_cpu_s_per_unit.median * scale if r.client_cpu_s_per_unit else None,
                    r.server_cpu_s_per_unit.median * scale if r.server_cpu_s_per_unit else None,
                )
                for r in rows
            ],
        )
    )
    if workload.grid:
        charts.append(
            latency_chart(
                "request latency, p50 / p99 / p99.9 (ms)",
                [
                    (_label(r.target), r.latency_p50_ms, r.latency_p99_ms, r.latency_p999_ms)
                    for r in rows
                ],
            )
        )
    return charts


def _sort_key(text: str) -> str:
    found = _NUMBER.search(text.replace("−", "-"))
    return found.group(0) if found and not text.startswith("error") else ""


def table_html(table: Table, caption: str, sortable: bool = True) -> str:
    """A table with a caption and column headers; each cell carries the number it sorts
    by, and each row its implementation and loop, for the script's sorting and filters."""
    head = "".join(
        f'<th scope="col" data-column="{i}">{_e(name)}</th>' for i, name in enumerate(table.headers)
    )
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td data-sort="{_e(_sort_key(cell))}">{_e(cell)}</td>'
            if i > 1
            else f"<td>{_e(cell)}</td>"
            for i, cell in enumerate(row)
        )
        impl, loop = [*row, "", ""][:2]
        body.append(f'<tr data-impl="{_e(impl)}" data-loop="{_e(loop)}">{cells}</tr>')
    kind = ' class="sortable"' if sortable else ""
    return (
        f"<table{kind}><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def section(label: str, report: Report) -> str:
    """One stored report: its header, its charts, its tables."""
    rows = reduce(report)
    name = report.settings.workload
    ident = _slug(f"{name}-{label}")
    parts = [
        f'<section id="{ident}" data-workload="{_e(name)}">',
        f"<h3>{_e(name)}: <code>{_e(label)}</code></h3>",
        f'<p class="header">{_e(header(report))}</p>',
        '<div class="charts">',
        *(f"<figure>{chart}</figure>" for chart in _charts(report, rows)),
        "</div>",
        '<div class="filters" hidden></div>',
    ]
    for i, table in enumerate(tables(report)):
        caption = table.title or f"{name}, every row ({label})"
        parts.append(table_html(table, caption, sortable=i == 0 or table.title is not None))
    parts.append("</section>")
    return "\n".join(parts)


def _kind(report: Report) -> tuple[object, ...]:
    """What a run measured, whatever its size, seed or rounds: runs of one kind (on other
    machines, say) are set side by side."""
    s = report.settings
    return (
        s.connections, s.concurrency, s.chunk_size, s.digest, s.matrix, s.link_bits,
        s.message_size, s.rate, s.tls,
    )  # fmt: skip


def page(reports: Sequence[tuple[str, Report]], title: str = "nbio results") -> str:
    """The whole page: the machines, then each workload's reports, and where a workload
    has several, them side by side."""
    order = list(WORKLOADS)
    grouped: dict[str, list[tuple[str, Report]]] = {}
    for label, report in sorted(reports, key=lambda r: (order.index(r[1].settings.workload), r[0])):
        grouped.setdefault(report.settings.workload, []).append((label, report))
    nav = "".join(f'<li><a href="#{_slug(name)}">{_e(name)}</a></li>' for name in grouped)
    machines = sorted({r.machine.summary() for _, r in reports})
    differ = machines_differ(list(reports)) if len(reports) > 1 else []
    body = [
        f"<header><h1>{_e(title)}</h1>",
        f"<p>{len(reports)} stored report(s) of <code>nbio compare</code>, each rendered from "
        "its raw runs, as <code>nbio report</code> renders them.</p>",
        f'<nav aria-label="workloads"><ul>{nav}</ul></nav></header>',
        '<section id="machines"><h2>Machines</h2><ul>',
        *(f"<li>{_e(m)}</li>" for m in machines),
        "</ul>",
    ]
    if differ:
        body += ["<h3>What differs between them</h3><ul>"]
        body += [f"<li>{_e(line)}</li>" for line in differ]
        body += ["</ul>"]
    body.append("</section>")
    for name, found in grouped.items():
        body.append(f'<section id="{_slug(name)}"><h2>{_e(name)}</h2>')
        body += [section(label, report) for label, report in found]
        kinds: dict[tuple[object, ...], list[tuple[str, Report]]] = {}
        for label, report in found:
            kinds.setdefault(_kind(report), []).append((label, report))
        for alike in kinds.values():
            if len(alike) > 1:
                labels = ", ".join(label for label, _ in alike)
                body.append(table_html(side_by_side(alike), f"{name}: {labels} side by side"))
                body.append(
                    table_html(agreement(alike), f"{name}: what ranks the same in {labels}")
                )
        body.append("</section>")
    return _DOCUMENT.format(title=_e(title), style=_STYLE, body="\n".join(body), script=_SCRIPT)


_DOCUMENT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px;
  padding: 0 1em; color: #1b1b1b; background: #fff; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1em; }
.header { font-size: 12px; color: #444; max-width: 120ch; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
svg.chart { border: 1px solid #ddd; background: #fcfcfc; max-width: 100%; height: auto; }
svg .label { font-size: 11px; fill: #222; } svg .value { font-size: 10px; fill: #444; }
svg .bar { fill: #4c78a8; } svg .base { fill: #f58518; } svg .near { fill: #9ecae9; }
svg .client { fill: #4c78a8; } svg .server { fill: #e45756; }
svg .whisker { stroke: #111; stroke-width: 1.5; } svg .error { fill: #c00; font-size: 11px; }
svg .p50 { fill: #54a24b; } svg .p99 { fill: #eeca3b; } svg .p999 { fill: #e45756; }
table { border-collapse: collapse; margin: 1em 0; font-size: 12px; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
th button { font: inherit; background: none; border: 0; cursor: pointer; padding: 0; }
th[aria-sort] button::after { content: " ▲"; }
th[aria-sort=descending] button::after { content: " ▼"; }
tr[hidden] { display: none; }
.filters { margin: 0.5em 0; font-size: 12px; } .filters fieldset { display: inline-block; }
"""

_SCRIPT = """
(function () {
  function value(cell) {
    var text = cell.getAttribute("data-sort");
    if (text === null) { return cell.textContent.trim(); }
    return text === "" ? NaN : parseFloat(text);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () {
        var down = th.getAttribute("aria-sort") === "ascending";
        table.querySelectorAll("thead th").forEach(function (other) {
          other.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", down ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = value(a.cells[index]), y = value(b.cells[index]);
          var missing = (typeof x === "number" && isNaN(x)) - (typeof y === "number" && isNaN(y));
          if (missing) { return missing; }
          var order = x < y ? -1 : x > y ? 1 : 0;
          return down ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.querySelectorAll("section[data-workload]").forEach(function (section) {
    var box = section.querySelector(".filters");
    var rows = section.querySelectorAll("tr[data-impl]");
    function choices(key, legend) {
      var seen = [];
      rows.forEach(function (row) {
        var name = row.getAttribute(key);
        if (seen.indexOf(name) < 0) { seen.push(name); }
      });
      var set = document.createElement("fieldset");
      var title = document.createElement("legend");
      title.textContent = legend;
      set.appendChild(title);
      seen.forEach(function (name) {
        var label = document.createElement("label");
        var box = document.createElement("input");
        box.type = "checkbox";
        box.checked = true;
        box.value = name;
        box.setAttribute("data-key", key);
        label.appendChild(box);
        label.appendChild(document.createTextNode(" " + name + " "));
        set.appendChild(label);
      });
      return set;
    }
    box.appendChild(choices("data-impl", "framework"));
    box.appendChild(choices("data-loop", "loop"));
    box.hidden = false;
    box.addEventListener("change", function () {
      var off = {};
      box.querySelectorAll("input").forEach(function (input) {
        if (!input.checked) { off[input.getAttribute("data-key") + "=" + input.value] = true; }
      });
      rows.forEach(function (row) {
        row.hidden = !!(off["data-impl=" + row.getAttribute("data-impl")] ||
          off["data-loop=" + row.getAttribute("data-loop")]);
      });
    });
  });
})();
"""
