"""Dagster: the marts' full rebuild, the weekly `call_id` audit, and the splitting of ranged
runs in which some days failed."""

import datetime as dt

import dagster as dg

from cdr_pipeline import marts, warehouse
from cdr_pipeline.defs.assets import CALLS_KEY, WRITER_POOL
from cdr_pipeline.defs.ranges import (
    RANGE_START_TAG,
    failed_days,
    range_tags,
    run_days,
    without,
)
from cdr_pipeline.defs.resources import WarehouseResource

REBUILD_JOB = "rebuild_marts_job"
AUDIT_CHECK = "call_id_unique_audit"
AUDIT_JOB = "call_id_audit_job"
AUDIT_SCHEDULE = "weekly_call_id_audit"
SPLIT_SENSOR = "split_failed_ranges"
SPLIT_PARENT_TAG = "cdr/split_of"


@dg.op(pool=WRITER_POOL, description="Recompute every day of every mart with the settings.")
def rebuild_marts(context: dg.OpExecutionContext, lake: WarehouseResource) -> None:
    with lake.connect() as con:
        warehouse.ensure_schema(con)
        days = marts.rebuild_marts(con, lake.mart_settings())
    context.log.info(f"marts recomputed for {days} day(s) with {lake.mart_settings().describe()}")


@dg.job(
    name=REBUILD_JOB,
    description="Recompute every mart from `calls` (after changing CDR_TIMEZONE, CDR_NER_CAUSES "
    "or upgrading to new mart definitions). `cdr-pipeline rebuild-marts` runs it too.",
    tags={"cdr/trigger": "rebuild"},
)
def rebuild_marts_job() -> None:
    rebuild_marts()


@dg.asset_check(
    asset=CALLS_KEY,
    name=AUDIT_CHECK,
    blocking=False,
    pool=WRITER_POOL,
    description="WARN when a call_id occurs more than once anywhere in `calls`: a copy stored "
    "outside the call dates a load reads (see cdr_pipeline/merge.py). Weekly, and on demand.",
)
def call_id_unique_audit(lake: WarehouseResource) -> dg.AssetCheckResult:
    with lake.connect(read_only=True) as con:
        duplicates, examples = warehouse.duplicate_call_ids(con)
    return dg.AssetCheckResult(
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicate_call_ids": duplicates, "examples": str(examples)},
        description=None
        if duplicates == 0
        else f"{duplicates} call_id(s) stored more than once, e.g. {examples}: re-load their "
        "days (`cdr-pipeline backfill`) to keep the best-ranked copy",
    )


call_id_audit_job = dg.define_asset_job(
    AUDIT_JOB,
    selection=dg.AssetSelection.checks(call_id_unique_audit),
    description="The full-table call_id audit (the per-load check reads the loaded days only).",
)

weekly_call_id_audit = dg.ScheduleDefinition(
    name=AUDIT_SCHEDULE,
    cron_schedule="0 4 * * 0",  # Sunday, after the nightly loads
    job=call_id_audit_job,
    description="Every Sunday: is every call_id stored once in the whole `calls` table?",
)


def build_split_sensor(days_per_run: int, job: object) -> dg.SensorDefinition:
    """Runs again, without them, the other days of a ranged run in which some days failed.

    Dagster marks a failed step's whole range as failed; the step itself records which days
    failed (`failed_days`) and which succeeded. Once the run will not be retried any more, this
    sensor requests the range's other days (in ranges of at most `days_per_run`), so one bad
    day costs that day, not its neighbours.
    """

    @dg.run_failure_sensor(
        name=SPLIT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        request_job=job,
        minimum_interval_seconds=10,
        description="When some days of a ranged run fail, runs the range's other days again.",
    )
    def split_failed_ranges(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if run.tags.get("dagster/will_retry") == "true" or RANGE_START_TAG not in run.tags:
            return dg.SkipReason("not a ranged run's last attempt")
        failed: set[dt.date] = set()
        for event in context.get_step_failure_events():
            failure = event.step_failure_data.user_failure_data
            if failure is not None:
                failed.update(failed_days(failure.metadata))
        if not failed:
            return dg.SkipReason("the failure named no day: the whole range failed")
        retry = without(run_days(run), failed, days_per_run)
        selection = sorted(run.asset_selection or [], key=lambda k: k.to_user_string())
        return [
            dg.RunRequest(
                run_key=f"{run.run_id}:{first}..{last}",
                asset_selection=selection or None,
                tags={**range_tags(first, last), SPLIT_PARENT_TAG: run.run_id},
            )
            for first, last in retry
        ]

    return split_failed_ranges
