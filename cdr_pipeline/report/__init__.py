"""The daily report: one self-contained HTML file per day (docs/analytics.md).

`data` reads what a day's report shows from the mart tables; `charts` draws the four charts as
SVG (with the primitives of `svg`); `render` lays out the page and writes the file.
"""

from cdr_pipeline.report.charts import CHART_TITLES
from cdr_pipeline.report.data import (
    TOP_CAUSES,
    TOP_DESTINATIONS,
    TREND_DAYS,
    ReportData,
    load_report_data,
    report_path,
    reports_dir,
)
from cdr_pipeline.report.render import (
    RenderedReport,
    markdown_image,
    render_report,
    write_day_report,
    write_report,
)

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
    "write_day_report",
    "write_report",
]
