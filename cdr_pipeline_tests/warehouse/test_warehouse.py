"""The warehouse loader on a real DuckDB file: idempotent, order-independent, atomic."""

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from cdr_pipeline import warehouse
from cdr_pipeline.schema import CALL_COLUMNS, CALL_SCHEMA
from cdr_pipeline_tests.support.warehouse import stage

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def call(call_id: int, call_date: dt.date, debit: str = "1.5", **overrides: object) -> dict:
    started = dt.datetime.combine(call_date, dt.time(12), tzinfo=dt.UTC)
    row = {c.name: None for c in CALL_COLUMNS}
    row |= {
        "call_id": call_id,
        "call_date": call_date,
        "direction": "outbound",
        "status": "answered",
        "started_at": started,
        "ended_at": started + dt.timedelta(seconds=60),
        "billing_debit": Decimal(debit),
        "source": "export",
    }
    return row | overrides


def table(con: duckdb.DuckDBPyConnection, sql: str = "SELECT * FROM calls") -> list[tuple]:
    return con.execute(f"{sql} ORDER BY ALL").fetchall()


@pytest.fixture
def lake(tmp_path: Path) -> warehouse.Lake:
    return warehouse.Lake(tmp_path / "data")


def test_load_types_match_the_contract(lake: warehouse.Lake, tmp_path: Path) -> None:
    stage(lake, tmp_path, D1, [call(9007199254740993, D1, debit="0.000001")], rejects=2)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        stats = warehouse.load_partition(con, lake, D1, timezone="UTC")
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'calls'"
            ).fetchall()
        )
        value = con.execute("SELECT call_id, billing_debit FROM calls").fetchone()
    assert stats.incoming_calls == 1 and stats.rejects == 2 and stats.partition_calls == 1
    assert types["call_id"] == "BIGINT"
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["billing_debit"] == "DECIMAL(18,6)"
    assert value == (9007199254740993, Decimal("0.000001"))


def test_call_in_two_exports_is_stored_once_in_any_order(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    # Call 7 started late on D1 and is in both D1's and D2's export; D2's copy differs.
    stage(lake, tmp_path, D1, [call(1, D1), call(7, D1, debit="3")])
    stage(lake, tmp_path, D2, [call(2, D2), call(7, D1, debit="4")])
    stage(lake, tmp_path, D3, [call(3, D3)])
    results = []
    for order in itertools.permutations([D1, D2, D3]):
        db = tmp_path / f"w-{'-'.join(d.isoformat() for d in order)}.duckdb"
        with warehouse.connect(db) as con:
            for day in [*order, order[0]]:  # and one re-run
                warehouse.load_partition(con, lake, day, timezone="UTC")
            results.append(table(con))
            assert warehouse.duplicate_call_ids(con) == (0, [])
    assert all(r == results[0] for r in results)
    by_id = {row[0]: row for row in results[0]}
    assert sorted(by_id) == [1, 2, 3, 7]
    # The home partition (D1, the call's own date) wins over D2's copy.
    assert by_id[7][CALL_SCHEMA_INDEX["billing_debit"]] == Decimal("3")


CALL_SCHEMA_INDEX = {name: i for i, name in enumerate(CALL_SCHEMA)}


def test_rerun_replaces_what_the_partition_loaded_before(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    stage(lake, tmp_path, D1, [call(1, D1), call(2, D1)], rejects=3)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.load_partition(con, lake, D1, timezone="UTC")
        # The export changed: call 2 is gone, call 1's billing was finalised, one reject left.
        stage(lake, tmp_path, D1, [call(1, D1, debit="9.25")], rejects=1)
        stats = warehouse.load_partition(con, lake, D1, timezone="UTC")
        assert table(con, "SELECT call_id, billing_debit FROM calls") == [(1, Decimal("9.25"))]
        assert table(con, "SELECT count(*) FROM call_rejects") == [(1,)]
    assert stats.calls_removed == 1 and stats.calls_restored == 0


def test_removed_call_is_restored_from_another_partition(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    stage(lake, tmp_path, D1, [call(7, D1, debit="3")])
    stage(lake, tmp_path, D2, [call(7, D1, debit="4")])
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.load_partition(con, lake, D2, timezone="UTC")
        warehouse.load_partition(con, lake, D1, timezone="UTC")
        stage(lake, tmp_path, D1, [])  # D1's export no longer carries call 7
        stats = warehouse.load_partition(con, lake, D1, timezone="UTC")
        rows = table(con, "SELECT call_id, billing_debit, load_partition FROM calls")
    assert stats.calls_removed == 1 and stats.calls_restored == 1
    assert rows == [(7, Decimal("4"), D2)]


def test_failed_load_leaves_the_previous_state(lake: warehouse.Lake, tmp_path: Path) -> None:
    stage(lake, tmp_path, D1, [call(1, D1)], rejects=1)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.load_partition(con, lake, D1, timezone="UTC")
        before = (table(con), table(con, "SELECT * FROM call_rejects"))
        stage(lake, tmp_path, D1, [call(1, D1, debit="2"), call(5, D1)], rejects=0)
        lake.rejects_file(D1).write_bytes(b"not parquet")  # fails after calls were merged
        with pytest.raises(duckdb.Error):
            warehouse.load_partition(con, lake, D1, timezone="UTC")
        after = (table(con), table(con, "SELECT * FROM call_rejects"))
    assert after == before


def test_writer_waits_for_a_reader_then_gives_up_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "w.duckdb"
    with warehouse.connect(db) as con:
        warehouse.ensure_schema(con)
    import subprocess
    import sys
    import time

    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); "
            "print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        started = time.monotonic()
        with (
            pytest.raises(warehouse.WarehouseLockedError, match=f"PID {reader.pid}"),
            warehouse.connect(db, lock_wait_s=1.5, poll_s=0.2),
        ):
            pass
        assert time.monotonic() - started >= 1.5
        assert f"locked by PID {reader.pid}" in caplog.text
    finally:
        reader.kill()
        reader.wait()
