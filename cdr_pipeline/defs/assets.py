"""Dagster assets: raw Callr exports → typed Parquet → DuckDB tables and marts, by day.

Every daily asset runs a *range* of days per run (`BackfillPolicy.multi_run`): a backfill of a
year is a dozen runs, not 365, and the schedule's nightly window is one run. Each day keeps its
own status and metadata in the UI (`context.add_asset_metadata(..., partition_key=day)`). A day
that fails does not stop the others: its step records the days that succeeded (their own
materialisations) and then fails naming the failed days; the runner and the
`split_failed_ranges` sensor then run the range's other days again without them.

Asset bodies only orchestrate: read the days, call the core (`cdr_pipeline.days`,
`cdr_pipeline.warehouse_days`), report (`defs/metadata.py`).
"""

import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from cdr_pipeline import days as core
from cdr_pipeline import marts, q850, warehouse
from cdr_pipeline.defs.keys import (
    CALLS_KEY,
    MART_KEYS,
    Q850_KEY,
    RAW_KEY,
    RECONCILE_CHECK,
    REJECTS_KEY,
    TYPED_KEY,
    UNIQUE_CHECK,
    WRITER_POOL,
)
from cdr_pipeline.defs.metadata import (
    Metadata,
    column_schema,
    landed_metadata,
    mart_schema,
    reconcile_result,
    typed_metadata,
    warehouse_metadata,
)
from cdr_pipeline.defs.ranges import FAILED_DAYS_KEY
from cdr_pipeline.defs.resources import CallrResource, WarehouseResource
from cdr_pipeline.schema import CALL_COLUMNS, Q850_COLUMNS, REJECT_COLUMNS, WAREHOUSE_COLUMNS
from cdr_pipeline.warehouse_days import load_warehouse_days

# `calls` is loaded every day at 00:30 by the schedule: WARN an hour after a load is due and did
# not happen, FAIL an hour later, so a missed day shows on the asset in the UI.
CALLS_FRESHNESS = dg.FreshnessPolicy.time_window(
    warn_window=dt.timedelta(hours=25), fail_window=dt.timedelta(hours=26)
)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days a run materialises: one, or a range."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def record_days(
    context: dg.AssetExecutionContext,
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Metadata]],
) -> None:
    """Attach each day's own metadata to its partition's materialisation."""
    for key, by_day in metadata.items():
        if key not in context.selected_asset_keys:
            continue
        for day, values in by_day.items():
            context.add_asset_metadata(dict(values), asset_key=key, partition_key=day.isoformat())


def fail_days(
    context: dg.AssetExecutionContext,
    failures: Mapping[dt.date, str],
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Metadata]],
) -> dg.Failure:
    """Record the days that succeeded as materialised, and the failure naming the others.

    Dagster can only mark a whole run's range as failed; the days that did succeed get their
    own materialisation events here, so the UI shows exactly which days failed.
    """
    for key, by_day in metadata.items():
        if key not in context.selected_asset_keys:
            continue
        for day, values in by_day.items():
            if day not in failures:
                context.log_event(
                    dg.AssetMaterialization(key, partition=day.isoformat(), metadata=dict(values))
                )
    lines = [f"{day}: {reason}" for day, reason in sorted(failures.items())]
    for line in lines:
        context.log.error(line)
    return dg.Failure(
        description=f"{len(failures)} day(s) failed: " + "; ".join(lines),
        metadata={FAILED_DAYS_KEY: ",".join(d.isoformat() for d in sorted(failures))},
        allow_retries=True,
    )


def build_landing_asset(
    partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy
) -> dg.AssetsDefinition:
    """`raw_cdr_exports` and `typed_calls`: one step fetching and typing a range of days."""

    @dg.multi_asset(
        name="daily_exports",
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        can_subset=True,
        specs=[
            dg.AssetSpec(
                RAW_KEY,
                group_name="callr",
                kinds={"http", "csv"},
                description="Each day's CDR export from Callr, both directions, landed byte "
                "for byte.",
            ),
            dg.AssetSpec(
                TYPED_KEY,
                deps=[RAW_KEY],
                group_name="warehouse",
                kinds={"polars", "parquet"},
                description="Typed calls (Hive-style Parquet by call_date) and rejected rows, "
                "per day.",
                metadata={"dagster/column_schema": column_schema(CALL_COLUMNS)},
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILE_CHECK,
                asset=TYPED_KEY,
                blocking=True,
                description="raw data rows = typed + rejected + collapsed duplicates, every day",
            )
        ],
    )
    def daily_exports(
        context: dg.AssetExecutionContext, callr: CallrResource, lake: WarehouseResource
    ):
        days = partition_days(context)
        fetch = RAW_KEY in context.selected_asset_keys  # else: type the landed files only
        with callr.client() if fetch else contextlib.nullcontext() as client:
            result = core.land_days(
                days,
                lake.layout,
                lake.timezone,
                client=client,
                typing=TYPED_KEY in context.selected_asset_keys,
                concurrency=callr.fetch_concurrency,
                naive_timezone=lake.naive_timezone,
                rules=lake.privacy_rules(),
                first_day_kept=lake.first_day_kept(),
            )
        context.log.info(
            f"{len(result.typed) or len(result.landed)} of {len(days)} day(s) landed"
            + (
                f"; failed: {', '.join(map(str, sorted(result.failures)))}"
                if result.failures
                else ""
            )
        )
        metadata = {
            RAW_KEY: {d: landed_metadata(x) for d, x in result.landed.items()},
            TYPED_KEY: {d: typed_metadata(x) for d, x in result.typed.items()},
        }
        # A day whose counts do not reconcile fails alone, like a day that could not be fetched.
        failures = dict(result.failures) | {
            typed.day: f"raw rows do not reconcile: {reconcile_result([typed]).description}"
            for typed in result.typed.values()
            if not typed.reconciled
        }
        if failures:
            raise fail_days(context, failures, metadata)
        record_days(context, metadata)
        if TYPED_KEY in context.selected_asset_keys:
            yield reconcile_result(result.typed.values())
        for key in (RAW_KEY, TYPED_KEY):
            if key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)

    return daily_exports


def build_warehouse_asset(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy,
    alert_specs: Sequence[dg.AssetCheckSpec],
    alert_results,
) -> dg.AssetsDefinition:
    """`calls`, `call_rejects` and the marts: one DuckDB step per range (the writer pool)."""
    mart_specs = [
        dg.AssetSpec(
            key,
            deps=[CALLS_KEY],
            group_name="marts",
            kinds={"duckdb"},
            description=marts.MART_DESCRIPTIONS[key.path[-1]]
            + " A DuckDB table, recomputed for the days each load changes.",
            metadata={"dagster/column_schema": mart_schema(key.path[-1])},
        )
        for key in MART_KEYS
    ]

    @dg.multi_asset(
        name="warehouse_tables",
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        pool=WRITER_POOL,
        can_subset=True,
        specs=[
            dg.AssetSpec(
                CALLS_KEY,
                deps=[TYPED_KEY],
                group_name="warehouse",
                kinds={"duckdb"},
                description="One row per call (call_id unique), typed as the contract says.",
                metadata={"dagster/column_schema": column_schema(CALL_COLUMNS + WAREHOUSE_COLUMNS)},
                freshness_policy=CALLS_FRESHNESS,
            ),
            dg.AssetSpec(
                REJECTS_KEY,
                deps=[TYPED_KEY],
                group_name="warehouse",
                kinds={"duckdb"},
                description="Rows that could not be typed, with the reason; never dropped.",
                metadata={"dagster/column_schema": column_schema(REJECT_COLUMNS)},
            ),
            *mart_specs,
        ],
        check_specs=[
            dg.AssetCheckSpec(
                UNIQUE_CHECK,
                asset=CALLS_KEY,
                blocking=True,
                description="call_id occurs once among the call dates the load read and wrote",
            ),
            *alert_specs,
        ],
    )
    def warehouse_tables(context: dg.AssetExecutionContext, lake: WarehouseResource):
        days = partition_days(context)
        selected = context.selected_asset_keys
        started = time.perf_counter()
        with lake.connect() as con:
            waited = time.perf_counter() - started
            load = load_warehouse_days(
                con,
                lake.layout,
                days,
                settings=lake.mart_settings(),
                load_calls=CALLS_KEY in selected or REJECTS_KEY in selected,
                refresh=any(k in selected for k in MART_KEYS),
                first_day_kept=lake.first_day_kept(),
                # The `q850_causes` asset does the same alone.
                on_q850_replaced=lambda rows: context.log_event(
                    dg.AssetMaterialization(Q850_KEY, metadata={"dagster/row_count": rows})
                ),
            )
            checks = list(alert_results(con, days, context.selected_asset_check_keys))
        elapsed = time.perf_counter() - started
        result = load.result
        metadata = warehouse_metadata(load, waited, lake.mart_settings().ner_causes)
        in_run = set(days)
        record_days(
            context, {k: {d: v for d, v in m.items() if d in in_run} for k, m in metadata.items()}
        )
        _record_neighbours(context, partitions_def, metadata, result.refreshed_days, in_run)
        context.log.info(
            f"{len(result.loads)} day(s) loaded, marts of {len(result.refreshed_days)} day(s) "
            f"refreshed in {elapsed:.2f} s (window {result.window})"
        )
        if CALLS_KEY in selected:
            yield dg.AssetCheckResult(
                check_name=UNIQUE_CHECK,
                asset_key=CALLS_KEY,
                passed=result.duplicates == 0,
                metadata={
                    "duplicate_call_ids": result.duplicates,
                    "examples": str(result.duplicate_examples),
                    "window": str(result.window),
                    "warehouse_bytes": Path(lake.warehouse_path).stat().st_size,
                },
            )
        yield from checks
        for key in (CALLS_KEY, REJECTS_KEY, *MART_KEYS):
            if key in selected:
                yield dg.MaterializeResult(asset_key=key)

    return warehouse_tables


def _record_neighbours(
    context: dg.AssetExecutionContext,
    partitions_def: dg.PartitionsDefinition,
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Metadata]],
    refreshed: Iterable[dt.date],
    in_run: set[dt.date],
) -> None:
    """Days outside the run whose marts the loads changed (a call in progress across midnight,
    a call that moved day) get a materialisation of their own, saying why."""
    for day in sorted(set(refreshed) - in_run):
        has_rows = any(metadata[key][day].get("dagster/row_count") for key in MART_KEYS)
        if not has_rows or not partitions_def.has_partition_key(day.isoformat()):
            continue  # a day with no calls (not loaded yet): nothing of it changed
        for key in MART_KEYS:
            if key in context.selected_asset_keys:
                context.log_event(
                    dg.AssetMaterialization(
                        key,
                        partition=day.isoformat(),
                        metadata={
                            **metadata[key][day],
                            "refreshed_by_days": ", ".join(sorted(d.isoformat() for d in in_run)),
                        },
                    )
                )


def build_q850_asset() -> dg.AssetsDefinition:
    """The reference table of ITU-T Q.850 causes (unpartitioned)."""

    @dg.asset(
        group_name="warehouse",
        kinds={"duckdb"},
        pool=WRITER_POOL,
        code_version=q850.TABLE_VERSION,
        description="Every ITU-T Q.850 cause code with its name and class.",
        metadata={"dagster/column_schema": column_schema(Q850_COLUMNS)},
    )
    def q850_causes(lake: WarehouseResource) -> dg.MaterializeResult:
        with lake.connect() as con:
            rows = warehouse.replace_q850(con, q850.q850_frame())
        return dg.MaterializeResult(metadata={"dagster/row_count": rows})

    return q850_causes
