"""Dagster assets: raw Callr exports → typed Parquet → DuckDB tables and marts, by day.

Every daily asset runs a *range* of days per run (`BackfillPolicy.multi_run`): a backfill of a
year is a dozen runs, not 365, and the schedule's nightly window is one run. Each day keeps its
own status and metadata in the UI (`context.add_asset_metadata(..., partition_key=day)`). A day
that fails does not stop the others: its step records the days that succeeded (their own
materialisations) and then fails naming the failed days; the runner and the
`split_failed_ranges` sensor then run the range's other days again without them.

Asset bodies only orchestrate: read the days, call the core (`cdr_pipeline.days`), report.
"""

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import polars as pl

from cdr_pipeline import days as core
from cdr_pipeline import marts, q850, warehouse
from cdr_pipeline.defs.ranges import FAILED_DAYS_KEY
from cdr_pipeline.defs.resources import CallrResource, WarehouseResource
from cdr_pipeline.schema import CALL_COLUMNS, REJECT_COLUMNS, WAREHOUSE_COLUMNS

WRITER_POOL = "duckdb_writer"
RECONCILE_CHECK = "raw_rows_reconcile"
UNIQUE_CHECK = "call_id_unique"
RAW_KEY = dg.AssetKey("raw_cdr_exports")
TYPED_KEY = dg.AssetKey("typed_calls")
CALLS_KEY = dg.AssetKey("calls")
REJECTS_KEY = dg.AssetKey("call_rejects")
MART_KEYS = tuple(dg.AssetKey(m) for m in marts.MART_TABLES)
Q850_KEY = dg.AssetKey("q850_causes")
# `calls` is loaded every day at 00:30 by the schedule: WARN an hour after a load is due and did
# not happen, FAIL an hour later, so a missed day shows on the asset in the UI.
CALLS_FRESHNESS = dg.FreshnessPolicy.time_window(
    warn_window=dt.timedelta(hours=25), fail_window=dt.timedelta(hours=26)
)


def column_schema(columns: tuple) -> dg.TableSchema:
    """The Dagster column schema of a table, from the one schema definition."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.duckdb_type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in columns
        ]
    )


def mart_schema(mart: str) -> dg.TableSchema:
    """The Dagster column schema of a mart."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, sql_type, description=text)
            for name, sql_type, text in marts.MART_COLUMNS[mart]
        ]
    )


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days a run materialises: one, or a range."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def record_days(
    context: dg.AssetExecutionContext,
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Mapping[str, object]]],
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
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Mapping[str, object]]],
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


def markdown_table(frame: pl.DataFrame, empty: str = "(no rows)") -> str:
    """A small frame as a Markdown table, for Dagster metadata the UI renders."""
    if frame.is_empty():
        return empty
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cols=-1,
        fmt_str_lengths=40,
        float_precision=4,
    ):
        return str(frame)


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else "none"


def _landed_metadata(landed: core.LandedDay) -> dict[str, object]:
    metadata: dict[str, object] = {
        "window_start": landed.window[0].isoformat(),
        "window_end": landed.window[1].isoformat(),
        "dagster/row_count": sum(landed.rows.values()),
        "bytes": sum(d.bytes for d in landed.downloads),
        "fetch_s": round(landed.fetch_s, 3),
    }
    for download in landed.downloads:
        direction = download.direction
        metadata |= {
            f"{direction}_path": dg.MetadataValue.path(landed.locations[direction]),
            f"{direction}_bytes": download.bytes,
            f"{direction}_rows": landed.rows[direction],
            f"{direction}_sha256": download.sha256,
            f"{direction}_request_s": round(download.duration_s, 3),
            f"{direction}_retries": download.attempts - 1,
        }
    return metadata


def _typed_metadata(typed: core.TypedDay) -> dict[str, object]:
    stats = typed.stats
    return {
        "dagster/row_count": typed.typed_rows,
        "raw_rows": stats.raw_rows,
        "rejected_rows": typed.rejected_rows,
        "duplicate_rows": stats.duplicate_rows,
        "erased_rows": stats.erased_rows,
        "unknown_columns": ", ".join(stats.unknown_columns) or "none",
        "min_started_at": _iso(stats.min_started_at),
        "max_started_at": _iso(stats.max_started_at),
        "files": list(typed.published),
        "parquet_bytes": typed.parquet_bytes,
        "normalize_s": round(typed.normalize_s, 3),
        "preview": dg.MetadataValue.md(markdown_table(typed.preview)),
    }


def _reconcile_result(typed: Iterable[core.TypedDay]) -> dg.AssetCheckResult:
    """raw = typed + rejected + duplicates for every day typed by the run."""
    typed = list(typed)
    broken = [t for t in typed if not t.reconciled]
    metadata: dict[str, object] = {
        "days": len(typed),
        "raw_rows": sum(t.stats.raw_rows for t in typed),
        "typed_rows": sum(t.typed_rows for t in typed),
        "rejected_rows": sum(t.rejected_rows for t in typed),
        "duplicate_rows": sum(t.stats.duplicate_rows for t in typed),
        "erased_rows": sum(t.stats.erased_rows for t in typed),
    }
    return dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=TYPED_KEY,
        passed=not broken,
        metadata=metadata,
        description="; ".join(
            f"{t.day}: {t.stats.raw_rows} raw rows != {t.typed_rows} typed + {t.rejected_rows} "
            f"rejected + {t.stats.duplicate_rows} duplicates + {t.stats.erased_rows} erased"
            for t in broken
        )
        or None,
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
        fetch = RAW_KEY in context.selected_asset_keys
        with callr.client() if fetch else _no_client() as client:
            result = core.land_days(
                days,
                lake.lake,
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
            RAW_KEY: {d: _landed_metadata(x) for d, x in result.landed.items()},
            TYPED_KEY: {d: _typed_metadata(x) for d, x in result.typed.items()},
        }
        # A day whose counts do not reconcile fails alone, like a day that could not be fetched.
        failures = dict(result.failures) | {
            typed.day: f"raw rows do not reconcile: {_reconcile_result([typed]).description}"
            for typed in result.typed.values()
            if not typed.reconciled
        }
        if failures:
            raise fail_days(context, failures, metadata)
        record_days(context, metadata)
        if TYPED_KEY in context.selected_asset_keys:
            yield _reconcile_result(result.typed.values())
        for key in (RAW_KEY, TYPED_KEY):
            if key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)

    return daily_exports


class _no_client:
    """A stand-in for `callr.client()` when nothing is fetched (typing the landed files only)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


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
            # The reference table, created or corrected here when a release changes it, so a
            # first load needs no run of its own (the `q850_causes` asset does the same alone).
            if not warehouse.q850_is_current(con):
                rows = warehouse.replace_q850(con, q850.q850_frame())
                context.log_event(
                    dg.AssetMaterialization(Q850_KEY, metadata={"dagster/row_count": rows})
                )
            result = core.load_days(
                con,
                lake.lake,
                days,
                settings=lake.mart_settings(),
                load_calls=CALLS_KEY in selected or REJECTS_KEY in selected,
                refresh=any(k in selected for k in MART_KEYS),
                first_day_kept=lake.first_day_kept(),
            )
            shown = sorted({*days, *result.refreshed_days})
            mart_counts = _mart_counts(con, shown)
            kpis = con.sql(
                "SELECT * FROM daily_kpis WHERE call_date BETWEEN ? AND ? "
                "ORDER BY call_date, direction",
                params=[shown[0], shown[-1]],
            ).pl()
            checks = list(alert_results(con, days, context.selected_asset_check_keys))
        elapsed = time.perf_counter() - started
        metadata: dict[dg.AssetKey, dict[dt.date, dict[str, object]]] = {
            CALLS_KEY: {},
            REJECTS_KEY: {},
        }
        for day, stats in result.loads.items():
            metadata[CALLS_KEY][day] = {
                "dagster/row_count": stats.partition_calls,
                "incoming_calls": stats.incoming_calls,
                "calls_written": stats.calls_written,
                "calls_kept_from_other_partitions": stats.calls_kept_elsewhere,
                "calls_removed": stats.calls_removed,
                "calls_restored": stats.calls_restored,
                "window": f"{stats.window.first}..{stats.window.last}" if stats.window else "none",
                # Evidence that the load read a few days of `calls`, not the whole table.
                "calls_row_groups_read": stats.calls_read.row_groups_read,
                "calls_row_groups_total": stats.calls_read.row_groups_total,
                "load_s": round(result.seconds[day], 3),
                "lock_wait_s": round(waited, 3),
            }
            metadata[REJECTS_KEY][day] = {
                "dagster/row_count": stats.rejects,
                "partition_rejects": stats.rejects,
            }
        for key in MART_KEYS:
            metadata[key] = {
                day: {"dagster/row_count": mart_counts[key.path[-1]].get(day, 0)} for day in shown
            }
        for day in shown:
            metadata[MART_KEYS[0]][day] |= _kpi_metadata(
                kpis.filter(pl.col("call_date") == day), lake.mart_settings().ner_causes
            )
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


def _mart_counts(con, days: Sequence[dt.date]) -> dict[str, dict[dt.date, int]]:
    """Rows per day of each mart, for `days` (one query per mart)."""
    counts: dict[str, dict[dt.date, int]] = {}
    for mart in marts.MART_TABLES:
        rows = con.execute(
            f"SELECT call_date, count(*) FROM {mart} WHERE call_date BETWEEN ? AND ? GROUP BY 1",
            [days[0], days[-1]],
        ).fetchall()
        counts[mart] = {day: int(n) for day, n in rows}
    return counts


def _record_neighbours(
    context: dg.AssetExecutionContext,
    partitions_def: dg.PartitionsDefinition,
    metadata: Mapping[dg.AssetKey, Mapping[dt.date, Mapping[str, object]]],
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


def _number(value: float | None) -> dg.MetadataValue:
    if value is None:
        return dg.MetadataValue.text("none")
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(round(float(value), 6))


def _kpi_metadata(kpis: pl.DataFrame, ner_causes: tuple[int, ...]) -> dict[str, object]:
    """The day's headline KPIs per direction (numbers the UI plots across partitions)."""
    metadata: dict[str, object] = {"ner_causes": ", ".join(str(c) for c in ner_causes)}
    for row in kpis.iter_rows(named=True):
        direction = row["direction"]
        for name in ("calls", "asr", "ner", "acd_s", "billed_minutes", "peak_concurrent_calls"):
            metadata[f"{direction}_{name}"] = _number(row[name])
        metadata[f"{direction}_billing_debit"] = _number(float(row["billing_debit"]))
    metadata["kpis"] = dg.MetadataValue.md(
        markdown_table(kpis.drop("call_date"), "(no calls on this day)")
    )
    return metadata


def build_q850_asset() -> dg.AssetsDefinition:
    """The reference table of ITU-T Q.850 causes (unpartitioned)."""

    @dg.asset(
        group_name="warehouse",
        kinds={"duckdb"},
        pool=WRITER_POOL,
        code_version=q850.TABLE_VERSION,
        description="Every ITU-T Q.850 cause code with its name and class.",
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn("cause_code", "SMALLINT"),
                    dg.TableColumn("cause_name", "VARCHAR"),
                    dg.TableColumn("cause_class", "VARCHAR"),
                ]
            )
        },
    )
    def q850_causes(lake: WarehouseResource) -> dg.MaterializeResult:
        with lake.connect() as con:
            rows = warehouse.replace_q850(con, q850.q850_frame())
        return dg.MaterializeResult(metadata={"dagster/row_count": rows})

    return q850_causes
