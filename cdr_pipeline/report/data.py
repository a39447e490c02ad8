"""The data a daily report shows, read from the mart tables (no drawing here)."""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from cdr_pipeline import alerts, marts, queries

TREND_DAYS = 30
TOP_CAUSES = 10
TOP_DESTINATIONS = 10


@dataclass(frozen=True)
class ReportData:
    """Everything one day's report shows, read from the marts."""

    day: dt.date
    timezone: str
    ner_causes: tuple[int, ...]
    kpis: pl.DataFrame  # daily_kpis of the day, one row per direction
    hourly: pl.DataFrame  # hourly_traffic of the day
    trend: pl.DataFrame  # daily_kpis of the TREND_DAYS days up to the day
    causes: pl.DataFrame  # hangup_cause_daily of the day, both directions added up
    destinations: pl.DataFrame  # destination_kpis of the day, both directions added up
    comparisons: tuple[alerts.Comparison, ...]  # against the same weekday a week before


def load_report_data(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    thresholds: alerts.AlertThresholds = alerts.AlertThresholds(),  # noqa: B008
) -> ReportData:
    """Read the day's rows of every mart the report shows."""
    settings = marts.mart_settings(con)
    timezone, ner_causes = settings.timezone, settings.ner_causes
    first = day - dt.timedelta(days=TREND_DAYS - 1)
    return ReportData(
        day=day,
        timezone=timezone,
        ner_causes=ner_causes,
        kpis=queries.daily_kpis(con, day, day),
        hourly=queries.hourly_traffic(con, day),
        trend=queries.daily_kpis(con, first, day, queries.TREND_COLUMNS),
        causes=queries.hangup_causes(con, day),
        destinations=queries.destination_costs(con, day),
        comparisons=tuple(
            c
            for metric in alerts.METRICS
            for c in alerts.compare_with_last_week(con, day, metric, thresholds)
        ),
    )


def reports_dir(data_dir: Path) -> Path:
    """The folder of the daily reports: `CDR_DATA_DIR/reports`."""
    return data_dir / "reports"


def report_path(reports_dir: Path, day: dt.date) -> Path:
    """Where the report of `day` lives: `<reports_dir>/cdr-report-YYYY-MM-DD.html`."""
    return reports_dir / f"cdr-report-{day.isoformat()}.html"
