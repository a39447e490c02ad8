"""The daily report: one self-contained HTML file per day (docs/analytics.md).

`data` reads what a day's report shows from the mart tables; `render` draws the charts with
matplotlib and lays out the page. Importing this package does not import matplotlib: the
drawing functions below load it on first use, so the pipeline's definitions start fast.
"""

from typing import Any

from cdr_pipeline.report.data import (
    TOP_CAUSES,
    TOP_DESTINATIONS,
    TREND_DAYS,
    ReportData,
    load_report_data,
    report_path,
    reports_dir,
)

_RENDER_NAMES = {
    "CHART_TITLES",
    "RenderedReport",
    "markdown_image",
    "render_report",
    "write_report",
}


def __getattr__(name: str) -> Any:
    if name in _RENDER_NAMES:
        from cdr_pipeline.report import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHART_TITLES",
    "TOP_CAUSES",
    "TOP_DESTINATIONS",
    "TREND_DAYS",
    "RenderedReport",
    "ReportData",
    "load_report_data",
    "markdown_image",
    "render_report",
    "report_path",
    "reports_dir",
    "write_report",
]
