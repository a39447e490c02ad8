"""The daily schedule: yesterday, plus a trailing window of earlier days for late billing."""

import datetime as dt

import dagster as dg

from cdr_pipeline.config import check_timezone


def partitions_for_tick(
    tick: dt.datetime, timezone: str, late_days: int, first_day: dt.date
) -> list[dt.date]:
    """Days a tick at `tick` re-materialises: yesterday (local) and the `late_days` before it."""
    local_today = tick.astimezone(check_timezone(timezone)).date()
    days = [local_today - dt.timedelta(days=n) for n in range(1, late_days + 2)]
    return [d for d in days if d >= first_day]


def build_daily_schedule(
    job_name: str,
    *,
    timezone: str,
    first_day: dt.date,
    late_days: int,
) -> dg.ScheduleDefinition:
    """00:30 local each day: one run per day of the trailing window, oldest first."""

    @dg.schedule(
        name="daily_cdr_schedule",
        cron_schedule="30 0 * * *",
        execution_timezone=timezone,
        job_name=job_name,
        description=(
            f"After midnight in {timezone}: loads yesterday and re-loads the {late_days} days "
            "before it, so billing Callr finalises late still lands (loads are idempotent)."
        ),
    )
    def daily_cdr_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        for day in reversed(partitions_for_tick(tick, timezone, late_days, first_day)):
            key = day.isoformat()
            yield dg.RunRequest(
                run_key=f"{key}@{tick.date().isoformat()}",
                partition_key=key,
                tags={"cdr/trigger": "schedule"},
            )

    return daily_cdr_schedule
