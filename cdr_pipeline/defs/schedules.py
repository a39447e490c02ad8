"""The daily schedule: yesterday and a trailing window of earlier days, in one ranged run."""

import datetime as dt

import dagster as dg

from cdr_pipeline.config import check_timezone
from cdr_pipeline.defs.ranges import range_tags


def partitions_for_tick(
    tick: dt.datetime, timezone: str, late_days: int, first_day: dt.date
) -> list[dt.date]:
    """Days a tick at `tick` re-materialises: yesterday (local) and the `late_days` before it."""
    local_today = tick.astimezone(check_timezone(timezone)).date()
    days = [local_today - dt.timedelta(days=n) for n in range(late_days + 1, 0, -1)]
    return [d for d in days if d >= first_day]


def build_daily_schedule(
    job_name: str,
    *,
    timezone: str,
    first_day: dt.date,
    late_days: int,
) -> dg.ScheduleDefinition:
    """00:30 local each day: one run over the trailing window's days (oldest to newest)."""

    @dg.schedule(
        name="daily_cdr_schedule",
        cron_schedule="30 0 * * *",
        execution_timezone=timezone,
        job_name=job_name,
        description=(
            f"After midnight in {timezone}: loads yesterday and re-loads the {late_days} days "
            "before it, in one run, so billing Callr finalises late still lands (loads are "
            "idempotent)."
        ),
    )
    def daily_cdr_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        days = partitions_for_tick(tick, timezone, late_days, first_day)
        if not days:
            return dg.SkipReason(f"no day to load before the first partition {first_day}")
        # Each tick's run has its own key: a day is re-requested by each of the next ticks
        # rather than deduplicated away.
        return dg.RunRequest(
            run_key=f"{days[0]}..{days[-1]}@{tick.date().isoformat()}",
            tags={**range_tags(days[0], days[-1]), "cdr/trigger": "schedule"},
        )

    return daily_cdr_schedule
