"""The KPI marts on a hand-built `calls` table in a real DuckDB file; expected values by hand."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from cdr_pipeline import marts, warehouse
from cdr_pipeline_tests.support.marts_rows import (
    DAY,
    at,
    call,
    inbound_day,
    outbound_day,
    query,
    write_calls,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    write_calls(path, outbound_day() + inbound_day())
    return path


def daily(path: Path, direction: str, day: dt.date = DAY) -> dict:
    with warehouse.connect(path, read_only=True) as con:
        rows = query(
            con,
            "SELECT * FROM daily_kpis WHERE call_date = ? AND direction = ?",
            [day, direction],
        )
    assert len(rows) == 1
    return rows[0]


def test_daily_kpis_outbound_by_hand(db: Path) -> None:
    row = daily(db, "outbound")
    # 7 calls; answered: 1, 2, 6.
    assert (row["calls"], row["answered_calls"]) == (7, 3)
    assert row["asr"] == pytest.approx(3 / 7)
    # NER: the 3 answered + 3 (17 user busy) + 4 (19 no answer) + 7 (21 rejected); not 5 (34).
    assert row["ner"] == pytest.approx(6 / 7)
    # ACD denominator = answered calls (3), including call 6 answered for 0 s:
    # (120 + 30 + 0) / 3, not / 7 (all calls) and not / 2 (calls with answered seconds).
    assert row["acd_s"] == pytest.approx(50.0)
    assert row["billed_minutes"] == pytest.approx((120 + 60) / 60)
    assert row["billing_debit"] == Decimal("0.36")
    assert row["billing_credit"] == Decimal("0.05")
    assert row["cost_per_billed_minute"] == Decimal("0.12")  # 0.36 / 3 minutes
    # Calls 1 and 2 overlap; call 3 starts the instant call 1 ends (touching, not overlapping).
    assert row["peak_concurrent_calls"] == 2


def test_daily_kpis_inbound_by_hand(db: Path) -> None:
    row = daily(db, "inbound")
    assert (row["calls"], row["answered_calls"]) == (5, 5)
    assert row["asr"] == 1.0 and row["ner"] == 1.0
    assert row["acd_s"] == pytest.approx((590 + 55 + 860 + 50 + 590) / 5)
    assert row["billed_minutes"] == 0.0
    assert row["cost_per_billed_minute"] is None  # nothing billed: no rate, not a division error
    assert row["peak_concurrent_calls"] == 3  # 101, 102 and 103 at 09:05:30


def test_ner_cause_codes_are_configurable(db: Path) -> None:
    only_busy = marts.MartSettings("UTC", (17,))
    with warehouse.connect(db) as con:
        marts.rebuild_marts(con, only_busy)
        assert marts.mart_settings(con) == only_busy
    # Only call 3 (17) joins the 3 answered calls now.
    assert daily(db, "outbound")["ner"] == pytest.approx(4 / 7)
    with warehouse.connect(db) as con:
        warehouse.ensure_schema(con)  # every load runs this: it must keep the configured codes
    assert daily(db, "outbound")["ner"] == pytest.approx(4 / 7)


def test_a_settings_change_without_a_rebuild_is_refused_not_mixed(db: Path) -> None:
    """Marts computed with the default NER codes must not get days computed with others."""
    with warehouse.connect(db) as con:
        con.execute("INSERT INTO mart_pending_days VALUES (?)", [DAY])
        with pytest.raises(marts.MartSettingsError) as refused:
            marts.refresh_pending(con, marts.MartSettings("UTC", (17,)))
        assert "CDR_NER_CAUSES=17,18,19,21" in str(refused.value)
        assert "CDR_NER_CAUSES=17," in str(refused.value)
        assert "cdr-pipeline rebuild-marts" in str(refused.value)
        assert marts.pending_days(con) == [DAY]  # nothing was recomputed
        with pytest.raises(marts.MartSettingsError):
            marts.refresh_pending(con, marts.MartSettings("Europe/Paris"))
        assert marts.refresh_pending(con, marts.MartSettings()) == [DAY]  # same settings: fine
    assert daily(db, "outbound")["ner"] == pytest.approx(6 / 7)


def test_answered_call_with_a_ner_cause_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    write_calls(
        path,
        [
            call(1, at(DAY, "08:00:00"), at(DAY, "08:01:00"), answered=at(DAY, "08:00:10"),
                 cause=17),
            call(2, at(DAY, "09:00:00"), at(DAY, "09:00:20"), cause=31),
        ],
    )  # fmt: skip
    assert daily(path, "outbound")["ner"] == pytest.approx(1 / 2)


def test_peak_concurrency_touching_chain_and_simultaneous_starts(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    t = lambda hhmmss: at(DAY, hhmmss)  # noqa: E731
    write_calls(
        path,
        [
            # a chain of touching intervals [0, 60), [60, 120), [120, 180): never two at once
            call(1, t("08:00:00"), t("08:01:00")),
            call(2, t("08:01:00"), t("08:02:00")),
            call(3, t("08:02:00"), t("08:03:00")),
            # zero-length calls are never in progress, even stacked on a running call
            call(4, t("08:02:30"), t("08:02:30")),
            call(5, t("08:02:30"), t("08:02:30")),
            # inbound: two calls starting at the same instant overlap
            call(11, t("09:00:00"), t("09:05:00"), direction="inbound"),
            call(12, t("09:00:00"), t("09:01:00"), direction="inbound"),
        ],
    )
    assert daily(path, "outbound")["peak_concurrent_calls"] == 1
    assert daily(path, "inbound")["peak_concurrent_calls"] == 2


def test_peak_concurrency_counts_calls_carried_over_midnight(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    before = DAY - dt.timedelta(days=1)
    write_calls(
        path,
        [
            call(1, at(before, "23:59:00"), at(DAY, "00:02:00")),  # still in progress at 00:01
            call(2, at(DAY, "00:01:00"), at(DAY, "00:03:00")),
        ],
    )
    assert daily(path, "outbound", before)["peak_concurrent_calls"] == 1
    assert daily(path, "outbound")["peak_concurrent_calls"] == 2


def test_missing_end_falls_back_to_total_duration(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    rows = [
        call(1, at(DAY, "08:00:00"), at(DAY, "08:10:00")),
        call(2, at(DAY, "08:05:00"), None) | {"duration_total_s": 60},  # [08:05, 08:06)
    ]
    write_calls(path, rows)
    assert daily(path, "outbound")["peak_concurrent_calls"] == 2


def test_hourly_traffic_by_hand(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        rows = query(
            con,
            "SELECT hour, direction, calls, answered_calls, billed_minutes FROM hourly_traffic "
            "WHERE call_date = ? ORDER BY direction, hour",
            [DAY],
        )
    assert [tuple(r.values()) for r in rows] == [
        (9, "inbound", 5, 5, 0.0),
        (10, "outbound", 3, 2, 3.0),  # calls 1, 2, 3; 180 billed seconds
        (11, "outbound", 1, 0, 0.0),
        (12, "outbound", 1, 0, 0.0),
        (13, "outbound", 1, 1, 0.0),
        (14, "outbound", 1, 0, 0.0),
    ]


def test_hourly_traffic_reads_the_hour_in_the_configured_timezone(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    # 23:30 UTC on 2 March is 00:30 on 3 March in Paris (UTC+1): the normaliser dates it the 3rd.
    late = at(DAY, "23:30:00")
    write_calls(
        path,
        [call(1, late, late + dt.timedelta(minutes=1), call_date=DAY.replace(day=3))],
        marts.MartSettings("Europe/Paris"),
    )
    with warehouse.connect(path) as con:
        rows = query(con, "SELECT call_date, hour FROM hourly_traffic")
    assert rows == [{"call_date": dt.date(2026, 3, 3), "hour": 0}]


def test_destination_kpis_by_hand(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        rows = query(
            con,
            "SELECT billing_destination_label AS label, calls, answered_calls, asr, acd_s, "
            "billed_minutes, billing_debit, cost_per_billed_minute FROM destination_kpis "
            "WHERE call_date = ? AND direction = 'outbound' ORDER BY label NULLS LAST",
            [DAY],
        )
    assert rows == [
        {"label": "France mobile", "calls": 2, "answered_calls": 2, "asr": 1.0,
         "acd_s": (120 + 30) / 2, "billed_minutes": 3.0, "billing_debit": Decimal("0.36"),
         "cost_per_billed_minute": Decimal("0.12")},
        {"label": "Germany", "calls": 3, "answered_calls": 0, "asr": 0.0, "acd_s": None,
         "billed_minutes": 0.0, "billing_debit": Decimal("0"), "cost_per_billed_minute": None},
        {"label": None, "calls": 2, "answered_calls": 1, "asr": 0.5, "acd_s": 0.0,
         "billed_minutes": 0.0, "billing_debit": Decimal("0"), "cost_per_billed_minute": None},
    ]  # fmt: skip


def test_hangup_cause_daily_by_hand(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        rows = query(
            con,
            "SELECT hangup_cause, hangup_cause_class, hangup_source, calls, share "
            "FROM hangup_cause_daily WHERE call_date = ? AND direction = 'outbound' "
            "ORDER BY hangup_cause, hangup_source",
            [DAY],
        )
    assert [tuple(r.values()) for r in rows] == [
        (16, "normal event", "callee", 1, pytest.approx(1 / 7)),
        (16, "normal event", "caller", 2, pytest.approx(2 / 7)),  # calls 2 and 6
        (17, "normal event", "callee", 1, pytest.approx(1 / 7)),
        (19, "normal event", "callee", 1, pytest.approx(1 / 7)),
        (21, "normal event", "callee", 1, pytest.approx(1 / 7)),
        (34, "resource unavailable", "system", 1, pytest.approx(1 / 7)),
    ]
    with warehouse.connect(db, read_only=True) as con:
        shares = con.execute(
            "SELECT direction, sum(share) FROM hangup_cause_daily GROUP BY ALL"
        ).fetchall()
    assert all(total == pytest.approx(1.0) for _, total in shares)


def test_scenario_kpis_by_hand(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        rows = query(
            con,
            "SELECT scenario_sid, scenario_name, calls, answered_calls, asr, ner, acd_s "
            "FROM scenario_kpis WHERE call_date = ? AND direction = 'outbound' "
            "ORDER BY scenario_name",
            [DAY],
        )
    assert rows == [
        # calls 1-6: answered 1, 2, 6; NER adds 3 (17) and 4 (19)
        {"scenario_sid": "sid-dialer", "scenario_name": "dialer", "calls": 6,
         "answered_calls": 3, "asr": 0.5, "ner": pytest.approx(5 / 6), "acd_s": 50.0},
        {"scenario_sid": "sid-ivr", "scenario_name": "ivr", "calls": 1, "answered_calls": 0,
         "asr": 0.0, "ner": 1.0, "acd_s": None},
    ]  # fmt: skip


def test_mart_rows_counts_each_mart_for_the_day(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        counts = marts.mart_rows(con, DAY)
    assert counts == {
        "daily_kpis": 2,
        "hourly_traffic": 6,
        "destination_kpis": 4,  # 3 outbound labels + the inbound calls' null label
        "hangup_cause_daily": 7,  # 6 outbound + 1 inbound (16, callee)
        "scenario_kpis": 3,  # dialer, ivr, and the inbound calls without a scenario
    }


def test_empty_warehouse_has_empty_marts(tmp_path: Path) -> None:
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        warehouse.ensure_schema(con)
        assert all(n == 0 for n in marts.mart_rows(con, DAY).values())


def test_marts_are_tables_with_the_documented_columns_and_types(db: Path) -> None:
    with warehouse.connect(db, read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert set(marts.MART_TABLES) <= tables
        for mart, columns in marts.MART_COLUMNS.items():
            actual = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index",
                [mart],
            ).fetchall()
            assert actual == [(name, sql_type) for name, sql_type, _ in columns], mart


def test_a_change_of_the_mart_sql_is_a_decision_on_the_definition_version() -> None:
    """Marts computed under another definition version are refused until rebuilt: a change of
    the SQL must come with a decision to bump DEFINITION_VERSION (the figures change) or not (the
    same figures, computed another way), recorded by updating SQL_FINGERPRINT."""
    from cdr_pipeline.marts import definitions

    assert definitions.sql_fingerprint() == definitions.SQL_FINGERPRINT, (
        "the mart SQL changed: bump DEFINITION_VERSION if any figure changes, then set "
        f"SQL_FINGERPRINT = {definitions.sql_fingerprint()!r}"
    )
