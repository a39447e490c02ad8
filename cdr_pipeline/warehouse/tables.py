"""The warehouse's tables: creating them (DDL from `schema`), and the small reads and writes
the assets and checks make of them."""

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb

from cdr_pipeline import marts, merge, q850
from cdr_pipeline.db import count, scalar, transaction
from cdr_pipeline.schema import (
    CALL_COLUMNS,
    CALLS_TABLE,
    LOADS_TABLE,
    Q850_TABLE,
    REALTIME_SEEN_TABLE,
    REALTIME_WATERMARK_TABLE,
    REJECTS_TABLE,
    ddl,
)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables and views the contract names, if they are missing (and the columns a
    release added to `calls`, to a warehouse an earlier release made)."""
    con.execute(ddl(CALLS_TABLE))
    present = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND "
            "schema_name = 'main'",
            [CALLS_TABLE],
        ).fetchall()
    }
    for column in CALL_COLUMNS:
        if column.name not in present:
            con.execute(f"ALTER TABLE {CALLS_TABLE} ADD COLUMN {column.duckdb_ddl}")
    for table in (REJECTS_TABLE, Q850_TABLE, LOADS_TABLE):
        con.execute(ddl(table))
    marts.ensure_marts(con)  # daily_kpis and the other KPI tables, computed from calls


def ensure_realtime_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the two bookkeeping tables of real-time loads, if they are missing.

    - `realtime_watermark`: per landing store, the highest event `seq` loaded;
    - `realtime_calls_seen`: every call a real-time delivery typed successfully (the export
      may replace its row in `calls` later; this remembers that it was seen in real time).
    """
    ensure_schema(con)
    con.execute(ddl(REALTIME_WATERMARK_TABLE))
    con.execute(ddl(REALTIME_SEEN_TABLE))


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the warehouse has a table of that name."""
    return bool(count(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]))


def append_rejects(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str]) -> int:
    """Insert rejects from Parquet files into `call_rejects`; how many rows they held."""
    if not files:
        return 0
    return count(
        con,
        f"INSERT INTO {REJECTS_TABLE} BY NAME "
        "SELECT * FROM read_parquet(?, hive_partitioning = false)",
        [[str(p) for p in files]],
    )


def replace_q850(con: duckdb.DuckDBPyConnection, frame: object) -> int:
    """Replace `q850_causes` with `frame` (anything DuckDB can scan: polars, Arrow)."""
    ensure_schema(con)
    con.register("q850_frame", frame)
    try:
        with transaction(con):
            con.execute(f"DELETE FROM {Q850_TABLE}")
            con.execute(
                f"INSERT INTO {Q850_TABLE} "
                "SELECT cause_code, cause_name, cause_class FROM q850_frame"
            )
    finally:
        con.unregister("q850_frame")
    return count(con, f"SELECT count(*) FROM {Q850_TABLE}")


def q850_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `q850_causes` exists and holds exactly the table `q850` defines."""
    if not table_exists(con, Q850_TABLE):
        return False
    stored = con.execute(
        f"SELECT cause_code, cause_name, cause_class FROM {Q850_TABLE} ORDER BY cause_code"
    ).fetchall()
    return stored == q850.q850_rows()


def latest_loaded_day(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The latest daily partition loaded from the export, as a list (empty: none yet)."""
    exists = table_exists(con, LOADS_TABLE)
    day = scalar(con, f"SELECT max(partition) FROM {LOADS_TABLE}") if exists else None
    return [day] if isinstance(day, dt.date) else []


def duplicate_call_ids(
    con: duckdb.DuckDBPyConnection, window: merge.Window | None = None, limit: int = 10
) -> tuple[int, list[int]]:
    """How many call_ids occur more than once in `calls`, and a few of them.

    With a `window`, only among the rows of those call dates (what a load can have touched,
    see `merge`): the per-load check. Without, the whole table: the audit.
    """
    where = f"WHERE {window.sql('c')}" if window else ""
    rows = con.execute(
        f"SELECT c.call_id FROM {CALLS_TABLE} c {where} GROUP BY c.call_id "
        "HAVING count(*) > 1 ORDER BY c.call_id"
    ).fetchall()
    return len(rows), [r[0] for r in rows[:limit]]


def table_rows(con: duckdb.DuckDBPyConnection, table: str = CALLS_TABLE) -> int:
    """The rows of `table` as DuckDB's catalogue estimates them (no scan)."""
    return count(
        con,
        "SELECT estimated_size FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
        [table],
    )


def realtime_watermark(con: duckdb.DuckDBPyConnection, landing_store_id: str) -> int:
    """The highest landed `seq` already loaded from that landing store (0 if none)."""
    if not table_exists(con, REALTIME_WATERMARK_TABLE):
        return 0
    return count(
        con,
        f"SELECT coalesce(max(through_seq), 0) FROM {REALTIME_WATERMARK_TABLE} "
        "WHERE landing_store_id = ?",
        [landing_store_id],
    )
