"""Dagster: the marts' full rebuild, the weekly `call_id` audit, and the splitting of ranged
runs in which some days failed."""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from cdr_pipeline import marts, warehouse
from cdr_pipeline.defs.keys import CALLS_KEY, WRITER_POOL
from cdr_pipeline.defs.ranges import (
    RANGE_START_TAG,
    failed_days,
    range_tags,
    run_days,
    without,
)
from cdr_pipeline.defs.resources import WarehouseResource

if TYPE_CHECKING:  # what define_asset_job returns; Dagster does not export its name
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

REBUILD_JOB = "rebuild_marts_job"
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


@dg.op(
    pool=WRITER_POOL,
    description="Is every call_id stored once in the whole `calls` table? The per-load check "
    "reads only the call dates a load touched (see cdr_pipeline/merge.py); this reads them all.",
)
def call_id_audit(context: dg.OpExecutionContext, lake: WarehouseResource) -> None:
    with lake.connect(read_only=True) as con:
        duplicates, examples = warehouse.duplicate_call_ids(con)
        rows = warehouse.table_rows(con)
    context.log_event(
        dg.AssetObservation(
            CALLS_KEY,
            metadata={"audit_duplicate_call_ids": duplicates, "audit_examples": str(examples)},
        )
    )
    if duplicates:
        raise dg.Failure(
            description=f"{duplicates} call_id(s) stored more than once among ~{rows:,} calls, "
            f"e.g. {examples}: a copy lies outside the call dates a load reads. Re-load those "
            "calls' days (`cdr-pipeline backfill`) to keep one copy.",
            metadata={"duplicate_call_ids": duplicates, "examples": str(examples)},
        )
    context.log.info(f"every call_id is stored once (~{rows:,} calls)")


@dg.job(
    name=AUDIT_JOB,
    description="The full-table call_id audit, weekly and on demand (`cdr-pipeline audit` too); "
    "it never blocks a load. A failed run names the duplicated ids.",
    tags={"cdr/trigger": "audit"},
)
def call_id_audit_job() -> None:
    call_id_audit()


weekly_call_id_audit = dg.ScheduleDefinition(
    name=AUDIT_SCHEDULE,
    cron_schedule="0 4 * * 0",  # Sunday, after the nightly loads
    job=call_id_audit_job,
    description="Every Sunday: is every call_id stored once in the whole `calls` table?",
)


def build_split_sensor(
    days_per_run: int, job: "UnresolvedAssetJobDefinition"
) -> dg.SensorDefinition:
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
