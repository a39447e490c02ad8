"""The landing store: the SQLite file where the receiver lands every accepted CDR delivery.

`CDR_DATA_DIR/realtime/events.sqlite`, in WAL mode with `synchronous=FULL` (a commit returns
after its WAL frames are fsync'd). `seq` is the loader's cursor; a UNIQUE `dedup_key` drops
redeliveries. The receiver (`cdr_pipeline.receiver.landing.LandingWriter`) is its only writer
of events; the loader, erasure and retention read it, rewrite bodies or delete rows. The format,
why SQLite, and how long rows are kept: docs/realtime.md, "Durability: acknowledged means written".
"""

import contextlib
import datetime as dt
import logging
import sqlite3
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
        outcomes: list[Stored] = []
        with self._immediate() as con:
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
        return outcomes

    def probe(self) -> None:
        """Write and fsync a tiny transaction: raises if nothing can be stored now."""
        with self._immediate() as con:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_probe', ?)",
                (dt.datetime.now(dt.UTC).isoformat(),),
            )

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
