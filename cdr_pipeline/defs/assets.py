"""Dagster assets: raw Callr exports → typed Parquet → DuckDB tables, one day per partition.

Asset bodies only orchestrate: read the partition, call the core, report metadata.
"""

import datetime as dt
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from cdr_pipeline import normalize, q850, warehouse
from cdr_pipeline.config import day_window
from cdr_pipeline.defs.resources import CallrResource, WarehouseResource, partition_date
from cdr_pipeline.schema import CALL_COLUMNS, DIRECTIONS, REJECT_COLUMNS, WAREHOUSE_COLUMNS

WRITER_POOL = "duckdb_writer"
RECONCILE_CHECK = "raw_rows_reconcile"
UNIQUE_CHECK = "call_id_unique"
CALLS_KEY = dg.AssetKey("calls")
REJECTS_KEY = dg.AssetKey("call_rejects")
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


def build_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The pipeline's assets for a given daily partitioning."""

    @dg.asset(
        partitions_def=partitions_def,
        group_name="callr",
        kinds={"http", "csv"},
        description="Each day's CDR export from Callr, both directions, landed byte for byte.",
    )
    def raw_cdr_exports(
        context: dg.AssetExecutionContext, callr: CallrResource, lake: WarehouseResource
    ) -> dg.MaterializeResult:
        day = partition_date(context)
        start, end = day_window(day, lake.timezone)
        metadata: dict[str, object] = {
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
        total_rows = total_bytes = 0
        started = time.perf_counter()
        with callr.client() as client:
            downloads = client.fetch_exports(
                {direction: lake.lake.raw_file(day, direction) for direction in DIRECTIONS},
                start,
                end,
            )
            for download in downloads:
                direction = download.direction
                rows = normalize.count_csv_rows(download.path)
                total_rows += rows
                total_bytes += download.bytes
                metadata |= {
                    f"{direction}_path": dg.MetadataValue.path(str(download.path)),
                    f"{direction}_bytes": download.bytes,
                    f"{direction}_rows": rows,
                    f"{direction}_sha256": download.sha256,
                    f"{direction}_request_s": round(download.duration_s, 3),
                    f"{direction}_retries": download.attempts - 1,
                }
                context.log.info(
                    f"{direction}: {download.bytes:,} bytes, {rows:,} rows, "
                    f"{download.attempts - 1} retries, {download.duration_s:.2f} s"
                )
        metadata |= {
            "dagster/row_count": total_rows,
            "bytes": total_bytes,
            "fetch_s": round(time.perf_counter() - started, 3),
        }
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        partitions_def=partitions_def,
        deps=[raw_cdr_exports],
        group_name="warehouse",
        kinds={"polars", "parquet"},
        description="Typed calls (Hive-style Parquet by call_date) and rejected rows, per day.",
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILE_CHECK,
                asset="typed_calls",
                blocking=True,
                description="raw data rows = typed + rejected + collapsed duplicates",
            )
        ],
    )
    def typed_calls(context: dg.AssetExecutionContext, lake: WarehouseResource):
        day = partition_date(context)
        files = [
            normalize.ExportFile(lake.lake.raw_file(day, direction), direction)
            for direction in DIRECTIONS
        ]
        staging = lake.lake.staging_dir / f"{day.isoformat()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        started = time.perf_counter()
        try:
            result = normalize.normalize_exports(files, partition_date=day, timezone=lake.timezone)
            stats = normalize.write_normalized(
                result,
                pl.PartitionBy(
                    staging / "calls",
                    key="call_date",
                    include_key=True,
                    approximate_bytes_per_file=None,
                ),
                staging / "rejects.parquet",
            )
            staged = sorted((staging / "calls").glob("call_date=*/*.parquet"))
            published = warehouse.publish_partition(
                lake.lake, day, staged, staging / "rejects.parquet"
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        elapsed = time.perf_counter() - started
        # Reconcile counts taken independently of the typing: raw records counted from the raw
        # files (`count_csv_rows`, by the normaliser before it starts), typed and rejected rows
        # from the Parquet files as published.
        raw_rows = stats.raw_rows
        typed_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in published)
        rejected_rows = pq.ParquetFile(lake.lake.rejects_file(day)).metadata.num_rows
        reconciled = raw_rows == typed_rows + rejected_rows + stats.duplicate_rows
        yield dg.AssetCheckResult(
            check_name=RECONCILE_CHECK,
            passed=reconciled,
            metadata={
                "raw_rows": raw_rows,
                "typed_rows": typed_rows,
                "rejected_rows": rejected_rows,
                "duplicate_rows": stats.duplicate_rows,
            },
            description=None
            if reconciled
            else f"{raw_rows} raw rows != {typed_rows} typed + {rejected_rows} rejected "
            f"+ {stats.duplicate_rows} duplicates",
        )
        # Five rows, read lazily: reading the file and then taking its head would load the day.
        preview = pl.scan_parquet(published[0]).head(5).collect() if published else pl.DataFrame()
        parquet_bytes = sum(p.stat().st_size for p in [*published, lake.lake.rejects_file(day)])
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": typed_rows,
                "dagster/column_schema": column_schema(CALL_COLUMNS),
                "raw_rows": raw_rows,
                "rejected_rows": rejected_rows,
                "duplicate_rows": stats.duplicate_rows,
                "unknown_columns": ", ".join(stats.unknown_columns) or "none",
                "min_started_at": _iso(stats.min_started_at),
                "max_started_at": _iso(stats.max_started_at),
                "files": [str(p) for p in published],
                "parquet_bytes": parquet_bytes,
                "normalize_s": round(elapsed, 3),
                "preview": dg.MetadataValue.md(markdown_table(preview)),
            }
        )

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name="warehouse",
        pool=WRITER_POOL,
        specs=[
            dg.AssetSpec(
                CALLS_KEY,
                deps=[typed_calls],
                kinds={"duckdb"},
                description="One row per call (call_id unique), typed as the contract says.",
                metadata={"dagster/column_schema": column_schema(CALL_COLUMNS + WAREHOUSE_COLUMNS)},
                freshness_policy=CALLS_FRESHNESS,
            ),
            dg.AssetSpec(
                REJECTS_KEY,
                deps=[typed_calls],
                kinds={"duckdb"},
                description="Rows that could not be typed, with the reason; never dropped.",
                metadata={"dagster/column_schema": column_schema(REJECT_COLUMNS)},
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                UNIQUE_CHECK,
                asset=CALLS_KEY,
                blocking=True,
                description="call_id occurs once in the whole calls table",
            )
        ],
    )
    def warehouse_tables(context: dg.AssetExecutionContext, lake: WarehouseResource):
        day = partition_date(context)
        started = time.perf_counter()
        with lake.connect() as con:
            waited = time.perf_counter() - started
            stats = warehouse.load_partition(con, lake.lake, day)
            duplicates, examples = warehouse.duplicate_call_ids(con)
            (reject_rows,) = con.execute("SELECT count(*) FROM call_rejects").fetchone() or (0,)
        elapsed = time.perf_counter() - started
        warehouse_bytes = Path(lake.warehouse_path).stat().st_size
        context.log.info(
            f"{day}: {stats.calls_written:,} calls written, {stats.rejects:,} rejects; "
            f"table holds {stats.table_rows:,} calls"
        )
        yield dg.AssetCheckResult(
            check_name=UNIQUE_CHECK,
            asset_key=CALLS_KEY,
            passed=duplicates == 0,
            metadata={"duplicate_call_ids": duplicates, "examples": str(examples)},
        )
        yield dg.MaterializeResult(
            asset_key=CALLS_KEY,
            metadata={
                "dagster/row_count": stats.table_rows,
                "incoming_calls": stats.incoming_calls,
                "calls_written": stats.calls_written,
                "calls_kept_from_other_partitions": stats.calls_kept_elsewhere,
                "calls_removed": stats.calls_removed,
                "calls_restored": stats.calls_restored,
                "duplicate_call_ids": duplicates,
                "warehouse_bytes": warehouse_bytes,
                "lock_wait_s": round(waited, 3),
                "load_s": round(elapsed, 3),
            },
        )
        yield dg.MaterializeResult(
            asset_key=REJECTS_KEY,
            metadata={"dagster/row_count": reject_rows, "partition_rejects": stats.rejects},
        )

    @dg.asset(
        group_name="warehouse",
        kinds={"duckdb"},
        pool=WRITER_POOL,
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

    return [raw_cdr_exports, typed_calls, warehouse_tables, q850_causes]


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else "none"


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
