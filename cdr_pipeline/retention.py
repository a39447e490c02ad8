"""Retention of the raw landing (README "Privacy"): CDR_RAW_RETENTION_DAYS.

The raw exports (`raw/<day>/<direction>.csv`) of the days before the horizon, and the real-time
landing store's events received before it, are deleted; what is newer is untouched. The
horizon is the start of the day `retention_days` days before today in CDR_TIMEZONE: with 30
days on 2026-12-01, the exports of 2026-10-31 and earlier go, those of 2026-11-01 stay.
Typed Parquet and DuckDB are not touched: they are the analytics (pseudonymised on request).
"""

import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cdr_pipeline.config import check_timezone
from cdr_pipeline.receiver.landing import LandingStore
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
