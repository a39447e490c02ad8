"""The daily schedule, evaluated for real ticks through Dagster."""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from cdr_pipeline.config import Settings
from cdr_pipeline.defs.definitions import DAILY_JOB, build_definitions


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CDR_DATA_DIR": str(tmp_path), "CDR_START_DATE": "2026-01-01", **env})


def evaluate(defs: dg.Definitions, tick: dt.datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def("daily_cdr_schedule")
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        result = schedule.evaluate_tick(context)
    return list(result.run_requests or [])


@pytest.mark.parametrize(
    ("timezone", "late_days", "expected"),
    [
        ("UTC", "2", ["2026-11-03", "2026-11-04", "2026-11-05"]),
        ("UTC", "0", ["2026-11-05"]),
        ("Europe/Paris", "1", ["2026-11-04", "2026-11-05"]),
    ],
)
def test_tick_requests_yesterday_and_the_trailing_window(
    tmp_path: Path, timezone: str, late_days: str, expected: list[str]
) -> None:
    defs = build_definitions(settings(tmp_path, CDR_TIMEZONE=timezone, CDR_LATE_DAYS=late_days))
    tick = dt.datetime(2026, 11, 6, 0, 30, tzinfo=ZoneInfo(timezone))
    requests = evaluate(defs, tick)
    assert [r.partition_key for r in requests] == expected
    assert len({r.run_key for r in requests}) == len(requests)
    schedule = defs.resolve_schedule_def("daily_cdr_schedule")
    assert schedule.cron_schedule == "30 0 * * *"
    assert schedule.execution_timezone == timezone
    assert schedule.job_name == DAILY_JOB


def test_window_stops_at_the_first_partition(tmp_path: Path) -> None:
    defs = build_definitions(settings(tmp_path, CDR_START_DATE="2026-11-04"))
    requests = evaluate(defs, dt.datetime(2026, 11, 6, 0, 30, tzinfo=dt.UTC))
    assert [r.partition_key for r in requests] == ["2026-11-04", "2026-11-05"]
