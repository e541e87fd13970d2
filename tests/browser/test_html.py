"""``nbio report --html`` in a real browser: Debian's Chromium, headless, driven by
Playwright (nothing downloads a browser of its own). The page opens from a file with no
network: no console error, no request but for itself; every section and chart is there;
a column sorts; a filter hides rows. A screenshot is kept as the run's artifact."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import run_nbio

ROOT = Path(__file__).resolve().parents[2]
#: Two stored reports of two workloads, one of them with several loops' rows.
REPORTS = ["docs/results/workloads-stream.json", "docs/results/workloads-churn.json"]
#: As the machine's notes say Chromium must start here: no sandbox as root, and none of
#: the background connections a closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    done = run_nbio("report", "--html", str(path), *(str(ROOT / r) for r in REPORTS))
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def opened(browser: Any, page_file: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The page, opened from its file, with every console error and request it made."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    yield page, errors, requests
    page.close()


def _column(page: Any, section: str, index: int) -> list[str]:
    cells = page.locator(f"section#{section} table.sortable >> nth=0").locator(
        f"tbody tr:not([hidden]) td:nth-child({index + 1})"
    )
    return [text.strip() for text in cells.all_inner_texts()]


def test_the_page_loads_from_a_file_with_no_error_and_no_request(
    opened: tuple[Any, list[str], list[str]], page_file: Path
) -> None:
    """No console error, no script error, and no request for anything but the file itself:
    CSS, script and charts are inline."""
    page, errors, requests = opened
    assert not errors, errors
    assert requests == [page_file.as_uri()], requests
    assert page.title() == "nbio results"


def test_every_workload_has_its_section_charts_and_table(
    opened: tuple[Any, list[str], list[str]],
) -> None:
    """Each report has a section with its header, a chart of its first figure, a chart of
    each side's CPU (each with a title for screen readers), and its table with headers."""
    page, _, _ = opened
    for workload in ("stream", "churn"):
        section = page.locator(f"section[data-workload={workload}]")
        assert section.count() == 1
        charts = section.locator("svg.chart")
        assert charts.count() >= 2
        for i in range(charts.count()):
            assert charts.nth(i).locator("title").first.text_content()
        table = section.locator("table.sortable").first
        assert table.locator("caption").inner_text()
        assert table.locator("thead th").count() >= 5
        assert table.locator("tbody tr").count() >= 10


def test_sorting_a_column_reorders_the_rows(opened: tuple[Any, list[str], list[str]]) -> None:
    """A click on a column's header sorts the rows by its numbers, ascending; a second
    click, descending."""
    page, _, _ = opened
    section = page.locator("section[data-workload=stream]").get_attribute("id")
    before = _column(page, section, 2)
    page.locator(f"section#{section} table.sortable >> nth=0").locator("thead th").nth(2).locator(
        "button"
    ).click()
    ascending = _column(page, section, 2)
    numbers = [float(cell.split()[0]) for cell in ascending]
    assert numbers == sorted(numbers) and ascending != before
    page.locator(f"section#{section} table.sortable >> nth=0").locator("thead th").nth(2).locator(
        "button"
    ).click()
    assert [float(c.split()[0]) for c in _column(page, section, 2)] == sorted(numbers, reverse=True)


def test_filtering_by_framework_hides_its_rows(opened: tuple[Any, list[str], list[str]]) -> None:
    """Unticking a framework hides its rows of that table and no others."""
    page, _, _ = opened
    section = page.locator("section[data-workload=stream]").get_attribute("id")
    shown = _column(page, section, 0)
    assert "twisted" in shown
    page.locator(f"section#{section} .filters input[value=twisted]").uncheck()
    after = _column(page, section, 0)
    assert "twisted" not in after and len(after) == len(shown) - shown.count("twisted")


def test_a_screenshot_is_kept(opened: tuple[Any, list[str], list[str]], tmp_path: Path) -> None:
    """The whole page as a PNG, where the run keeps its artifacts (NBIO_ARTIFACTS)."""
    page, _, _ = opened
    folder = Path(os.environ.get("NBIO_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "nbio-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
