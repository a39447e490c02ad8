"""Read-side SQL over the warehouse: what the report, the Dagster metadata and the CLI show.

Each query is written once here; callers choose the days (and, for `daily_kpis`, the columns).
"""

import datetime as dt
from collections.abc import Sequence

import duckdb
import polars as pl

from cdr_pipeline import marts
from cdr_pipeline.schema import CALLS_TABLE, REJECTS_TABLE

# The demo summary's view of `daily_kpis`: rounded, with short column names.
KPI_SUMMARY_COLUMNS = """
    call_date, direction, calls, answered_calls AS answered,
    round(100 * asr, 1) AS "asr_%", round(100 * ner, 1) AS "ner_%",
    round(acd_s)::INT AS acd_s, round(billed_minutes)::INT AS billed_min,
    round(billing_debit, 2) AS debit, round(cost_per_billed_minute, 4) AS per_min,
    peak_concurrent_calls AS peak_conc
"""
# The report's trend chart: volume and the two ratios.
TREND_COLUMNS = "call_date, direction, calls, asr, ner"


def daily_kpis(
    con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date, columns: str = "*"
) -> pl.DataFrame:
    """`daily_kpis` rows from `first` to `last`, by day then direction."""
    return con.sql(
        f"SELECT {columns} FROM daily_kpis WHERE call_date BETWEEN ? AND ? "
        "ORDER BY call_date, direction",
        params=[first, last],
    ).pl()


def mart_day_counts(
    con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date
) -> dict[str, dict[dt.date, int]]:
    """Rows per day of each mart from `first` to `last` (one query per mart)."""
    counts: dict[str, dict[dt.date, int]] = {}
    for mart in marts.MART_TABLES:
        rows = con.execute(
            f"SELECT call_date, count(*) FROM {mart} WHERE call_date BETWEEN ? AND ? GROUP BY 1",
            [first, last],
        ).fetchall()
        counts[mart] = {day: int(n) for day, n in rows}
    return counts


def hourly_traffic(con: duckdb.DuckDBPyConnection, day: dt.date) -> pl.DataFrame:
    """Calls and answered calls per hour and direction of `day`."""
    return con.sql(
        "SELECT hour, direction, calls, answered_calls FROM hourly_traffic "
        "WHERE call_date = ? ORDER BY hour, direction",
        params=[day],
    ).pl()


def hangup_causes(con: duckdb.DuckDBPyConnection, day: dt.date) -> pl.DataFrame:
    """`hangup_cause_daily` of `day`, both directions added up, the most frequent cause first."""
    return con.sql(
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
        params=[day],
    ).pl()


def destination_costs(con: duckdb.DuckDBPyConnection, day: dt.date) -> pl.DataFrame:
    """`destination_kpis` of `day`, both directions added up, the costliest first."""
    return con.sql(
        """
        SELECT coalesce(billing_destination_label, '(no destination)') AS destination,
               sum(calls)::BIGINT AS calls, sum(billed_minutes)::DOUBLE AS billed_minutes,
               sum(billing_debit)::DECIMAL(18, 6) AS billing_debit
        FROM destination_kpis WHERE call_date = ?
        GROUP BY 1 ORDER BY billing_debit DESC, calls DESC, destination
        """,
        params=[day],
    ).pl()


def rows_per_day(con: duckdb.DuckDBPyConnection, days: Sequence[dt.date]) -> pl.DataFrame:
    """Calls and rejects stored for each of `days`."""
    return con.sql(
        f"""
        SELECT d.day AS call_date,
               (SELECT count(*) FROM {CALLS_TABLE} WHERE call_date = d.day) AS calls,
               (SELECT count(*) FROM {REJECTS_TABLE} WHERE call_date = d.day) AS rejects
        FROM unnest(?::DATE[]) AS d(day) ORDER BY 1
        """,
        params=[[d.isoformat() for d in days]],
    ).pl()
