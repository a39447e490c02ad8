"""The landing store: every accepted CDR delivery, durably, before the receiver says 2xx.

One SQLite file, `CDR_DATA_DIR/realtime/events.sqlite`, in WAL mode with `synchronous=FULL`:
a transaction's commit returns only after its WAL frames are fsync'd, so an acknowledged event
survives a killed process and a power cut. Why SQLite rather than fsync'd NDJSON segments:

- `seq` (INTEGER PRIMARY KEY AUTOINCREMENT) is a monotonic id, never reused: the sensor's cursor
  and the loader's watermark are one number, with no segment rotation or offsets to get right;
- a UNIQUE `dedup_key` drops redeliveries (same event id, or the same CDR content when the
  envelope has no id) inside the same transaction that stores the event;
- readers (the Dagster sensor and loader, other processes) read committed rows while the
  receiver writes, with no torn last line to detect;
- it is in the standard library.

Throughput comes from group commit: request handlers hand records to one writer thread, which
stores everything queued in one transaction and one fsync, then wakes every waiting handler. A
group that fails is retried record by record, so one record that cannot be stored fails alone.
The writer remembers its last outcome, and probes the file when asked and idle (`health`): the
receiver's `/healthz` says whether an event could be stored now.

The receiver is the only writer of this file; it never opens DuckDB (one writer, CONTRACT).
Landed rows are kept (they are the real-time audit trail) until CDR_RAW_RETENTION_DAYS says
otherwise or an erasure removes them (README "Privacy"); in pseudonymise mode their bodies are
pseudonymised once loaded (`cdr_pipeline.realtime`).
"""

import concurrent.futures
import contextlib
import datetime as dt
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,     -- ISO 8601 UTC, microseconds
    source TEXT NOT NULL,          -- webhook / push
    event_type TEXT,               -- as sent; NULL for pushes and bare CDRs
    event_id TEXT,                 -- as sent, when the envelope has one
    dedup_key TEXT NOT NULL UNIQUE,
    callid TEXT,                   -- the CDR's callid as written (may be invalid)
    started TEXT,                  -- the CDR's started as written (may be invalid)
    cdr_path TEXT NOT NULL,        -- where the CDR sits in body: '', 'cdr', 'data.cdr'...
    body TEXT NOT NULL             -- the request body exactly as received (UTF-8)
);
"""
_COLUMNS = (
    "received_at", "source", "event_type", "event_id", "dedup_key", "callid", "started",
    "cdr_path", "body",
)  # fmt: skip


def landing_path(data_dir: Path) -> Path:
    """Where the receiver lands events under `CDR_DATA_DIR`."""
    return data_dir / "realtime" / "events.sqlite"


@dataclass(frozen=True)
class LandingRecord:
    """One delivery to store (see the `events` table above)."""

    received_at: dt.datetime
    source: str
    event_type: str | None
    event_id: str | None
    dedup_key: str
    callid: str | None
    started: str | None
    cdr_path: str
    body: str

    def row(self) -> tuple:
        return (
            self.received_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            self.source,
            self.event_type,
            self.event_id,
            self.dedup_key,
            self.callid,
            self.started,
            self.cdr_path,
            self.body,
        )


@dataclass(frozen=True)
class LandedEvent:
    """A stored event, as the loader reads it back."""

    seq: int
    received_at: dt.datetime
    source: str
    event_type: str | None
    event_id: str | None
    callid: str | None
    started: str | None
    cdr_path: str
    body: str


@dataclass(frozen=True)
class Stored:
    """The outcome of storing one record: its `seq`, and whether it was already there."""

    seq: int
    duplicate: bool


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        # Deleted and rewritten rows are zeroed, not left in free pages (erasure, retention).
        con.execute("PRAGMA secure_delete=ON")
    con.execute("PRAGMA busy_timeout=30000")
    return con


class LandingStore:
    """Read and write access to the landing file. One instance per thread."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._con = _connect(path, read_only=read_only)
        if not read_only:
            self._con.executescript(_SCHEMA)
            self._con.execute(
                "INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,)
            )
        row = self._con.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        self.store_id: str = row[0]

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "LandingStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, records: Sequence[LandingRecord]) -> list[Stored]:
        """Store `records` in one transaction (one fsync); a known `dedup_key` is not stored
        again and reports the first delivery's `seq`."""
        con = self._con
        outcomes: list[Stored] = []
        con.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                cursor = con.execute(
                    f"INSERT OR IGNORE INTO events ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                    record.row(),
                )
                if cursor.rowcount == 1:
                    outcomes.append(Stored(int(cursor.lastrowid or 0), False))
                else:
                    (seq,) = con.execute(
                        "SELECT seq FROM events WHERE dedup_key = ?", (record.dedup_key,)
                    ).fetchone()
                    outcomes.append(Stored(int(seq), True))
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        return outcomes

    def probe(self) -> None:
        """Write and fsync a tiny transaction: raises if nothing can be stored now."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_probe', ?)",
                (dt.datetime.now(dt.UTC).isoformat(),),
            )
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def replace_bodies(self, bodies: Mapping[int, str]) -> int:
        """Rewrite the bodies of events by `seq` (pseudonymisation), then purge the old text."""
        changed = self._write(
            "UPDATE events SET body = ? WHERE seq = ? AND body <> ?",
            [(body, seq, body) for seq, body in bodies.items()],
        )
        self.purge_freed_pages()
        return changed

    def delete_events(self, where: str, params: Sequence[object] = ()) -> list[int]:
        """Delete the events matching an SQL condition (erasure, retention); their `seq`s. The
        freed pages are purged of their text (see `purge_freed_pages`)."""
        with self._immediate() as con:
            seqs = [r[0] for r in con.execute(f"SELECT seq FROM events WHERE {where}", params)]
            con.execute(f"DELETE FROM events WHERE {where}", params)
        self.purge_freed_pages()
        return seqs

    def events_where(self, where: str, params: Sequence[object] = ()) -> list[tuple[int, str]]:
        """(seq, body) of the events matching an SQL condition."""
        return self._con.execute(f"SELECT seq, body FROM events WHERE {where}", params).fetchall()

    def _write(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        with self._immediate() as con:
            return sum(con.execute(sql, row).rowcount for row in rows)

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block succeeds, else rolled back."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def purge_freed_pages(self) -> None:
        """Leave no trace of deleted or rewritten text in the file: `secure_delete` (set when
        the store is opened for writing) zeroes freed content, and a truncating checkpoint
        moves the new pages into the file and empties the WAL, which held the old ones."""
        self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def max_seq(self) -> int:
        """The highest `seq` stored (0 when empty)."""
        return int(self._con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def count(self) -> int:
        return int(self._con.execute("SELECT count(*) FROM events").fetchone()[0])

    def read_after(self, seq: int, *, limit: int) -> list[LandedEvent]:
        """Events with `seq` greater than `seq`, oldest first, at most `limit`."""
        rows = self._con.execute(
            "SELECT seq, received_at, source, event_type, event_id, callid, started, cdr_path, "
            "body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [
            LandedEvent(
                seq=r[0],
                received_at=dt.datetime.fromisoformat(r[1]),
                source=r[2],
                event_type=r[3],
                event_id=r[4],
                callid=r[5],
                started=r[6],
                cdr_path=r[7],
                body=r[8],
            )
            for r in rows
        ]


def _rollback(con: sqlite3.Connection) -> None:
    """Roll back after a failure, keeping the failure the one reported.

    SQLite rolls a transaction back by itself after some errors (SQLITE_FULL, SQLITE_IOERR): a
    second ROLLBACK would then raise "no transaction is active" and hide the disk error.
    """
    if not con.in_transaction:
        return
    try:
        con.execute("ROLLBACK")
    except sqlite3.Error as error:
        log.warning("landing store: rollback after a failed write also failed: %s", error)


@contextlib.contextmanager
def open_reader(path: Path) -> Iterator[LandingStore | None]:
    """A read-only view of the landing file, or None when the receiver never wrote one."""
    if not path.exists():
        yield None
        return
    store = LandingStore(path, read_only=True)
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True)
class WriterHealth:
    """Whether the writer could store an event just now: None, or why not."""

    error: str | None
    at: float  # time.monotonic() of the outcome


class LandingWriter:
    """The receiver's single writer thread, committing queued records in groups.

    `submit` returns a future that resolves to a `Stored` once the record's transaction has
    committed (fsync'd), or fails with the storage error: the handler acknowledges only then.
    """

    _STOP = object()
    _PROBE = object()

    def __init__(self, path: Path, *, max_group: int = 512) -> None:
        self.path = path
        self._store = LandingStore(path)
        self.store_id = self._store.store_id
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_group = max_group
        self.groups_committed = 0
        self._last = WriterHealth(None, time.monotonic())
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def submit(self, record: LandingRecord) -> "concurrent.futures.Future[Stored]":
        future: concurrent.futures.Future[Stored] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the landing writer has stopped"))
            return future
        self._queue.put((record, future))
        return future

    def health(self, max_age_s: float = 1.0) -> "concurrent.futures.Future[WriterHealth]":
        """The last write's outcome if younger than `max_age_s`, else a probe's (one small
        fsync'd write, queued behind the events): at most one probe per `max_age_s`."""
        future: concurrent.futures.Future[WriterHealth] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_result(WriterHealth("the landing writer has stopped", time.monotonic()))
        elif time.monotonic() - self._last.at < max_age_s:
            future.set_result(self._last)
        else:
            self._queue.put((self._PROBE, future))
        return future

    def max_seq(self) -> int:
        with open_reader(self.path) as reader:
            return reader.max_seq() if reader else 0

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close the file."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self._store.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group = [self._queue.get()]
            while len(group) < self._max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self._STOP in group:
                stopping = True
                group = [item for item in group if item is not self._STOP]
            probes = [future for record, future in group if record is self._PROBE]
            records = [(record, future) for record, future in group if record is not self._PROBE]
            if records:
                self._commit(records)
            if probes:
                self._probe(probes)

    def _commit(self, group: list) -> None:
        records = [record for record, _ in group]
        try:
            outcomes = self._store.append(records)
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            if len(group) > 1:
                # One record that cannot be stored must not fail the others: retry one by one.
                # (When the disk is full each fails again, at once.)
                failed = [self._commit_one(item) for item in group].count(False)
                log.error(
                    "landing store %s: a group of %d events failed (%s); one by one, %d failed",
                    self.path,
                    len(group),
                    _describe(error),
                    failed,
                )
            else:
                log.error("landing store %s: could not commit an event: %s", self.path, error)
                group[0][1].set_exception(error)
            return
        self._succeeded()
        for (_, future), outcome in zip(group, outcomes, strict=True):
            future.set_result(outcome)

    def _commit_one(self, item: tuple) -> bool:
        record, future = item
        try:
            (outcome,) = self._store.append([record])
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            future.set_exception(error)
            return False
        self._succeeded()
        future.set_result(outcome)
        return True

    def _probe(self, futures: list) -> None:
        try:
            self._store.probe()
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            log.error("landing store %s: not writable: %s", self.path, error)
        else:
            self._succeeded()
        for future in futures:
            future.set_result(self._last)

    def _succeeded(self) -> None:
        self.groups_committed += 1
        self._last = WriterHealth(None, time.monotonic())


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"
