"""Dagster: real-time CDRs from the landing store into `calls`, and their check against the export.

- `realtime_events_sensor` (every few seconds) looks at the landing store the receiver writes.
  When events landed beyond what `realtime_calls` last reported loading, and no real-time run is
  queued or running, it requests a run of `realtime_job`. Its cursor remembers the last `seq`
  requested and how many times, so a failed run is retried a bounded number of times even when
  no new event arrives.
- `realtime_calls` loads everything landed since the warehouse's watermark, with the export's
  normaliser, in one DuckDB transaction (`cdr_pipeline.realtime`). It shares the
  `duckdb_writer` pool with the daily loads, so it never writes DuckDB at the same time as they do.
- `realtime_matches_export` (WARN, non-blocking) runs daily after the export loads
  (`realtime_reconciliation_schedule`): calls seen in real time that the export has not
  confirmed `CDR_REALTIME_RECONCILE_DAYS` days later, and export calls never seen in real time.
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from cdr_pipeline import marts, realtime
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.keys import REALTIME_KEY, WRITER_POOL
from cdr_pipeline.defs.metadata import Metadata
from cdr_pipeline.defs.resources import WarehouseResource
from cdr_pipeline.landing import landing_path, open_reader

REALTIME_JOB = "realtime_job"
RECONCILE_JOB = "realtime_reconciliation_job"
REALTIME_SENSOR = "realtime_events_sensor"
RECONCILE_CHECK = "realtime_matches_export"
RECONCILE_SCHEDULE = "realtime_reconciliation_schedule"
SENSOR_INTERVAL_S = 5
MAX_ATTEMPTS = 3  # runs requested for the same landed `seq` before the sensor waits for news
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_realtime_definitions(settings: Settings) -> dg.Definitions:
    """The real-time asset, check, jobs, sensor and schedule, for `settings`."""
    store_path = landing_path(settings.data_dir)
    reconcile_days = settings.realtime_reconcile_days

    @dg.asset(
        key=REALTIME_KEY,
        group_name="realtime",
        kinds={"sqlite", "duckdb"},
        pool=WRITER_POOL,
        description="Calls delivered in real time (Callr webhooks, Actions pushes), typed by the "
        "export's normaliser and upserted into `calls` (an export row always wins); bad CDRs "
        "go to `call_rejects`. Materialised by `realtime_events_sensor`.",
    )
    def realtime_calls(
        context: dg.AssetExecutionContext, lake: WarehouseResource
    ) -> dg.MaterializeResult:
        with lake.connect() as con:
            result = realtime.load_landed_events(
                con,
                store_path,
                lake.layout,
                timezone=lake.timezone,
                naive_timezone=lake.naive_timezone,
                rules=lake.privacy_rules(),
            )
            # The days the upsert changed: their marts are recomputed now, like after a load.
            refreshed = marts.refresh_pending(con, lake.mart_settings())
        load = result.load
        if load is None:
            context.log.info(f"no landed event after seq {result.through_seq}: nothing to load")
        else:
            context.log.info(
                f"landed events {result.watermark_before + 1}..{result.through_seq}: "
                f"{result.events} read, {load.calls_written} calls written, "
                f"{load.calls_kept_export} kept from the export, {load.rejects} rejects"
            )
        metadata: Metadata = {
            "landing_store_id": result.store_id or "none",
            "loaded_through_seq": result.through_seq,
            "watermark_before": result.watermark_before,
            "events": result.events,
            "superseded_deliveries": result.superseded,
            "unknown_fields": ", ".join(result.unknown_fields) or "none",
            "marts_refreshed_days": ", ".join(d.isoformat() for d in refreshed) or "none",
        }
        if load is not None:
            metadata |= {
                "incoming_calls": load.incoming_calls,
                "calls_written": load.calls_written,
                "calls_kept_from_export": load.calls_kept_export,
                "rejects": load.rejects,
                "dagster/row_count": load.table_rows,
            }
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset_check(
        asset=REALTIME_KEY,
        name=RECONCILE_CHECK,
        blocking=False,
        pool=WRITER_POOL,
        description=f"WARN when calls seen in real time are missing from the export "
        f"{reconcile_days} days later, or export calls were never seen in real time "
        "(from the first day real time was used).",
    )
    def realtime_matches_export(lake: WarehouseResource) -> dg.AssetCheckResult:
        through = lake.today() - dt.timedelta(days=reconcile_days)
        if not Path(lake.warehouse_path).exists():
            return dg.AssetCheckResult(passed=True, description="no warehouse yet")
        with lake.connect(read_only=True) as con:
            outcome = realtime.reconcile(con, through)
        return reconciliation_result(outcome)

    realtime_job = dg.define_asset_job(
        REALTIME_JOB,
        selection=dg.AssetSelection.assets(REALTIME_KEY).without_checks(),
        description="Load the events the receiver landed since the last load into `calls`.",
        tags={"cdr/trigger": "realtime"},
    )
    reconcile_job = dg.define_asset_job(
        RECONCILE_JOB,
        selection=dg.AssetSelection.checks(realtime_matches_export),
        description="Compare real-time deliveries with the daily exports.",
    )

    @dg.sensor(
        name=REALTIME_SENSOR,
        job=realtime_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a `realtime_job` run when the receiver has landed new events.",
    )
    def realtime_events_sensor(context: dg.SensorEvaluationContext):
        return evaluate_landing(context, store_path)

    reconcile_schedule = dg.ScheduleDefinition(
        name=RECONCILE_SCHEDULE,
        cron_schedule="0 3 * * *",  # after the 00:30 daily loads
        execution_timezone=settings.timezone,
        job=reconcile_job,
        description="Daily: real-time calls vs the export, "
        f"{reconcile_days} days back and earlier.",
    )
    return dg.Definitions(
        assets=[realtime_calls],
        asset_checks=[realtime_matches_export],
        jobs=[realtime_job, reconcile_job],
        sensors=[realtime_events_sensor],
        schedules=[reconcile_schedule],
    )


def _loaded_through(instance: dg.DagsterInstance, store_id: str) -> int:
    """The `seq` the last `realtime_calls` materialisation reported for this landing store."""
    event = instance.get_latest_materialization_event(REALTIME_KEY)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return 0
    metadata = materialization.metadata
    store = metadata.get("landing_store_id")
    through = metadata.get("loaded_through_seq")
    if store is None or through is None or store.value != store_id:
        return 0
    return int(through.value)  # type: ignore[arg-type]


def evaluate_landing(context: dg.SensorEvaluationContext, store_path: Path):
    """The sensor's decision: a `RunRequest`, or a `SkipReason` saying why not."""
    with open_reader(store_path) as store:
        if store is None:
            return dg.SkipReason(f"no landing store at {store_path} yet (start the receiver)")
        store_id, landed = store.store_id, store.max_seq()
    loaded = _loaded_through(context.instance, store_id)
    if landed <= loaded:
        return dg.SkipReason(f"all {landed} landed events are loaded")
    active = context.instance.get_runs(
        dg.RunsFilter(job_name=REALTIME_JOB, statuses=_ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(f"run {active[0].run_id[:8]} is loading; events up to {landed} wait")
    cursor = json.loads(context.cursor) if context.cursor else {}
    same = cursor.get("store") == store_id and cursor.get("seq") == landed
    attempt = cursor.get("attempt", 0) + 1 if same else 1
    if attempt > MAX_ATTEMPTS:
        return dg.SkipReason(
            f"{MAX_ATTEMPTS} runs for events up to {landed} did not load them (see their logs); "
            "waiting for new events or a manual materialisation of realtime_calls"
        )
    context.update_cursor(json.dumps({"store": store_id, "seq": landed, "attempt": attempt}))
    return dg.RunRequest(
        run_key=f"realtime-{store_id[:8]}-{landed}-{attempt}",
        tags={"cdr/landed_through_seq": str(landed), "cdr/loaded_through_seq": str(loaded)},
    )


def reconciliation_result(outcome: realtime.Reconciliation) -> dg.AssetCheckResult:
    """The check's result: WARN when either side has calls the other lacks."""

    def examples(rows: list[tuple[int, dt.date]]) -> str:
        return ", ".join(f"{call_id} ({day})" for call_id, day in rows) or "none"

    description = (
        f"call days up to {outcome.through_day}: "
        f"{outcome.realtime_missing_from_export} seen in real time but not in the export, "
        f"{outcome.export_missing_from_realtime} in the export but never seen in real time"
    )
    if outcome.days_without_export:
        description += "; no export loaded for " + ", ".join(
            d.isoformat() for d in outcome.days_without_export
        )
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "through_day": outcome.through_day.isoformat(),
            "first_realtime_day": str(outcome.first_realtime_day or "none"),
            "realtime_missing_from_export": outcome.realtime_missing_from_export,
            "export_missing_from_realtime": outcome.export_missing_from_realtime,
            "realtime_missing_examples": examples(outcome.realtime_examples),
            "export_missing_examples": examples(outcome.export_examples),
            "days_without_export": ", ".join(d.isoformat() for d in outcome.days_without_export)
            or "none",
        },
    )
