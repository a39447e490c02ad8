"""The real-time upsert: a batch of landed calls merged into `calls` (an export row always
wins), its rejects appended, and the landing store's watermark advanced, in one transaction."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdr_pipeline import merge
from cdr_pipeline.db import transaction
from cdr_pipeline.schema import CALLS_TABLE, REALTIME_SEEN_TABLE, REALTIME_WATERMARK_TABLE
from cdr_pipeline.warehouse.tables import append_rejects, ensure_realtime_schema, table_rows


@dataclass(frozen=True)
class RealtimeLoadStats:
    """What one real-time batch did to the warehouse."""

    incoming_calls: int
    calls_written: int  # inserted, or replacing an older real-time row
    calls_kept_export: int  # the export already holds the call: its row wins
    rejects: int
    table_rows: int  # estimated
    through_seq: int
    window: merge.Window | None  # the call dates the batch read and wrote


def upsert_realtime(
    con: duckdb.DuckDBPyConnection,
    calls_files: Sequence[Path],
    rejects_files: Sequence[Path],
    *,
    landing_store_id: str,
    through_seq: int,
    timezone: str,
) -> RealtimeLoadStats:
    """Merge typed real-time calls and append their rejects, in one transaction.

    Unlike `load_partition`, nothing is removed: a real-time batch is not a day's full truth.
    `calls_files` must hold each `call_id` once (the real-time loader keeps the latest delivery
    of a call). Their `load_partition` is their `call_date`. An incoming row replaces the table's
    row for its `call_id` unless that row came from the export (`merge.RANK`); the days it
    changes go to the marts' pending list; the landing store's watermark becomes `through_seq`
    in the same transaction, so a batch is loaded exactly once.
    """
    ensure_realtime_schema(con)
    with transaction(con, "incoming", "matched", "orphaned"):
        if calls_files:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT {merge.CALL_NAMES}, "
                "call_date AS load_partition FROM read_parquet(?, hive_partitioning = false)",
                [[str(p) for p in calls_files]],
            )
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM {CALLS_TABLE} LIMIT 0"
            )
        incoming = merge.describe_incoming(con, "(SELECT * FROM incoming) i", [], timezone)
        result = merge.merge(
            con,
            incoming,
            timezone=timezone,
            replace_when=(
                f"c.source <> 'export' OR {merge.RANK.format(t='i')} >= {merge.RANK.format(t='c')}"
            ),
        )
        con.execute(
            f"INSERT INTO {REALTIME_SEEN_TABLE} "
            "SELECT call_id, call_date, direction, source, now(), now() FROM incoming "
            "ON CONFLICT (call_id) DO UPDATE SET call_date = excluded.call_date, "
            "direction = excluded.direction, source = excluded.source, "
            "last_loaded_at = excluded.last_loaded_at"
        )
        rejects = append_rejects(con, rejects_files)
        con.execute(
            f"INSERT INTO {REALTIME_WATERMARK_TABLE} VALUES (?, ?, now()) "
            "ON CONFLICT (landing_store_id) DO UPDATE SET "
            "through_seq = excluded.through_seq, loaded_at = excluded.loaded_at",
            [landing_store_id, through_seq],
        )
    return RealtimeLoadStats(
        incoming_calls=incoming.rows,
        calls_written=result.written,
        calls_kept_export=result.kept,
        rejects=rejects,
        table_rows=table_rows(con),
        through_seq=through_seq,
        window=result.window,
    )
