"""The names the Dagster shell shares: asset keys, check names and the DuckDB writer pool."""

import dagster as dg

from cdr_pipeline import marts

# Every step that writes (or must not overlap a write to) the DuckDB file claims this pool.
WRITER_POOL = "duckdb_writer"

RAW_KEY = dg.AssetKey("raw_cdr_exports")
TYPED_KEY = dg.AssetKey("typed_calls")
CALLS_KEY = dg.AssetKey("calls")
REJECTS_KEY = dg.AssetKey("call_rejects")
MART_KEYS = tuple(dg.AssetKey(m) for m in marts.MART_TABLES)
DAILY_KPIS_KEY = dg.AssetKey("daily_kpis")
Q850_KEY = dg.AssetKey("q850_causes")
REPORT_KEY = dg.AssetKey("daily_report")
REALTIME_KEY = dg.AssetKey("realtime_calls")

RECONCILE_CHECK = "raw_rows_reconcile"
UNIQUE_CHECK = "call_id_unique"
