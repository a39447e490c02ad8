"""Dagster metadata of the daily assets: column schemas, and each day's values as the UI shows
them (numbers it plots across partitions, small Markdown tables)."""

import datetime as dt
from collections.abc import Iterable
from typing import Any

import dagster as dg
import polars as pl

from cdr_pipeline import days as core
from cdr_pipeline import marts
from cdr_pipeline.defs.keys import (
    CALLS_KEY,
    DAILY_KPIS_KEY,
    MART_KEYS,
    RECONCILE_CHECK,
    REJECTS_KEY,
    TYPED_KEY,
)
from cdr_pipeline.warehouse_days import WarehouseLoad

KPI_NUMBERS = ("calls", "asr", "ner", "acd_s", "billed_minutes", "peak_concurrent_calls")

# Asset and check metadata: Dagster takes plain values (text, numbers, tables, Markdown) and
# its MetadataValue wrappers; its type for that union is private.
Metadata = dict[str, Any]


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


def number(value: float | None) -> dg.MetadataValue:
    """A metric as metadata: an int, a float rounded to 6 places, or the text 'none'."""
    if value is None:
        return dg.MetadataValue.text("none")
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(round(float(value), 6))


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else "none"


def landed_metadata(landed: core.LandedDay) -> Metadata:
    """A day of `raw_cdr_exports`: its window, and each direction's file and download."""
    metadata: Metadata = {
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


def typed_metadata(typed: core.TypedDay) -> Metadata:
    """A day of `typed_calls`: its row counts, the files published and a preview."""
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


def reconcile_result(typed: Iterable[core.TypedDay]) -> dg.AssetCheckResult:
    """raw = typed + rejected + duplicates for every day typed by the run."""
    typed = list(typed)
    broken = [t for t in typed if not t.reconciled]
    metadata: Metadata = {
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


def _calls_metadata(
    load: WarehouseLoad, day: dt.date, lock_wait_s: float
) -> tuple[Metadata, Metadata]:
    """A day of `calls` and of `call_rejects`: what its load wrote, kept and removed."""
    stats = load.result.loads[day]
    calls: Metadata = {
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
        "load_s": round(load.result.seconds[day], 3),
        "lock_wait_s": round(lock_wait_s, 3),
    }
    rejects: Metadata = {
        "dagster/row_count": stats.rejects,
        "partition_rejects": stats.rejects,
    }
    return calls, rejects


def _kpi_metadata(load: WarehouseLoad, day: dt.date, ner_causes: tuple[int, ...]) -> Metadata:
    """The day's headline KPIs per direction (numbers the UI plots across partitions)."""
    kpis = load.kpis.filter(pl.col("call_date") == day)
    metadata: Metadata = {"ner_causes": ", ".join(str(c) for c in ner_causes)}
    for row in kpis.iter_rows(named=True):
        direction = row["direction"]
        for name in KPI_NUMBERS:
            metadata[f"{direction}_{name}"] = number(row[name])
        metadata[f"{direction}_billing_debit"] = number(float(row["billing_debit"]))
    metadata["kpis"] = dg.MetadataValue.md(
        markdown_table(kpis.drop("call_date"), "(no calls on this day)")
    )
    return metadata


def warehouse_metadata(
    load: WarehouseLoad, lock_wait_s: float, ner_causes: tuple[int, ...]
) -> dict[dg.AssetKey, dict[dt.date, Metadata]]:
    """Each day's metadata of `calls`, `call_rejects` and every mart."""
    metadata: dict[dg.AssetKey, dict[dt.date, Metadata]] = {
        CALLS_KEY: {},
        REJECTS_KEY: {},
    }
    for day in load.result.loads:
        metadata[CALLS_KEY][day], metadata[REJECTS_KEY][day] = _calls_metadata(
            load, day, lock_wait_s
        )
    for key in MART_KEYS:
        counts = load.mart_counts[key.path[-1]]
        metadata[key] = {day: {"dagster/row_count": counts.get(day, 0)} for day in load.shown_days}
    for day in load.shown_days:
        metadata[DAILY_KPIS_KEY][day] |= _kpi_metadata(load, day, ner_causes)
    return metadata
