"""The daily schedule, evaluated for real ticks through Dagster."""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from cdr_pipeline.config import Settings
from cdr_pipeline.defs.definitions import DAILY_JOB, build_definitions
from cdr_pipeline.defs.ranges import run_days


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CDR_DATA_DIR": str(tmp_path), "CDR_START_DATE": "2026-01-01", **env})


def evaluate(defs: dg.Definitions, tick: dt.datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def("daily_cdr_schedule")
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        result = schedule.evaluate_tick(context)
    return list(result.run_requests or [])


def requested_days(request: dg.RunRequest) -> list[str]:
    """The days a run request's range covers."""
    days = run_days(dg.DagsterRun(job_name=DAILY_JOB, tags=request.tags))
    return [d.isoformat() for d in days]


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
    (request,) = evaluate(defs, tick)  # the whole window in one run
    assert requested_days(request) == expected
    schedule = defs.resolve_schedule_def("daily_cdr_schedule")
    assert schedule.cron_schedule == "30 0 * * *"
    assert schedule.execution_timezone == timezone
    assert schedule.job_name == DAILY_JOB


def test_window_stops_at_the_first_partition(tmp_path: Path) -> None:
    defs = build_definitions(settings(tmp_path, CDR_START_DATE="2026-11-04"))
    (request,) = evaluate(defs, dt.datetime(2026, 11, 6, 0, 30, tzinfo=dt.UTC))
    assert requested_days(request) == ["2026-11-04", "2026-11-05"]


def test_default_window_is_yesterday_and_two_days_before_across_a_month_end(
    tmp_path: Path,
) -> None:
    defs = build_definitions(settings(tmp_path))  # CDR_LATE_DAYS unset: the default, 2
    (request,) = evaluate(defs, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC))
    assert requested_days(request) == ["2026-11-28", "2026-11-29", "2026-11-30"]


def test_a_late_day_is_requested_again_by_the_next_ticks(tmp_path: Path) -> None:
    """Dagster skips a run request whose run_key it has seen: each tick's re-load of a day
    needs its own key, or the late billing it is there for would never land."""
    defs = build_definitions(settings(tmp_path))
    ticks = [dt.datetime(2026, 11, d, 0, 30, tzinfo=dt.UTC) for d in (5, 6, 7)]
    keys = [
        r.run_key
        for tick in ticks
        for r in evaluate(defs, tick)
        if "2026-11-04" in requested_days(r)
    ]
    assert len(keys) == 3
    assert len(set(keys)) == 3


def test_nothing_to_load_before_the_first_partition_is_a_skip(tmp_path: Path) -> None:
    defs = build_definitions(settings(tmp_path, CDR_START_DATE="2026-11-06"))
    assert evaluate(defs, dt.datetime(2026, 11, 6, 0, 30, tzinfo=dt.UTC)) == []
