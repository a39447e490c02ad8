"""The landing store and its writer on a real SQLite file: failures stay with their cause."""

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from cdr_pipeline.landing import LandingRecord, LandingStore
from cdr_pipeline.receiver.landing import LandingWriter


def _record(key: str, *, callid: str = "1", body: str = "{}") -> LandingRecord:
    return LandingRecord(
        received_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        source="push",
        event_type=None,
        event_id=None,
        dedup_key=key,
        callid=callid,
        started=None,
        cdr_path="cdr",
        body=body,
    )


def test_a_full_store_reports_the_disk_error_not_a_failed_rollback(tmp_path: Path):
    # Regression: SQLite rolls back by itself on SQLITE_FULL; the second ROLLBACK raised
    # "cannot rollback - no transaction is active", which hid the disk error in the log.
    with LandingStore(tmp_path / "events.sqlite") as store:
        pages = store._con.execute("PRAGMA page_count").fetchone()[0]
        store._con.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLite limit: full
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            store.append([_record(f"k{i}", body="x" * 5000) for i in range(20)])
        assert store.count() == 0


def test_one_unstorable_record_fails_alone_not_its_whole_group(tmp_path: Path):
    # Regression: a record SQLite cannot encode (a lone surrogate) failed every event committed
    # in the same group with it.
    path = tmp_path / "events.sqlite"
    writer = LandingWriter(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer waits on its first group...
        first = writer.submit(_record("first"))
        # ...while these queue up, to be committed as one group.
        good = [writer.submit(_record(f"good-{i}")) for i in range(50)]
        bad = writer.submit(_record("bad", callid="\ud800"))
        more = [writer.submit(_record(f"more-{i}")) for i in range(50)]
        blocker.execute("COMMIT")
        assert first.result(timeout=30).seq == 1
        with pytest.raises(UnicodeEncodeError):
            bad.result(timeout=30)
        assert [f.result(timeout=30).duplicate for f in good + more] == [False] * 100
    finally:
        blocker.close()
        writer.close()
    with LandingStore(path, read_only=True) as store:
        assert store.count() == 101


def test_health_probes_the_file_when_no_write_is_recent(tmp_path: Path):
    writer = LandingWriter(tmp_path / "events.sqlite")
    try:
        assert writer.health(max_age_s=0).result(timeout=30).error is None
        writer._store._con.execute("PRAGMA query_only = 1")  # SQLite now refuses every write
        health = writer.health(max_age_s=0).result(timeout=30)
        assert health.error is not None and "readonly" in health.error
        # A recent outcome is reported without another probe.
        assert writer.health(max_age_s=60).result(timeout=30) is health
    finally:
        writer.close()
