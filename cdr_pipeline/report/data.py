"""The data a daily report shows, read from the mart tables (no drawing here)."""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from cdr_pipeline import alerts, marts

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
        kpis=_frame(con, "SELECT * FROM daily_kpis WHERE call_date = ? ORDER BY direction", [day]),
        hourly=_frame(
            con,
            "SELECT hour, direction, calls, answered_calls FROM hourly_traffic "
            "WHERE call_date = ? ORDER BY hour, direction",
            [day],
        ),
        trend=_frame(
            con,
            "SELECT call_date, direction, calls, asr, ner FROM daily_kpis "
            "WHERE call_date BETWEEN ? AND ? ORDER BY call_date, direction",
            [first, day],
        ),
        causes=_frame(
            con,
            """
            SELECT hangup_cause, any_value(hangup_cause_name) AS hangup_cause_name,
                   any_value(hangup_cause_class) AS hangup_cause_class,
                   coalesce(hangup_source, 'unknown') AS hangup_source,
                   sum(calls)::BIGINT AS calls,
                   sum(sum(calls)) OVER (PARTITION BY hangup_cause)::BIGINT AS cause_calls,
                   (sum(sum(calls)) OVER (PARTITION BY hangup_cause)
                    / sum(sum(calls)) OVER ())::DOUBLE AS cause_share
            FROM hangup_cause_daily WHERE call_date = ?
            GROUP BY hangup_cause, coalesce(hangup_source, 'unknown')
            ORDER BY cause_calls DESC, hangup_cause NULLS LAST, hangup_source
            """,
            [day],
        ),
        destinations=_frame(
            con,
            """
            SELECT coalesce(billing_destination_label, '(no destination)') AS destination,
                   sum(calls)::BIGINT AS calls, sum(billed_minutes)::DOUBLE AS billed_minutes,
                   sum(billing_debit)::DECIMAL(18, 6) AS billing_debit
            FROM destination_kpis WHERE call_date = ?
            GROUP BY 1 ORDER BY billing_debit DESC, calls DESC, destination
            """,
            [day],
        ),
        comparisons=tuple(
            c
            for metric in alerts.METRICS
            for c in alerts.compare_with_last_week(con, day, metric, thresholds)
        ),
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def reports_dir(data_dir: Path) -> Path:
    """The folder of the daily reports: `CDR_DATA_DIR/reports`."""
    return data_dir / "reports"


def report_path(reports_dir: Path, day: dt.date) -> Path:
    """Where the report of `day` lives: `<reports_dir>/cdr-report-YYYY-MM-DD.html`."""
    return reports_dir / f"cdr-report-{day.isoformat()}.html"
