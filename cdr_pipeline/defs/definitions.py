"""The project's Dagster `Definitions`: what `dagster dev`, the schedule and the CLI all load."""

import dagster as dg

from cdr_pipeline.config import Settings
from cdr_pipeline.defs import maintenance
from cdr_pipeline.defs import privacy as privacy_defs
from cdr_pipeline.defs.analytics import build_alert_parts, build_report_asset, thresholds_for
from cdr_pipeline.defs.assets import build_landing_asset, build_q850_asset, build_warehouse_asset
from cdr_pipeline.defs.keys import (
    CALLS_KEY,
    MART_KEYS,
    Q850_KEY,
    RAW_KEY,
    REJECTS_KEY,
    REPORT_KEY,
    TYPED_KEY,
)
from cdr_pipeline.defs.realtime import build_realtime_definitions
from cdr_pipeline.defs.resources import CallrResource, WarehouseResource
from cdr_pipeline.defs.schedules import build_daily_schedule

DAILY_JOB = "daily_cdr_job"
REFERENCE_JOB = "reference_tables_job"
DAILY_ASSETS = (RAW_KEY, TYPED_KEY, CALLS_KEY, REJECTS_KEY, *MART_KEYS, REPORT_KEY)


def build_definitions(settings: Settings, simulator_api_key: str | None = None) -> dg.Definitions:
    """Definitions for `settings`; the Callr key is read from CALLR_API_KEY at run time.

    `simulator_api_key` is for the demo's built-in simulator only: a key given here is part of
    the resource's configuration, which Dagster stores, so a real key never goes this way.
    """
    partitions_def = dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(), timezone=settings.timezone
    )
    # A backfill runs `days_per_run` days per run; every daily asset shares the policy, so a
    # range's steps run in the same run.
    policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.days_per_run)
    alert_specs, alert_results = build_alert_parts(settings)
    assets = [
        build_landing_asset(partitions_def, policy),
        build_warehouse_asset(partitions_def, policy, alert_specs, alert_results),
        build_report_asset(thresholds_for(settings)),
        build_q850_asset(),
    ]
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.assets(*DAILY_ASSETS),
        description="Days of CDRs: fetch both directions, type, publish Parquet, load DuckDB, "
        "refresh the marts, render the last day's report. One day or a range per run.",
    )
    reference_job = dg.define_asset_job(
        REFERENCE_JOB,
        selection=dg.AssetSelection.assets(Q850_KEY),
        description="Static reference tables (ITU-T Q.850 causes).",
    )
    daily = dg.Definitions(
        assets=assets,
        jobs=[
            daily_job,
            reference_job,
            maintenance.rebuild_marts_job,
            maintenance.call_id_audit_job,
            privacy_defs.erase_number_job,
            privacy_defs.retention_job,
        ],
        # One process per run: a range's steps form a chain, so step subprocesses would only add
        # start-up time (seconds each); ranges run in parallel as separate runs.
        executor=dg.in_process_executor,
        schedules=[
            build_daily_schedule(
                DAILY_JOB,
                timezone=settings.timezone,
                first_day=settings.start_date,
                late_days=settings.late_days,
            ),
            maintenance.weekly_call_id_audit,
            privacy_defs.build_retention_schedule(
                settings.timezone, settings.raw_retention_days or settings.calls_retention_days
            ),
        ],
        sensors=[maintenance.build_split_sensor(settings.days_per_run, daily_job)],
        resources={
            "callr": CallrResource(
                base_url=settings.base_url,
                api_key=simulator_api_key or dg.EnvVar("CALLR_API_KEY"),
                account_sid=settings.account_sid,
                fetch_concurrency=settings.fetch_concurrency,
            ),
            "lake": WarehouseResource(
                data_dir=str(settings.data_dir),
                warehouse_path=str(settings.warehouse),
                lake_url=settings.lake_url,
                timezone=settings.timezone,
                naive_timezone=settings.naive_timezone,
                ner_causes=list(settings.ner_causes),
                privacy_key=(
                    dg.EnvVar("CDR_PRIVACY_KEY") if settings.privacy == "pseudonymise" else ""
                ),
                raw_retention_days=settings.raw_retention_days,
                calls_retention_days=settings.calls_retention_days,
            ),
        },
    )
    return dg.Definitions.merge(daily, build_realtime_definitions(settings))


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for `dagster dev` / `workspace.yaml`: settings from the environment."""
    return build_definitions(Settings.from_env())
