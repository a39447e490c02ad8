"""Opening the DuckDB file: a bounded wait while another process holds its lock."""

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

# DuckDB's buffer pool may grow to 80 % of RAM by default, and a day's load (millions of rows
# streamed from Parquet into `calls`) would use much of it: a writer gets a bound instead, and
# DuckDB spills past it (docs/performance.md).
WRITER_MEMORY_LIMIT = "512MB"
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


class WarehouseLockedError(RuntimeError):
    """The DuckDB file stayed locked by another process for longer than the wait allowed."""


def _lock_holder(error: duckdb.Error) -> str | None:
    """'PID 123 (/usr/bin/python3)' from DuckDB's lock error, or None for any other error."""
    text = str(error)
    if "Could not set lock" not in text:
        return None
    match = _LOCK_HOLDER.search(text)
    return f"PID {match['pid']} ({match['program']})" if match else "another process"


def _open(
    path: Path, read_only: bool, lock_wait_s: float, poll_s: float
) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect`, retried while the file's lock is held, for up to `lock_wait_s`."""
    deadline = time.monotonic() + lock_wait_s
    next_log = 0.0
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
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
    con = _open(path, read_only, lock_wait_s, poll_s)
    try:
        if memory_limit is not None and not read_only:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if not read_only:
            # Loads insert a day's Parquet; keeping the files' row order costs DuckDB a second
            # pass, and nothing needs it: a load's rows are stored together either way, which is
            # what lets later loads skip row groups (see `merge`; docs/performance.md).
            con.execute("SET preserve_insertion_order = false")
        yield con
    finally:
        con.close()
