"""The mart tables, maintained day by day, against the marts computed from scratch; the per-day
`call_id` invariant; and the evidence that a day's load reads a few days of `calls`."""

import datetime as dt
import random
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cdr_pipeline import marts, warehouse
from cdr_pipeline.schema import CALL_SCHEMA, REJECT_SCHEMA
from cdr_pipeline_tests.support.marts_reference import differences
from cdr_pipeline_tests.support.warehouse import stage

D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (1, 2, 3, 4))
SETTINGS = marts.MartSettings()


def at(day: dt.date, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), tzinfo=dt.UTC)


def call(call_id: int, started: dt.datetime, minutes: float, **overrides: object) -> dict:
    """An answered outbound call of `minutes`, dated by its start."""
    ended = started + dt.timedelta(minutes=minutes)
    row = {name: None for name in CALL_SCHEMA}
    return (
        row
        | {
            "call_id": call_id,
            "call_date": started.date(),
            "direction": "outbound",
            "status": "answered",
            "started_at": started,
            "answered_at": started + dt.timedelta(seconds=5),
            "ended_at": ended,
            "duration_total_s": int(minutes * 60),
            "duration_answered_s": int(minutes * 60) - 5,
            "duration_billed_s": 60 * int(minutes + 1),
            "billing_debit": "0.12",
            "billing_credit": "0",
            "billing_destination_label": f"dest-{call_id % 3}",
            "hangup_cause": 16 if call_id % 2 else 17,
            "hangup_source": "callee",
            "scenario_name": f"scenario-{call_id % 2}",
            "source": "export",
        }
        | overrides
    )


def load(
    con: duckdb.DuckDBPyConnection, lake: warehouse.Lake, tmp: Path, day: dt.date, calls: list
):
    stage(lake, tmp, day, [_typed(c) for c in calls])
    stats = warehouse.load_partition(con, lake, day, timezone="UTC")
    marts.refresh_pending(con, SETTINGS)
    return stats


def _typed(row: dict) -> dict:
    from decimal import Decimal

    return row | {"billing_debit": Decimal(row["billing_debit"]), "billing_credit": Decimal("0")}


def assert_marts_equal_reference(con: duckdb.DuckDBPyConnection) -> None:
    assert marts.pending_days(con) == []
    for mart in marts.MART_TABLES:
        assert differences(con, mart) == [], mart
    assert count(con, "SELECT count(*) FROM daily_kpis") > 0


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchall()[0][0]


@pytest.fixture
def lake(tmp_path: Path) -> warehouse.Lake:
    return warehouse.Lake(tmp_path / "data")


def test_marts_follow_loads_reloads_realtime_and_rebuilds(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    midnight = call(2, at(D1, "23:50"), 40)  # in progress across midnight: in D1's and D2's export
    d1 = [call(1, at(D1, "10:00"), 3), midnight, call(3, at(D1, "10:01"), 5)]
    d2 = [midnight, call(4, at(D2, "00:05"), 2), call(5, at(D2, "09:00"), 1)]
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.ensure_schema(con)
        load(con, lake, tmp_path / "1", D1, d1)
        assert_marts_equal_reference(con)
        stats = load(con, lake, tmp_path / "2", D2, d2)
        assert stats.calls_kept_elsewhere == 1  # the midnight call stays D1's
        assert_marts_equal_reference(con)
        # D2's peak concurrency counts the call in progress since D1.
        peak = con.execute(
            "SELECT peak_concurrent_calls FROM daily_kpis WHERE call_date = ?", [D2]
        ).fetchall()
        assert peak == [(2,)]

        # D2 re-loaded: call 5 is gone at the source, call 4 moved back before midnight (D1).
        moved = call(4, at(D1, "23:58"), 9)
        load(con, lake, tmp_path / "3", D2, [midnight, moved])
        assert_marts_equal_reference(con)
        assert count(con, "SELECT count(*) FROM calls WHERE call_id = 5") == 0
        # D2's re-load replaces its own row, even by one that ranks lower (no longer at home).
        assert con.execute("SELECT call_date FROM calls WHERE call_id = 4").fetchall() == [(D1,)]

        # Real time: a new call on D3 and a later delivery replacing it, then the export of D3.
        for minutes in (2, 7):
            rt = _typed(call(6, at(D3, "08:00"), minutes, source="webhook")) | {
                "load_partition": None
            }
            path = tmp_path / f"rt-{minutes}.parquet"
            pl.DataFrame([rt], schema=CALL_SCHEMA).write_parquet(path)
            empty = tmp_path / "rt-rejects.parquet"
            pl.DataFrame(schema=REJECT_SCHEMA).write_parquet(empty)
            warehouse.upsert_realtime(
                con, [path], [empty], landing_store_id="s", through_seq=minutes, timezone="UTC"
            )
            marts.refresh_pending(con, SETTINGS)
            assert_marts_equal_reference(con)
        load(
            con,
            lake,
            tmp_path / "4",
            D3,
            [call(6, at(D3, "08:00"), 4), call(7, at(D3, "12:00"), 1)],
        )
        assert_marts_equal_reference(con)
        assert con.execute("SELECT source FROM calls WHERE call_id = 6").fetchall() == [("export",)]

        # D1 re-loaded without the midnight call: D2's export still carries it, so it is restored
        # from D2's Parquet, as D2's row.
        stats = load(con, lake, tmp_path / "5", D1, [call(1, at(D1, "10:00"), 3), moved])
        assert stats.calls_removed == 2 and stats.calls_restored == 1  # calls 2 and 3; 2 is back
        assert_marts_equal_reference(con)

        # A rebuild with other NER codes equals the reference under those settings.
        marts.rebuild_marts(con, marts.MartSettings("UTC", (17,)))
        assert marts.pending_days(con) == []
        for mart in marts.MART_TABLES:
            assert differences(con, mart) == [], mart


def test_a_call_on_a_reachable_day_is_stored_once_one_beyond_is_found_by_the_audit(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.ensure_schema(con)
        load(con, lake, tmp_path / "1", D1, [call(10, at(D1, "22:00"), 1)])
        # The same call id comes back dated D2 (its start corrected across midnight), within a
        # day of where it is stored: the loads find the stored copy and the rank decides, as
        # for any call two exports carry. From D3's export it is outranked (D1's row is at home).
        moved = call(10, at(D2, "00:30"), 1)
        stats = load(con, lake, tmp_path / "3", D3, [moved])
        assert (stats.calls_written, stats.calls_kept_elsewhere) == (0, 1)
        # From D2's own export it wins (at home too, and a later partition).
        stats = load(con, lake, tmp_path / "2", D2, [moved])
        assert stats.calls_written == 1
        assert warehouse.duplicate_call_ids(con) == (0, [])
        assert con.execute("SELECT call_date FROM calls WHERE call_id = 10").fetchall() == [(D2,)]
        assert_marts_equal_reference(con)

        # A copy stored far from where the call comes back breaks the invariant: the load does
        # not read that far, so its own check cannot see it; the full-table audit does.
        old = dt.date(2026, 10, 1)
        load(con, lake, tmp_path / "old", old, [call(11, at(old, "12:00"), 1)])
        stats = load(con, lake, tmp_path / "4", D4, [call(11, at(D4, "12:00"), 1)])
        assert stats.window == warehouse.merge.Window(
            D4 - dt.timedelta(days=1), D4 + dt.timedelta(days=1)
        )
        assert warehouse.duplicate_call_ids(con, stats.window) == (0, [])  # the per-load check
        assert warehouse.duplicate_call_ids(con) == (1, [11])  # the audit


def test_a_days_load_reads_a_few_row_groups_of_a_long_history(
    lake: warehouse.Lake, tmp_path: Path
) -> None:
    """60 days of 30,000 calls (~15 row groups of history); a day's load, and its re-load, read
    the row groups of its own window, not the table."""
    first = dt.date(2026, 9, 1)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.ensure_schema(con)
        con.execute(
            """
            INSERT INTO calls BY NAME
            SELECT 1000000 + i AS call_id, d::DATE AS call_date, 'outbound' AS direction,
                   d::TIMESTAMPTZ + to_seconds(i % 86000) AS started_at,
                   'export' AS source, d::DATE AS load_partition
            FROM generate_series(?::DATE, ?::DATE - 1, INTERVAL 1 DAY) g(d),
                 range(30000 * (datediff('day', ?::DATE, d::DATE)),
                       30000 * (datediff('day', ?::DATE, d::DATE) + 1)) r(i)
            """,
            [first, D1, first, first],
        )
        total = count(con, "SELECT count(*) FROM calls")
        assert total == 61 * 30000
        marts.rebuild_marts(con, SETTINGS)
        day = [call(n, at(D1, "09:00") + dt.timedelta(seconds=n), 1) for n in range(1, 3000)]
        for attempt in range(2):
            stats = load(con, lake, tmp_path / f"day{attempt}", D1, day)
            assert stats.incoming_calls == 2999
            reads = stats.calls_read
            assert reads.row_groups_total >= 14
            # The window D1-1..D1+1 holds ~1 day of history: 1-2 row groups per statement.
            assert reads.row_groups_read <= 8, reads
            assert reads.rows_read < total / 4, reads
        assert_marts_equal_reference(con)


CHECKSUM = (
    "SELECT count(*), md5(string_agg(c::VARCHAR, chr(10) ORDER BY call_id)) FROM calls c",
    "SELECT count(*), md5(string_agg(r::VARCHAR, chr(10) ORDER BY r::VARCHAR)) FROM call_rejects r",
    *(
        f"SELECT count(*), md5(string_agg(m::VARCHAR, chr(10) ORDER BY m::VARCHAR)) FROM {mart} m"
        for mart in marts.MART_TABLES
    ),
)


def snapshot(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return [con.execute(sql).fetchall()[0] for sql in CHECKSUM]


def export_version(rng: random.Random, day: dt.date, version: int) -> list[dict]:
    """A day's export: its own calls and the previous day's calls still running at midnight;
    a later version drops some calls, moves some across midnight and re-bills others."""
    calls = []
    for n in range(12):
        owner = day if n < 9 else day - dt.timedelta(days=1)
        call_id = owner.toordinal() * 100 + n
        start = at(owner, "23:50" if n >= 7 else f"{8 + n:02d}:00")
        minutes = 30 if n >= 7 else 2
        if version and rng.random() < 0.25:
            continue  # gone at the source
        if version and rng.random() < 0.2:
            start += dt.timedelta(minutes=15)  # 00:05 the next day: moved across midnight
        debit = "0.12" if not version or rng.random() < 0.5 else "0.30"
        calls.append(call(call_id, start, minutes, billing_debit=debit))
    return calls


@pytest.mark.parametrize("seed", range(6))
def test_batched_reordered_reloads_equal_loading_the_final_exports_once(
    tmp_path: Path, seed: int
) -> None:
    """Whatever the batching and the order, the warehouse ends as if each day's final export
    had been loaded once, in date order, into an empty warehouse."""
    rng = random.Random(seed)
    days = [D1, D2, D3, D4]
    lake = warehouse.Lake(tmp_path / "data")
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.ensure_schema(con)
        for version in (0, 1):
            chosen = days if version == 0 else rng.sample(days, 3)
            for day in chosen:
                stage(
                    lake,
                    tmp_path / f"s{version}-{day}",
                    day,
                    [_typed(c) for c in export_version(rng, day, version)],
                )
            order = rng.sample(chosen, len(chosen))
            cut = rng.randint(1, len(order))
            for batch in (order[:cut], order[cut:]):
                if batch:
                    warehouse.load_partitions(con, lake, batch, timezone="UTC")
            marts.refresh_pending(con, SETTINGS)
        assert_marts_equal_reference(con)
        assert warehouse.duplicate_call_ids(con) == (0, [])
        got = snapshot(con)
    with warehouse.connect(tmp_path / "fresh.duckdb") as con:
        warehouse.ensure_schema(con)
        for day in days:
            warehouse.load_partition(con, lake, day, timezone="UTC")
        marts.refresh_pending(con, SETTINGS)
        assert snapshot(con) == got
