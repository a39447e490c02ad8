"""The daily HTML report: produced, self-contained, right numbers, and really drawn (headless
Chromium screenshot under test-artifacts/)."""

import base64
import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from cdr_pipeline import report, warehouse
from cdr_pipeline_tests.marts_fixture import (
    DAY,
    inbound_day,
    outbound_day,
    write_calls,
    write_month,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Anything that would make the page fetch something: external scripts, stylesheets, images,
# fonts, CSS imports.
REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE,
)


def build_report(path: Path, day: dt.date) -> Path:
    with warehouse.connect(path, read_only=True) as con:
        data = report.load_report_data(con, day)
    rendered = report.render_report(data, generated_at=dt.datetime(2026, 3, 3, 6, tzinfo=dt.UTC))
    target = report.report_path(report.reports_dir(path.parent / "data"), day)
    return report.write_report(rendered.html, target)


@pytest.fixture(scope="module")
def month_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A month of synthetic traffic whose last day drops; that day's report."""
    path = tmp_path_factory.mktemp("month") / "warehouse.duckdb"
    write_month(path, DAY, bad_day=DAY)
    return build_report(path, DAY)


def test_report_is_written_where_the_docs_say(month_report: Path) -> None:
    assert month_report.name == "cdr-report-2026-03-02.html"
    assert month_report.parent.name == "reports"
    assert not list(month_report.parent.glob(".*.tmp"))  # atomic write left no temporary file


def test_report_is_self_contained(month_report: Path) -> None:
    page = month_report.read_text(encoding="utf-8")
    assert "<script" not in page.lower()  # no script at all, let alone a CDN one
    assert "<link" not in page.lower()
    assert not REMOTE.findall(page)
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 4
    assert all(src.startswith("data:image/svg+xml;base64,") for src in images)
    for src in images:  # the charts themselves reference nothing outside either
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        assert not REMOTE.findall(svg)
        assert "<image" not in svg


def test_report_shows_the_sections_and_the_alerts(month_report: Path) -> None:
    page = month_report.read_text(encoding="utf-8")
    for heading in (
        "Monday 2 March 2026",
        "Alerts against the same weekday last week",
        "Calls per hour, by direction",
        "ASR and NER, last 30 days",
        "Top hangup causes",
        "Cost by destination",
        "KPIs by direction",
    ):
        assert heading in page
    assert "ALERT" in page  # the fixture's last day loses 60 % of its calls


def test_report_numbers_come_from_the_marts(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    write_calls(path, outbound_day() + inbound_day())
    page = build_report(path, DAY).read_text(encoding="utf-8")
    kpi_table = page[page.index("KPIs by direction") :]
    # outbound (test_marts.py by hand): 7 calls, 3 answered, ASR 3/7, NER 6/7, ACD 50 s,
    # 3 billed minutes, debit 0.36, 0.12 per minute, peak 2
    outbound_row = re.search(r"<tr><td>outbound</td>(.*?)</tr>", kpi_table)
    assert outbound_row is not None
    cells = re.findall(r"<td class=num>([^<]*)</td>", outbound_row.group(1))
    assert cells == ["7", "3", "42.9%", "85.7%", "50.0", "3.0", "0.36", "0.05", "0.1200", "2"]
    assert "NER</b> (ITU-T E.425)" in page and "Q.850 17, 18, 19, 21" in page


def test_report_of_a_day_without_calls_still_renders(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    write_calls(path, [])
    page = build_report(path, DAY).read_text(encoding="utf-8")
    assert "No calls on this day." in page
    assert len(re.findall(r'<img src="data:image/svg\+xml;base64,', page)) == 4


def test_charts_come_back_as_png_for_the_dagster_ui(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    write_calls(path, outbound_day())
    with warehouse.connect(path, read_only=True) as con:
        rendered = report.render_report(report.load_report_data(con, DAY))
    assert set(rendered.charts_png) == set(report.CHART_TITLES)
    png = rendered.charts_png["calls_per_hour"]
    assert png.startswith(b"\x89PNG")
    markdown = report.markdown_image(png, "calls per hour")
    assert markdown.startswith("![calls per hour](data:image/png;base64,")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_headless_chromium_screenshot_is_not_blank(month_report: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "daily_report.png"
    screenshot.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}", "--window-size=1200,1900",
            month_report.resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with Image.open(screenshot) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert rgb.size == (1200, 1900)
    # A blank (or error) page has a handful of colours; the report has text and four charts.
    assert len(colours) > 500
    background = max(colours)[0] / (1200 * 1900)
    assert background < 0.9  # at least 10 % of the page is drawn on
