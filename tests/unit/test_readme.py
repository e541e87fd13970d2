"""The README's and docs' tables point at real lines: each ``[`code`](file#Ln)`` link names
text that stands on that line of that file, and every linked file exists; every results
table is the rendering of a stored report, never typed."""

from __future__ import annotations

import re
from pathlib import Path

from nbio import record, report

ROOT = Path(__file__).resolve().parents[2]
LINE_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#\s]+)#L(\d+)\)")
FILE_LINK = re.compile(
    r"\]\(((?:\.\./)?(?:driver|common|edge|tests|walk|docs|[a-z]+_impl)/[^)#\s]*)\)"
)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A rendered report: ``<!-- nbio report PATH [PATH ...] -->``, its Markdown (several: side
#: by side), ``<!-- /nbio report -->``.
REPORT_BLOCK = re.compile(r"<!-- nbio report ([^>]+?) -->\n(.*?)<!-- /nbio report -->", re.S)


def test_line_links_point_at_the_code_they_name() -> None:
    """Every line link's text is on the linked line (the message says where it moved)."""
    wrong = []
    for doc in DOCS:
        links = LINE_LINK.findall(doc.read_text())
        assert links, f"{doc.name} has no line links"
        for code, path, line in links:
            lines = (doc.parent / path).read_text().splitlines()
            if code not in lines[int(line) - 1]:
                found = [n for n, text in enumerate(lines, 1) if code in text]
                wrong.append(f"{path}#L{line} lacks {code!r} (found on lines {found})")
    assert not wrong, "\n".join(wrong)


def test_file_links_exist() -> None:
    """Every relative link to a file or folder of the project exists."""
    missing = [
        f"{doc.name}: {path}"
        for doc in DOCS
        for path in FILE_LINK.findall(doc.read_text())
        if not (doc.parent / path).exists()
    ]
    assert not missing


def test_results_tables_are_renderings_of_stored_reports() -> None:
    """Each results block in the README is exactly ``nbio report PATH... --markdown`` of
    reports stored in docs/results/ (re-render it after a run: the message says which)."""
    readme = (ROOT / "README.md").read_text()
    blocks = REPORT_BLOCK.findall(readme)
    assert blocks, "the README shows no stored report"
    stale = []
    for paths, shown in blocks:
        stored = []
        for path in paths.split():
            assert path.startswith("docs/results/") and path.endswith(".json"), path
            stored.append((path, record.Report.from_json((ROOT / path).read_text())))
        if len(stored) == 1:
            rendered = report.to_markdown(stored[0][1])
        else:
            rendered = report.side_by_side_markdown(stored)
        if shown != rendered:
            stale.append(f"nbio report {paths} --markdown")
    assert not stale, "re-render: " + "; ".join(stale)


def test_the_results_page_is_the_rendering_of_every_stored_report() -> None:
    """docs/results/index.html is exactly ``nbio report --html`` of every report stored in
    docs/results/, named as the command names them (re-render it after a run:
    ``LC_ALL=C nbio report --html docs/results/index.html docs/results/*.json`` from the
    root, whose glob sorts as this test does)."""
    from nbio.html import page

    paths = sorted((ROOT / "docs" / "results").glob("*.json"))
    stored = [
        (str(path.relative_to(ROOT)), record.Report.from_json(path.read_text())) for path in paths
    ]
    shown = (ROOT / "docs" / "results" / "index.html").read_text(encoding="utf-8")
    assert shown == page(stored), "re-render docs/results/index.html"
    assert "docs/results/index.html" in (ROOT / "README.md").read_text()
