"""Copies of the DuckDB file: the analysts' snapshot, and the compaction after an erasure."""

from pathlib import Path

from cdr_pipeline import durable
from cdr_pipeline.warehouse.connection import connect


def snapshot_path(path: Path) -> Path:
    """Where `cdr-pipeline snapshot` puts the analysts' copy by default: beside the warehouse."""
    return path.with_name(f"{path.stem}-snapshot.duckdb")


def compact(path: Path, *, lock_wait_s: float = 600.0) -> None:
    """Rewrite the DuckDB file whole, in DuckDB's default format (after an erasure).

    DuckDB reuses the blocks a DELETE frees, but does not clear them: the deleted values stay in
    the file until overwritten. A copy holds the live rows only; it replaces the file by a
    rename. The caller holds the writer's turn (the `duckdb_writer` pool), so no load writes
    in between."""
    snapshot(path, path, lock_wait_s=lock_wait_s, storage_version=None)
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
    `target` and renamed over it (`durable.replace`), so a session still open on the previous
    snapshot keeps reading that one, intact, until it reconnects.

    The snapshot is written in DuckDB's `storage_version` format, by default the oldest one
    DuckDB writes (v1.0.0, storage version 64), which every DuckDB since 0.10 reads: the DuckDB
    CLI and the drivers BI tools embed lag the library, whose own format (that of the warehouse
    file) they cannot open. None writes DuckDB's default format for new files.
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
    durable.replace(partial, target)
    return target
