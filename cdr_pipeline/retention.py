"""Retention (README "Privacy"): CDR_RAW_RETENTION_DAYS and CDR_CALLS_RETENTION_DAYS.

The horizon is the day `retention_days` days before today in CDR_TIMEZONE: with 30 days on
2026-12-01, the data of 2026-10-31 and earlier goes, that of 2026-11-01 stays.

- Raw: the raw exports (`raw/<day>/<direction>.csv`) of the days before the horizon, and the
  real-time landing store's events received before its midnight, are deleted.
- Calls (optional): the rows of `calls`, `call_rejects`, `realtime_calls_seen`, the marts and
  the Parquet lake whose `call_date` is before the horizon are deleted, and loading such a day
  is refused (`days.RetentionError`): it would only be deleted again.

What is newer is untouched.
"""

import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdr_pipeline import marts, warehouse
from cdr_pipeline.config import check_timezone
from cdr_pipeline.db import count, date_literal, transaction
from cdr_pipeline.landing import LandingStore
from cdr_pipeline.schema import CALLS_TABLE, LOADS_TABLE, REALTIME_SEEN_TABLE, REJECTS_TABLE
from cdr_pipeline.warehouse import Lake


@dataclass
class RetentionReport:
    """What a retention run deleted."""

    horizon: dt.date  # the first day kept
    raw_files: list[Path] = field(default_factory=list)
    landed_events: int = 0


def horizon(today: dt.date, retention_days: int) -> dt.date:
    """The first day whose raw data is kept."""
    return today - dt.timedelta(days=retention_days)


def apply_raw_retention(
    lake: Lake, landing_file: Path, *, retention_days: int, timezone: str, today: dt.date
) -> RetentionReport:
    """Delete the raw exports and landed events older than the horizon (see the docstring)."""
    lake.require_folder("raw retention")
    report = RetentionReport(horizon(today, retention_days))
    for folder in sorted(lake.raw_dir.glob("*")):
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue  # not a day's folder: not the pipeline's
        if day < report.horizon and folder.is_dir():
            report.raw_files.extend(sorted(folder.iterdir()))
            shutil.rmtree(folder)
    if landing_file.exists():
        start = dt.datetime.combine(report.horizon, dt.time(), check_timezone(timezone))
        received = start.astimezone(dt.UTC).isoformat(timespec="microseconds")
        with LandingStore(landing_file) as store:
            report.landed_events = len(store.delete_events("received_at < ?", [received]))
    return report


@dataclass
class CallsRetentionReport:
    """What the calls' retention deleted."""

    horizon: dt.date  # the first day kept
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    parquet_files: list[Path] = field(default_factory=list)


def apply_calls_retention(
    con: duckdb.DuckDBPyConnection, lake: Lake, first_day_kept: dt.date
) -> CallsRetentionReport:
    """Delete the calls, rejects and mart rows, and the Parquet, of the days before the horizon.

    DuckDB reuses the freed blocks for later loads; unlike an erasure, the file is not rewritten
    (a daily copy of the whole warehouse would cost more than the retention saves)."""
    lake.require_folder("calls retention")
    report = CallsRetentionReport(first_day_kept)
    warehouse.ensure_realtime_schema(con)
    before = f"call_date < {date_literal(first_day_kept)}"
    tables = (
        CALLS_TABLE,
        REJECTS_TABLE,
        REALTIME_SEEN_TABLE,
        *marts.MART_TABLES,
    )
    with transaction(con):
        for table in tables:
            report.rows[table] = count(con, f"SELECT count(*) FROM {table} WHERE {before}")
            con.execute(f"DELETE FROM {table} WHERE {before}")
        con.execute(f"DELETE FROM {LOADS_TABLE} WHERE partition < {date_literal(first_day_kept)}")
    for folder in (lake.calls_dir, lake.rejects_dir):
        for day_dir in sorted(folder.glob("call_date=*")):
            try:
                day = dt.date.fromisoformat(day_dir.name.removeprefix("call_date="))
            except ValueError:
                continue
            if day < first_day_kept:
                report.parquet_files.extend(sorted(day_dir.iterdir()))
                shutil.rmtree(day_dir)
    return report
