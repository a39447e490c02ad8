"""The warehouse: the data directory's layout, atomic Parquet publishes, idempotent DuckDB loads.

Layout under `CDR_DATA_DIR`::

    raw/<partition>/<direction>.csv                          the export exactly as received
    parquet/calls/call_date=<date>/part-<partition>.parquet   typed calls, Hive style
    parquet/call_rejects/call_date=<partition>/part-<partition>.parquet
    warehouse.duckdb                                          (or CDR_WAREHOUSE)

A call's `call_date` comes from its start instant, so a partition's export can hold calls of the
day before (a call still in progress at midnight is returned by both days' exports). Each
partition therefore owns the files named `part-<partition>.parquet`, in whichever `call_date=`
folders its calls fall, and re-materialising a partition replaces exactly those files.

DuckDB `calls` holds one row per `call_id`. Each row remembers the partition whose load wrote it
(`load_partition`). When several loads carry the same call, the winner is decided by a fixed rank,
not by the order the loads ran in, which is what makes loads idempotent in any order:

1. a row from the daily export beats one that came in real time (webhook / push);
2. a row loaded by its home partition (`load_partition = call_date`) beats one from another day;
3. a later partition beats an earlier one.

A partition's load is one transaction: it removes the rows it loaded before that its export no
longer holds (restoring them from another partition's Parquet if one also carries them), merges
its calls by `call_id` under that rank, and replaces its `call_rejects`. It reads only the few
call dates its calls can be stored on (`merge` states the invariant), and leaves the days whose
marts it changed on the marts' pending list (`marts.refresh_pending` computes them).

Real-time rows (webhook / push, see `upsert_realtime`) only ever add or replace: a batch of landed
events is merged under the same rank (so an export row is never replaced by a real-time one,
and a newer real-time delivery replaces an older one), its rejects are appended, and the landing
store's watermark (`realtime_watermark`) advances in the same transaction.
"""

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import duckdb

from cdr_pipeline import marts, merge, q850
from cdr_pipeline.config import LAKE_URL_VARIABLE
from cdr_pipeline.db import TableReads, count, date_literal, first_row, scalar, transaction
from cdr_pipeline.lakestore import STAGING, LakeError, LakeStore, LocalFiles
from cdr_pipeline.schema import CALL_COLUMNS, REJECT_COLUMNS, WAREHOUSE_COLUMNS, ddl

log = logging.getLogger(__name__)

CALLS_TABLE = "calls"
REJECTS_TABLE = "call_rejects"
Q850_TABLE = "q850_causes"
RAW_PREFIX = "raw"
CALLS_PREFIX = f"parquet/{CALLS_TABLE}"
REJECTS_PREFIX = f"parquet/{REJECTS_TABLE}"
LOADS_TABLE = "partition_loads"  # one row per daily partition loaded: when, and what it held
# DuckDB's buffer pool may grow to 80 % of RAM by default, and a day's load (millions of rows
# streamed from Parquet into `calls`) would use much of it: a writer gets a bound instead, and
# DuckDB spills past it. Measured at 5M rows: peak 0.84 GB -> 0.52 GB, same load time.
WRITER_MEMORY_LIMIT = "512MB"


class WarehouseLockedError(RuntimeError):
    """The DuckDB file stayed locked by another process for longer than the wait allowed."""


@dataclass(frozen=True)
class Lake:
    """The lake's layout: raw exports and typed Parquet under `CDR_LAKE_URL` (by default the
    data directory itself; or `s3://bucket/prefix`, see `lakestore`).

    Files are named by keys relative to the lake's root, the same in a folder and on S3. The
    `Path` helpers (`raw_file`, `calls_files`, `rejects_file`) are for folder lakes.
    """

    data_dir: Path
    url: str = ""  # CDR_LAKE_URL; empty: `data_dir`

    @cached_property
    def store(self) -> LakeStore:
        return LakeStore(self.url or str(self.data_dir))

    @property
    def staging_dir(self) -> Path:
        """Local scratch: inside a folder lake (a publish is then a rename), else in the data
        directory."""
        return (self.store.folder or self.data_dir) / STAGING

    @staticmethod
    def raw_key(partition: dt.date, direction: str) -> str:
        return f"{RAW_PREFIX}/{partition.isoformat()}/{direction}.csv"

    @staticmethod
    def calls_key(call_date_folder: str, partition: dt.date) -> str:
        """The file a partition owns in one `call_date=<date>` folder."""
        return f"{CALLS_PREFIX}/{call_date_folder}/{_part_name(partition)}"

    @staticmethod
    def rejects_key(partition: dt.date) -> str:
        return f"{REJECTS_PREFIX}/call_date={partition.isoformat()}/{_part_name(partition)}"

    def calls_keys(self, partition: dt.date) -> list[str]:
        """The typed Parquet files a partition owns (usually one, sometimes two call dates)."""
        return self.calls_keys_of([partition])[partition]

    def calls_keys_of(self, partitions: Sequence[dt.date]) -> dict[dt.date, list[str]]:
        """`calls_keys` of several partitions, from one listing of the calls folder."""
        owned: dict[dt.date, list[str]] = {p: [] for p in partitions}
        names = {_part_name(p): p for p in partitions}
        for key in self.store.keys(CALLS_PREFIX):
            folder, _, name = key.rpartition("/")
            if name in names and folder.rpartition("/")[2].startswith("call_date="):
                owned[names[name]].append(key)
        return owned

    def _local(self, key: str) -> Path:
        if self.store.folder is None:
            raise LakeError(f"the lake {self.url} is not a folder: use the store for {key}")
        return self.store.folder / key

    def require_folder(self, action: str) -> None:
        """Refuse `action` (an erasure, a retention) on an S3 lake, before it changes anything:
        they walk the lake's folders, which only a folder lake has (see the README)."""
        if self.store.folder is None:
            raise LakeError(
                f"{action} works on a folder lake only; the lake {self.url} "
                f"({LAKE_URL_VARIABLE}) is on object storage"
            )

    @property
    def raw_dir(self) -> Path:
        """Folder lakes only: the raw exports' folder."""
        return self._local(RAW_PREFIX)

    @property
    def calls_dir(self) -> Path:
        """Folder lakes only: the `calls` Parquet folder."""
        return self._local(CALLS_PREFIX)

    @property
    def rejects_dir(self) -> Path:
        """Folder lakes only: the `call_rejects` Parquet folder."""
        return self._local(REJECTS_PREFIX)

    def raw_file(self, partition: dt.date, direction: str) -> Path:
        return self._local(self.raw_key(partition, direction))

    def calls_files(self, partition: dt.date) -> list[Path]:
        return [self._local(key) for key in self.calls_keys(partition)]

    def rejects_file(self, partition: dt.date) -> Path:
        return self._local(self.rejects_key(partition))


_PART_FILE = re.compile(r"part-\d{4}-\d{2}-\d{2}\.parquet")


def _part_name(partition: dt.date) -> str:
    return f"part-{partition.isoformat()}.parquet"


def publish_partition(
    lake: Lake, partition: dt.date, staged_calls: Sequence[Path], staged_rejects: Path
) -> list[str]:
    """Move a partition's staged Parquet files into the lake, replacing what it owned before.

    `staged_calls` are files laid out as `call_date=<date>/<any name>` under a staging folder
    (for a folder lake, on its file system). Each file replaces its target whole, so a reader
    sees either the old or the new file, never half of one (`LakeStore.publish`); the
    partition's files for call dates it no longer holds are removed last. Returns the keys of
    the published calls files.
    """
    staged = {lake.calls_key(path.parent.name, partition): path for path in staged_calls}
    stale = sorted(set(lake.calls_keys(partition)) - set(staged))
    lake.store.publish({**staged, lake.rejects_key(partition): staged_rejects}, remove=stale)
    return sorted(staged)


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def _lock_holder(error: duckdb.Error) -> str | None:
    """'PID 123 (/usr/bin/python3)' from DuckDB's lock error, or None for any other error."""
    text = str(error)
    if "Could not set lock" not in text:
        return None
    match = _LOCK_HOLDER.search(text)
    return f"PID {match['pid']} ({match['program']})" if match else "another process"


@contextmanager
def connect(
    path: Path,
    *,
    read_only: bool = False,
    lock_wait_s: float = 600.0,
    poll_s: float = 1.0,
    memory_limit: str | None = WRITER_MEMORY_LIMIT,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the DuckDB file, waiting (bounded) while another process holds its lock.

    DuckDB lets one process write a file, or several read it, never both: an analyst's open
    read-only session blocks the loader. Rather than fail the scheduled load at once, the writer
    retries for up to `lock_wait_s`, logging who holds the lock, then raises
    `WarehouseLockedError` naming the holder. A writer's memory is bounded by `memory_limit`
    (see `WRITER_MEMORY_LIMIT`; None keeps DuckDB's default).
    """
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_wait_s
    next_log = 0.0
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as error:
            holder = _lock_holder(error)
            if holder is None:
                raise
            now = time.monotonic()
            if now >= deadline:
                raise WarehouseLockedError(
                    f"the warehouse {path} is locked by {holder}; gave up after waiting "
                    f"{lock_wait_s:.0f} s. Close that DuckDB session (analysts: use "
                    "`cdr-pipeline sql` or short read-only sessions) and re-run the load."
                ) from None
            if now >= next_log:
                log.warning(
                    "warehouse %s is locked by %s; waiting up to %.0f s more for it",
                    path,
                    holder,
                    deadline - now,
                )
                next_log = now + 10.0
            time.sleep(min(poll_s, max(deadline - now, 0.0)))
    try:
        if memory_limit is not None and not read_only:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if not read_only:
            # Loads insert a day's Parquet; keeping the files' row order costs DuckDB a second
            # pass (5M calls: 13.5 s against 6.0 s with the checkpoint), and nothing needs it: a
            # load's rows are stored together either way, which is what lets later loads skip
            # row groups (see `merge`).
            con.execute("SET preserve_insertion_order = false")
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables and views the contract names, if they are missing (and the columns a
    release added to `calls`, to a warehouse an earlier release made)."""
    con.execute(ddl(CALLS_TABLE, CALL_COLUMNS + WAREHOUSE_COLUMNS))
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
    con.execute(ddl(REJECTS_TABLE, REJECT_COLUMNS))
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {Q850_TABLE} (cause_code SMALLINT PRIMARY KEY, "
        "cause_name VARCHAR NOT NULL, cause_class VARCHAR NOT NULL)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (partition DATE PRIMARY KEY, "
        "loaded_at TIMESTAMPTZ NOT NULL, incoming_calls BIGINT NOT NULL, "
        "calls_written BIGINT NOT NULL, rejects BIGINT NOT NULL)"
    )
    marts.ensure_marts(con)  # daily_kpis and the other KPI tables, computed from calls


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


def _append_rejects(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str]) -> int:
    """Insert rejects from Parquet files into `call_rejects`; how many rows they held."""
    if not files:
        return 0
    return count(
        con,
        f"INSERT INTO {REJECTS_TABLE} BY NAME "
        "SELECT * FROM read_parquet(?, hive_partitioning = false)",
        [[str(p) for p in files]],
    )


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
            incoming = merge.Incoming("(SELECT * FROM calls LIMIT 0) i", [], 0, None, 0)
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
    row = first_row(con, f"SELECT min(c.call_date), max(c.call_date) FROM calls c WHERE {owned}")
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
    mine = {_part_name(p) for p in partitions}
    others = local.paths(
        key
        for day in window.days()
        for key in lake.store.keys(f"{CALLS_PREFIX}/call_date={day.isoformat()}")
        if _PART_FILE.fullmatch(key.rpartition("/")[2]) and key.rpartition("/")[2] not in mine
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
        f") o LEFT JOIN calls c ON c.call_id = o.call_id AND {where} "
        f"WHERE c.call_id IS NULL OR {merge.RANK.format(t='o')} > {merge.RANK.format(t='c')}",
        [others],
    )
    marts.mark_pending(
        con,
        merge.spanned_days(
            f"SELECT c.call_date, {merge.end_day('c', timezone)} FROM calls c "
            f"WHERE {where} AND c.call_id IN (SELECT call_id FROM better) "
            f"UNION ALL SELECT b.call_date, {merge.end_day('b', timezone)} FROM better b"
        ),
    )
    con.execute(f"DELETE FROM calls c WHERE {where} AND c.call_id IN (SELECT call_id FROM better)")
    con.execute("INSERT INTO calls BY NAME SELECT * FROM better")
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
            f"SELECT c.load_partition, count(*) FROM calls c WHERE {window} AND "
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
        rejects = _append_rejects(con, local.paths([key]) if lake.store.exists(key) else [])
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


def latest_loaded_day(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The latest daily partition loaded from the export, as a list (empty: none yet)."""
    exists = count(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [LOADS_TABLE])
    day = scalar(con, f"SELECT max(partition) FROM {LOADS_TABLE}") if exists else None
    return [day] if isinstance(day, dt.date) else []


def q850_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `q850_causes` exists and holds exactly the table `q850` defines."""
    exists = count(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [Q850_TABLE])
    if not exists:
        return False
    stored = con.execute(
        f"SELECT cause_code, cause_name, cause_class FROM {Q850_TABLE} ORDER BY cause_code"
    ).fetchall()
    return stored == q850.q850_rows()


def duplicate_call_ids(
    con: duckdb.DuckDBPyConnection, window: merge.Window | None = None, limit: int = 10
) -> tuple[int, list[int]]:
    """How many call_ids occur more than once in `calls`, and a few of them.

    With a `window`, only among the rows of those call dates (what a load can have touched,
    see `merge`): the per-load check. Without, the whole table: the audit.
    """
    where = f"WHERE {window.sql('c')}" if window else ""
    rows = con.execute(
        f"SELECT c.call_id FROM calls c {where} GROUP BY c.call_id HAVING count(*) > 1 "
        "ORDER BY c.call_id"
    ).fetchall()
    return len(rows), [r[0] for r in rows[:limit]]


def table_rows(con: duckdb.DuckDBPyConnection, table: str = CALLS_TABLE) -> int:
    """The rows of `table` as DuckDB's catalogue estimates them (no scan)."""
    return count(
        con,
        "SELECT estimated_size FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
        [table],
    )


REALTIME_WATERMARK_TABLE = "realtime_watermark"
REALTIME_SEEN_TABLE = "realtime_calls_seen"


def ensure_realtime_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the two bookkeeping tables of real-time loads, if they are missing.

    - `realtime_watermark`: per landing store, the highest event `seq` loaded;
    - `realtime_calls_seen`: every call a real-time delivery typed successfully (the export
      may replace its row in `calls` later; this remembers that it was seen in real time).
    """
    ensure_schema(con)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {REALTIME_WATERMARK_TABLE} ("
        "landing_store_id VARCHAR PRIMARY KEY, through_seq BIGINT NOT NULL, "
        "loaded_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {REALTIME_SEEN_TABLE} ("
        "call_id BIGINT PRIMARY KEY, call_date DATE NOT NULL, direction VARCHAR NOT NULL, "
        "source VARCHAR NOT NULL, first_loaded_at TIMESTAMPTZ NOT NULL, "
        "last_loaded_at TIMESTAMPTZ NOT NULL)"
    )


def realtime_watermark(con: duckdb.DuckDBPyConnection, landing_store_id: str) -> int:
    """The highest landed `seq` already loaded from that landing store (0 if none)."""
    exists = count(
        con,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
        [REALTIME_WATERMARK_TABLE],
    )
    if not exists:
        return 0
    return count(
        con,
        f"SELECT coalesce(max(through_seq), 0) FROM {REALTIME_WATERMARK_TABLE} "
        "WHERE landing_store_id = ?",
        [landing_store_id],
    )


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
            con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM calls LIMIT 0")
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
        rejects = _append_rejects(con, rejects_files)
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


def snapshot_path(path: Path) -> Path:
    """Where `cdr-pipeline snapshot` puts the analysts' copy by default: beside the warehouse."""
    return path.with_name(f"{path.stem}-snapshot.duckdb")


def compact(path: Path, *, lock_wait_s: float = 600.0) -> None:
    """Rewrite the DuckDB file whole, in DuckDB's default format (after an erasure).

    DuckDB reuses the blocks a DELETE frees, but does not clear them: the deleted values stay in
    the file until overwritten. A copy holds the live rows only; it replaces the file by a
    rename. The caller holds the writer's turn (the `duckdb_writer` pool), so no load writes
    in between."""
    rewritten = path.with_name(f".{path.name}.compacted")
    snapshot(path, rewritten, lock_wait_s=lock_wait_s, storage_version=None)
    os.replace(rewritten, path)
    # A write-ahead log left beside the old file is in the copy already; replayed onto the new
    # file it would apply twice.
    path.with_name(f"{path.name}.wal").unlink(missing_ok=True)


def snapshot(
    path: Path,
    target: Path,
    *,
    lock_wait_s: float = 60.0,
    storage_version: str | None = "v1.0.0",
) -> Path:
    """Copy the warehouse (tables and views) into `target`, a file analysts may keep open.

    A session on the warehouse itself blocks the loads for as long as it stays open; a session
    on a snapshot blocks nothing. The copy is made through a read-only connection (waiting, like
    any reader, while a load writes), so it holds whole loads only; it is written next to
    `target` and renamed over it, so a session still open on the previous snapshot keeps
    reading that one, intact, until it reconnects.

    The snapshot is written in DuckDB's `storage_version` format, by default the oldest one
    DuckDB writes (v1.0.0, storage version 64), which every DuckDB since 0.10 reads: the DuckDB
    CLI and the drivers BI tools embed lag the library, whose own format (that of the warehouse
    file) they cannot open. At demo size the copy has the same size and takes as long. None
    writes DuckDB's default format for new files.
    """
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with connect(path, read_only=True, lock_wait_s=lock_wait_s) as con:
        (source,) = con.execute("SELECT current_database()").fetchone() or ("",)
        version = f", STORAGE_VERSION '{storage_version}'" if storage_version else ""
        con.execute(f"ATTACH ? AS cdr_snapshot (READ_WRITE{version})", [str(partial)])
        try:
            con.execute(f'COPY FROM DATABASE "{source}" TO cdr_snapshot')
        finally:
            con.execute("DETACH cdr_snapshot")
    os.replace(partial, target)
    return target
