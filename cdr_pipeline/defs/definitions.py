"""The project's Dagster `Definitions`: what `dagster dev`, the schedule and the CLI all load."""

import dagster as dg

from cdr_pipeline.config import Settings
from cdr_pipeline.defs.analytics import ANALYTICS_ASSETS, build_analytics_assets
from cdr_pipeline.defs.assets import build_assets
from cdr_pipeline.defs.realtime import build_realtime_definitions
from cdr_pipeline.defs.resources import CallrResource, WarehouseResource
from cdr_pipeline.defs.schedules import build_daily_schedule

DAILY_JOB = "daily_cdr_job"
REFERENCE_JOB = "reference_tables_job"


def build_definitions(settings: Settings) -> dg.Definitions:
    """Definitions for `settings`; the Callr key is read from CALLR_API_KEY at run time."""
    partitions_def = dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(), timezone=settings.timezone
    )
    assets = build_assets(partitions_def)
    analytics, alert_checks = build_analytics_assets(partitions_def, settings)
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.assets(
            "raw_cdr_exports", "typed_calls", "calls", "call_rejects", *ANALYTICS_ASSETS
        ),
        description="One day of CDRs: fetch both directions, type, publish Parquet, load DuckDB.",
    )
    reference_job = dg.define_asset_job(
        REFERENCE_JOB,
        selection=dg.AssetSelection.assets("q850_causes"),
        description="Static reference tables (ITU-T Q.850 causes).",
    )
    daily = dg.Definitions(
        assets=[*assets, *analytics],
        asset_checks=alert_checks,
        jobs=[daily_job, reference_job],
        # One process per run: a day's steps form a chain, so step subprocesses would only add
        # start-up time (seconds each); days run in parallel as separate runs.
        executor=dg.in_process_executor,
        schedules=[
            build_daily_schedule(
                DAILY_JOB,
                timezone=settings.timezone,
                first_day=settings.start_date,
                late_days=settings.late_days,
            )
        ],
        resources={
            "callr": CallrResource(
                base_url=settings.base_url,
                api_key=dg.EnvVar("CALLR_API_KEY"),
                account_sid=settings.account_sid,
            ),
            "lake": WarehouseResource(
                data_dir=str(settings.data_dir),
                warehouse_path=str(settings.warehouse),
                timezone=settings.timezone,
            ),
        },
    )
    return dg.Definitions.merge(daily, build_realtime_definitions(settings))


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for `dagster dev` / `workspace.yaml`: settings from the environment."""
    return build_definitions(Settings.from_env())
