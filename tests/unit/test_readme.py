"""The README's concept table points at real lines: each ``[`code`](file#Ln)`` link names
text that stands on that line of that file, and every linked file exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#\s]+)#L(\d+)\)")
FILE_LINK = re.compile(r"\]\(((?:common|asyncio_impl|tests|[a-z]+_impl)/[^)#\s]*)\)")


def test_line_links_point_at_the_code_they_name() -> None:
    """Every line link's text is on the linked line (the message says where it moved)."""
    readme = (ROOT / "README.md").read_text()
    links = LINE_LINK.findall(readme)
    assert links, "the README has no line links"
    wrong = []
    for code, path, line in links:
        lines = (ROOT / path).read_text().splitlines()
        if code not in lines[int(line) - 1]:
            found = [n for n, text in enumerate(lines, 1) if code in text]
            wrong.append(f"{path}#L{line} lacks {code!r} (found on lines {found})")
    assert not wrong, "\n".join(wrong)


def test_file_links_exist() -> None:
    """Every relative link to a file or folder of the project exists."""
    readme = (ROOT / "README.md").read_text()
    missing = [path for path in FILE_LINK.findall(readme) if not (ROOT / path).exists()]
    assert not missing
