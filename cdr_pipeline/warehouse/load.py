"""A day's (or a range's) load: the partitions' published Parquet merged into `calls` and their
rejects replaced, in one transaction (the rank and the window: docs/warehouse.md, `merge`)."""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from cdr_pipeline import marts, merge
from cdr_pipeline.db import TableReads, count, date_literal, first_row, transaction
from cdr_pipeline.lakestore import LocalFiles
from cdr_pipeline.schema import CALLS_TABLE, LOADS_TABLE, REJECTS_TABLE
from cdr_pipeline.warehouse.lake import CALLS_PREFIX, PART_FILE, Lake, part_name
from cdr_pipeline.warehouse.tables import append_rejects, ensure_schema


@dataclass(frozen=True)
class LoadStats:
    """What one partition's load did to the warehouse."""

    incoming_calls: int
    calls_written: int  # incoming rows that won their call_id (inserted or replaced)
    calls_kept_elsewhere: int  # incoming rows another partition's row outranks
    calls_removed: int  # rows this partition loaded before and its export no longer holds
    calls_restored: int  # of those, rows restored from another partition's Parquet
    rejects: int
    partition_calls: int  # calls whose call_date is the partition's day, after the load
    window: merge.Window | None  # the call dates the load read and wrote
    calls_read: TableReads  # row groups of `calls` the load read, of all it has


def load_partition(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    partition: dt.date,
    *,
    timezone: str,
) -> LoadStats:
    """Load one partition's published Parquet (see `load_partitions`)."""
    return load_partitions(con, lake, [partition], timezone=timezone)[partition]


def load_partitions(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    partitions: Sequence[dt.date],
    *,
    timezone: str,
) -> dict[dt.date, LoadStats]:
    """Load partitions' published Parquet into `calls` and `call_rejects`, in one transaction.

    Each partition's rows replace what it loaded before (see `merge.merge` for the rank and the
    window it reads): its previous rows go, the calls its export no longer holds are removed
    (and restored from another partition's Parquet if one carries them), its rejects are
    replaced. Loading several partitions at once gives the same tables as loading them one
    after the other, in any order; it only saves statements (worth it for small days). The
    days whose marts change are left on the marts' pending list. The Parquet files are read by
    each statement that needs them, never copied whole into memory.
    """
    ensure_schema(con)
    days = sorted(set(partitions))
    with lake.store.local_files(lake.staging_dir) as local:
        return _load_partitions(con, lake, local, days, timezone)


def _load_partitions(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    local: LocalFiles,
    days: list[dt.date],
    timezone: str,
) -> dict[dt.date, LoadStats]:
    """`load_partitions`, with the lake's files read through `local` (in place, or downloaded)."""
    keys = lake.calls_keys_of(days)
    files = {day: local.paths(keys[day]) for day in days}
    loaded = [day for day in days if files[day]]
    copies = " UNION ALL ".join(
        f"SELECT {merge.CALL_NAMES}, {date_literal(day)} AS load_partition "
        "FROM read_parquet(?, hive_partitioning = false)"
        for day in loaded
    )
    params = [files[day] for day in loaded]
    batch = ", ".join(date_literal(day) for day in days)
    owned = f"c.load_partition IN ({batch}) AND c.source = 'export'"
    with transaction(con, "matched", "orphaned", "downgraded", "superseded", "better"):
        if not loaded:
            incoming = merge.Incoming(f"(SELECT * FROM {CALLS_TABLE} LIMIT 0) i", [], 0, None, 0)
            per_day: dict[dt.date, int] = {}
        else:
            relation = _best_copies(con, copies, params, several=len(loaded) > 1)
            incoming = merge.describe_incoming(con, relation, params, timezone)
            per_day = dict(
                con.execute(
                    f"SELECT load_partition, count(*) FROM ({copies}) GROUP BY 1", params
                ).fetchall()
            )
        result = merge.merge(
            con,
            incoming,
            timezone=timezone,
            replace_when=f"{merge.RANK.format(t='i')} >= {merge.RANK.format(t='c')}",
            owned=merge.Owned(owned, _owned_window(con, owned)),
        )
        restored = (
            _restore_better_copies(con, lake, local, days, result.window, timezone)
            if result.window
            else {}
        )
        stats = _partition_stats(con, days, per_day, result, restored, lake, local)
    return stats


def _best_copies(
    con: duckdb.DuckDBPyConnection, copies: str, params: list, *, several: bool
) -> str:
    """The incoming relation, one row per call: a call several of the partitions carry (in
    progress at midnight) comes with its best-ranked copy only."""
    if not several:
        return f"({copies}) i"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE superseded AS "
        f"SELECT call_id, load_partition FROM ({copies}) o "
        f"WHERE call_id IN (SELECT call_id FROM ({copies}) GROUP BY call_id HAVING count(*) > 1) "
        f"QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY {merge.RANK.format(t='o')} "
        "DESC) > 1",
        params + params,
    )
    return (
        f"(SELECT * FROM ({copies}) o WHERE NOT EXISTS (SELECT 1 FROM superseded s "
        "WHERE s.call_id = o.call_id AND s.load_partition = o.load_partition)) i"
    )


def _owned_window(con: duckdb.DuckDBPyConnection, owned: str) -> merge.Window | None:
    """The call dates of the rows partitions stored before (a partition's rows are contiguous:
    DuckDB finds them by the row groups' min/max `load_partition`)."""
    row = first_row(
        con, f"SELECT min(c.call_date), max(c.call_date) FROM {CALLS_TABLE} c WHERE {owned}"
    )
    return merge.Window(row[0], row[1]) if row and row[0] is not None else None


def _restore_better_copies(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    local: LocalFiles,
    partitions: Sequence[dt.date],
    window: merge.Window,
    timezone: str,
) -> dict[dt.date, int]:
    """Calls the load removed (or replaced by a lower-ranked copy of their own partition's new
    export) that another partition's Parquet carries better: that copy is stored instead (rare).
    Only the files of the call dates in the load's window can hold them. Restored rows, by the
    partition whose load removed them."""
    candidates = (
        "SELECT call_id, owner FROM orphaned UNION ALL SELECT call_id, owner FROM downgraded"
    )
    if not count(con, f"SELECT count(*) FROM ({candidates})"):
        return {}
    mine = {part_name(p) for p in partitions}
    others = local.paths(
        key
        for day in window.days()
        for key in lake.store.keys(f"{CALLS_PREFIX}/call_date={day.isoformat()}")
        if PART_FILE.fullmatch(key.rpartition("/")[2]) and key.rpartition("/")[2] not in mine
    )
    if not others:
        return {}
    where = window.sql("c")
    named = (
        f"SELECT {merge.CALL_NAMES}, regexp_extract(filename, "
        "'part-(\\d{4}-\\d{2}-\\d{2})', 1)::DATE AS load_partition "
        "FROM read_parquet(?, hive_partitioning = false, filename = true) "
        f"WHERE call_id IN (SELECT call_id FROM ({candidates}))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE better AS SELECT o.* FROM ("
        f"  SELECT * FROM ({named}) p QUALIFY row_number() OVER ("
        f"    PARTITION BY call_id ORDER BY {merge.RANK.format(t='p')} DESC) = 1"
        f") o LEFT JOIN {CALLS_TABLE} c ON c.call_id = o.call_id AND {where} "
        f"WHERE c.call_id IS NULL OR {merge.RANK.format(t='o')} > {merge.RANK.format(t='c')}",
        [others],
    )
    marts.mark_pending(
        con,
        merge.spanned_days(
            f"SELECT c.call_date, {merge.end_day('c', timezone)} FROM {CALLS_TABLE} c "
            f"WHERE {where} AND c.call_id IN (SELECT call_id FROM better) "
            f"UNION ALL SELECT b.call_date, {merge.end_day('b', timezone)} FROM better b"
        ),
    )
    con.execute(
        f"DELETE FROM {CALLS_TABLE} c WHERE {where} AND c.call_id IN (SELECT call_id FROM better)"
    )
    con.execute(f"INSERT INTO {CALLS_TABLE} BY NAME SELECT * FROM better")
    rows = con.execute(
        f"SELECT k.owner, count(*) FROM better b JOIN ({candidates}) k USING (call_id) GROUP BY 1"
    ).fetchall()
    return {owner: int(n) for owner, n in rows}


def _partition_stats(
    con: duckdb.DuckDBPyConnection,
    days: Sequence[dt.date],
    incoming: dict[dt.date, int],
    result: merge.MergeResult,
    restored: dict[dt.date, int],
    lake: Lake,
    local: LocalFiles,
) -> dict[dt.date, LoadStats]:
    """Each partition's share of a load; its rejects replaced, its ledger row written."""
    batch = ", ".join(date_literal(day) for day in days)
    window = result.window.sql("c") if result.window else "true"
    written = dict(
        con.execute(
            f"SELECT c.load_partition, count(*) FROM {CALLS_TABLE} c WHERE {window} AND "
            f"c.load_partition IN ({batch}) AND c.source = 'export' GROUP BY 1"
        ).fetchall()
    )
    removed = dict(con.execute("SELECT owner, count(*) FROM orphaned GROUP BY 1").fetchall())
    stored = dict(
        con.execute(
            f"SELECT call_date, count(*) FROM {CALLS_TABLE} WHERE call_date IN ({batch}) GROUP BY 1"
        ).fetchall()
    )
    con.execute(f"DELETE FROM {REJECTS_TABLE} WHERE call_date IN ({batch}) AND source = 'export'")
    stats = {}
    for day in days:
        key = lake.rejects_key(day)
        rejects = append_rejects(con, local.paths([key]) if lake.store.exists(key) else [])
        arrived, kept_here = incoming.get(day, 0), written.get(day, 0)
        con.execute(
            f"INSERT OR REPLACE INTO {LOADS_TABLE} VALUES ({date_literal(day)}, now(), ?, ?, ?)",
            [arrived, kept_here, rejects],
        )
        stats[day] = LoadStats(
            incoming_calls=arrived,
            calls_written=kept_here,
            calls_kept_elsewhere=arrived - kept_here,
            calls_removed=removed.get(day, 0),
            calls_restored=restored.get(day, 0),
            rejects=rejects,
            partition_calls=stored.get(day, 0),
            window=result.window,
            calls_read=result.calls_read,
        )
    return stats
