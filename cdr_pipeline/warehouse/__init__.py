"""The warehouse: the lake's layout, the DuckDB connection, idempotent loads, the real-time
upsert, snapshots.

- `lake`: where raw exports and typed Parquet live (`Lake`), and a partition's publish;
- `connection`: opening the DuckDB file, waiting (bounded) while another process holds it;
- `tables`: the tables' DDL (from `schema`) and their small reads and writes;
- `load`: a day's or a range's load, in one transaction;
- `upsert`: a real-time batch's upsert;
- `reconcile`: real-time rows against the export (re-exported by `cdr_pipeline.realtime`);
- `snapshot`: the analysts' copy and the compaction after an erasure.

How a load decides which copy of a call is kept, and why loads are idempotent in any order:
docs/warehouse.md.
"""

from cdr_pipeline import merge
from cdr_pipeline.schema import (
    CALLS_TABLE,
    LOADS_TABLE,
    Q850_TABLE,
    REALTIME_SEEN_TABLE,
    REALTIME_WATERMARK_TABLE,
    REJECTS_TABLE,
)
from cdr_pipeline.warehouse.connection import WRITER_MEMORY_LIMIT, WarehouseLockedError, connect
from cdr_pipeline.warehouse.lake import (
    CALLS_PREFIX,
    RAW_PREFIX,
    REJECTS_PREFIX,
    Lake,
    publish_partition,
)
from cdr_pipeline.warehouse.load import LoadStats, load_partition, load_partitions
from cdr_pipeline.warehouse.snapshot import compact, snapshot, snapshot_path
from cdr_pipeline.warehouse.tables import (
    duplicate_call_ids,
    ensure_realtime_schema,
    ensure_schema,
    latest_loaded_day,
    q850_is_current,
    realtime_watermark,
    replace_q850,
    table_exists,
    table_rows,
)
from cdr_pipeline.warehouse.upsert import RealtimeLoadStats, upsert_realtime

__all__ = [
    "CALLS_PREFIX",
    "CALLS_TABLE",
    "LOADS_TABLE",
    "Q850_TABLE",
    "RAW_PREFIX",
    "REALTIME_SEEN_TABLE",
    "REALTIME_WATERMARK_TABLE",
    "REJECTS_PREFIX",
    "REJECTS_TABLE",
    "WRITER_MEMORY_LIMIT",
    "Lake",
    "LoadStats",
    "RealtimeLoadStats",
    "WarehouseLockedError",
    "compact",
    "connect",
    "duplicate_call_ids",
    "ensure_realtime_schema",
    "ensure_schema",
    "latest_loaded_day",
    "load_partition",
    "load_partitions",
    "merge",
    "publish_partition",
    "q850_is_current",
    "realtime_watermark",
    "replace_q850",
    "snapshot",
    "snapshot_path",
    "table_exists",
    "table_rows",
    "upsert_realtime",
]
