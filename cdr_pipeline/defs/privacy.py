"""Dagster: the erasure of a number (`erase_number_job`) and the retention of raw data and,
optionally, of calls (`retention_job`, daily by `daily_retention`). README "Privacy" says what
they do."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from cdr_pipeline import erasure, privacy, retention
from cdr_pipeline.defs.keys import CALLS_KEY, RAW_KEY, WRITER_POOL
from cdr_pipeline.defs.resources import WarehouseResource
from cdr_pipeline.landing import landing_path

ERASE_JOB = "erase_number_job"
RETENTION_JOB = "retention_job"
RETENTION_SCHEDULE = "daily_retention"


class EraseConfig(dg.Config):
    """Which number to erase: a request written by `cdr-pipeline erase` (the number then never
    enters Dagster's storage), or the number itself, typed in the UI's launchpad (it is then
    kept in this run's config in Dagster's storage)."""

    request: str = Field(default="", description="request id written by `cdr-pipeline erase`")
    number: str = Field(default="", description="the number (kept in the run's config)")


@dg.op(
    pool=WRITER_POOL,
    description="Remove a number's calls from every copy and add it to the erasure list.",
)
def erase_number(
    context: dg.OpExecutionContext, config: EraseConfig, lake: WarehouseResource
) -> None:
    data_dir = Path(lake.data_dir)
    try:
        number = erasure.take_request(data_dir, config.request) if config.request else config.number
        report = erasure.erase_number(
            number,
            lake=lake.layout,
            warehouse_path=Path(lake.warehouse_path),
            landing_file=landing_path(data_dir),
            key=lake.privacy_key or None,
            settings=lake.mart_settings(),
            lock_wait_s=lake.lock_wait_s,
        )
    except privacy.ErasureError as error:
        raise dg.Failure(description=str(error)) from None
    for line in report.lines():
        context.log.info(line)
    context.log_event(
        dg.AssetObservation(
            CALLS_KEY,
            metadata={
                "erased_number_hash": report.number_hash,
                **{place.replace(" ", "_"): n for place, n in report.changes.items()},
            },
        )
    )


@dg.job(
    name=ERASE_JOB,
    description="Erase one phone number from raw files, Parquet, DuckDB (tables and marts), the "
    "snapshot and the real-time landing store, and keep it out of later loads. "
    "`cdr-pipeline erase --number` runs it.",
    tags={"cdr/trigger": "erase"},
)
def erase_number_job() -> None:
    erase_number()


@dg.op(description="Delete raw exports and landed events older than CDR_RAW_RETENTION_DAYS.")
def delete_expired_raw(context: dg.OpExecutionContext, lake: WarehouseResource) -> None:
    if lake.raw_retention_days is None:
        context.log.info("CDR_RAW_RETENTION_DAYS is not set: raw data is kept")
        return
    data_dir = Path(lake.data_dir)
    report = retention.apply_raw_retention(
        lake.layout,
        landing_path(data_dir),
        retention_days=lake.raw_retention_days,
        timezone=lake.timezone,
        today=lake.today(),
    )
    context.log.info(
        f"kept from {report.horizon}: deleted {len(report.raw_files)} raw file(s) and "
        f"{report.landed_events} landed event(s)"
    )
    context.log_event(
        dg.AssetObservation(
            RAW_KEY,
            metadata={
                "retention_days": lake.raw_retention_days,
                "first_day_kept": report.horizon.isoformat(),
                "deleted_raw_files": len(report.raw_files),
                "deleted_raw_paths": "\n".join(
                    str(p.relative_to(data_dir)) for p in report.raw_files
                )
                or "none",
                "deleted_landed_events": report.landed_events,
            },
        )
    )


@dg.op(
    pool=WRITER_POOL,
    description="Delete calls, rejects, mart rows and Parquet older than CDR_CALLS_RETENTION_DAYS.",
)
def delete_expired_calls(context: dg.OpExecutionContext, lake: WarehouseResource) -> None:
    first_day_kept = lake.first_day_kept()
    if first_day_kept is None:
        context.log.info("CDR_CALLS_RETENTION_DAYS is not set: calls are kept")
        return
    with lake.connect() as con:
        report = retention.apply_calls_retention(con, lake.layout, first_day_kept)
    context.log.info(
        f"calls kept from {first_day_kept}: deleted {report.rows} row(s) and "
        f"{len(report.parquet_files)} Parquet file(s)"
    )
    context.log_event(
        dg.AssetObservation(
            CALLS_KEY,
            metadata={
                "retention_days": lake.calls_retention_days,
                "first_day_kept": first_day_kept.isoformat(),
                **{f"deleted_{table}": rows for table, rows in report.rows.items()},
                "deleted_parquet_files": len(report.parquet_files),
            },
        )
    )


@dg.job(
    name=RETENTION_JOB,
    description="Delete raw exports and real-time landed events older than "
    "CDR_RAW_RETENTION_DAYS, and calls older than CDR_CALLS_RETENTION_DAYS (nothing for a "
    "setting that is not set).",
    tags={"cdr/trigger": "retention"},
)
def retention_job() -> None:
    delete_expired_raw()
    delete_expired_calls()


def build_retention_schedule(timezone: str, retention_days: int | None) -> dg.ScheduleDefinition:
    """Daily at 03:00 in CDR_TIMEZONE, after the nightly load; on by default when
    a retention is set."""
    return dg.ScheduleDefinition(
        name=RETENTION_SCHEDULE,
        cron_schedule="0 3 * * *",
        execution_timezone=timezone,
        job=retention_job,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if retention_days
        else dg.DefaultScheduleStatus.STOPPED,
        description="Every day: delete what is older than CDR_RAW_RETENTION_DAYS / "
        "CDR_CALLS_RETENTION_DAYS.",
    )
