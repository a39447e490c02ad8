"""The names the Dagster shell shares: asset keys, check names and the DuckDB writer pool."""

import dagster as dg

from cdr_pipeline import marts
from cdr_pipeline.schema import CALLS_TABLE, Q850_TABLE, REJECTS_TABLE

# Every step that writes (or must not overlap a write to) the DuckDB file claims this pool.
WRITER_POOL = "duckdb_writer"

RAW_KEY = dg.AssetKey("raw_cdr_exports")
TYPED_KEY = dg.AssetKey("typed_calls")
CALLS_KEY = dg.AssetKey(CALLS_TABLE)
REJECTS_KEY = dg.AssetKey(REJECTS_TABLE)
MART_KEYS = tuple(dg.AssetKey(m) for m in marts.MART_TABLES)
DAILY_KPIS_KEY = dg.AssetKey("daily_kpis")
Q850_KEY = dg.AssetKey(Q850_TABLE)
REPORT_KEY = dg.AssetKey("daily_report")
REALTIME_KEY = dg.AssetKey("realtime_calls")

RECONCILE_CHECK = "raw_rows_reconcile"
UNIQUE_CHECK = "call_id_unique"
