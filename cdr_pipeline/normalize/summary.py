"""The row count and `started_at` range of written `calls` files, from their Parquet footers."""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import polars as pl
import pyarrow.parquet as pq

from cdr_pipeline.schema import CALL_SCHEMA


class CallsSummary(NamedTuple):
    """Rows of written `calls` files and their `started_at` range (None when empty)."""

    rows: int
    min_started_at: datetime | None
    max_started_at: datetime | None


def calls_summary(paths: Sequence[str]) -> CallsSummary:
    """Rows and `started_at` range of written `calls` files, read from their Parquet footers.

    The footers hold the row counts and each row group's exact min/max (`started_at` is a
    non-null INT64 microsecond timestamp); scanning the column instead would stream the whole
    day back through memory.
    """
    rows, low, high = 0, None, None
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        column = meta.schema.names.index("started_at")
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            stats = chunk.column(column).statistics
            if chunk.num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:  # not written by polars: scan it
                return _scanned_summary(paths)
            low = stats.min_raw if low is None else min(low, stats.min_raw)
            high = stats.max_raw if high is None else max(high, stats.max_raw)
    instants = pl.Series([low, high], dtype=pl.Int64).cast(CALL_SCHEMA["started_at"])
    return CallsSummary(rows, instants[0], instants[1])


def _scanned_summary(paths: Sequence[str]) -> CallsSummary:
    summary = (
        pl.scan_parquet(list(paths))
        .select(pl.len(), pl.col("started_at").min().alias("min"), pl.col("started_at").max())
        .collect()
    )
    return CallsSummary(summary.item(0, 0), summary.item(0, 1), summary.item(0, 2))
