"""The README's and docs' tables point at real lines: each ``[`code`](file#Ln)`` link names
text that stands on that line of that file, and every linked file exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#\s]+)#L(\d+)\)")
FILE_LINK = re.compile(r"\]\(((?:\.\./)?(?:common|tests|walk|docs|[a-z]+_impl)/[^)#\s]*)\)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
