"""Real-time CDRs through real Dagster: the sensor, `realtime_calls`, the merge with the export and
the reconciliation check, on a real DuckDB file (and the Callr simulator for the export)."""

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from cdr_pipeline import realtime, warehouse
from cdr_pipeline.callr.simulator import SimulatorServer, simulate_export
from cdr_pipeline.config import Settings, day_window
from cdr_pipeline.defs.definitions import DAILY_JOB, build_definitions
from cdr_pipeline.defs.realtime import RECONCILE_CHECK, RECONCILE_JOB
from cdr_pipeline.landing import LandingStore, landing_path
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.receiver import (
    PUSH_URL,
    SECRET,
    TOKEN,
    WEBHOOK_URL,
    ThreadedReceiver,
    bearer_headers,
    encode,
    sample_cdr,
    sensor_tick,
    signed_headers,
    webhook_event,
)

SIM_OPTIONS = {"calls_per_day": 12, "variety": False, "defects": False}


def _settings(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "CDR_DATA_DIR": str(data_dir),
            "CDR_START_DATE": "2026-01-01",
            "CDR_TIMEZONE": "Europe/Paris",
            **env,
        }
    )


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ThreadedReceiver]:
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    with ThreadedReceiver(_settings(tmp_path), credentials) as server:
        yield server


def _webhook(server: ThreadedReceiver, document: dict) -> dict:
    body = encode(document)
    response = httpx.post(
        server.base_url + WEBHOOK_URL, content=body, headers=signed_headers(body), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def _push(server: ThreadedReceiver, document: dict) -> dict:
    response = httpx.post(
        server.base_url + PUSH_URL, content=encode(document), headers=bearer_headers(), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def _query(settings: Settings, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_sensor_skips_until_the_receiver_has_landed_something(
    tmp_path: Path, instance: dg.DagsterInstance
):
    defs = build_definitions(_settings(tmp_path))
    tick = sensor_tick(defs, instance)
    assert tick.run_ids == []
    assert "no landing store" in (tick.skip_message or "")


def test_landed_events_reach_calls_after_the_sensor_run(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: ThreadedReceiver
):
    settings = _settings(tmp_path)
    defs = build_definitions(settings)
    _webhook(receiver, webhook_event(sample_cdr(9007199254740993001), event_id="e1"))
    _push(receiver, {"cdr": sample_cdr(9007199254740993002, direction="outbound")})
    _webhook(
        receiver,  # a CDR without `direction`: the event type says it
        {
            "type": "v2.call.outbound.ended",
            "data": {"callid": 7, "started": "2026-11-02T23:30:00Z"},
        },
    )
    _webhook(receiver, webhook_event(sample_cdr(8), event_type="v2.call.inbound.started"))

    tick = sensor_tick(defs, instance)
    assert tick.success and len(tick.run_ids) == 1
    rows = _query(
        settings,
        "SELECT call_id, call_date, direction, source, billing_debit, caller_restricted, "
        "hangup_cause_name FROM calls ORDER BY call_id",
    )
    assert [r[:4] for r in rows] == [
        (7, dt.date(2026, 11, 3), "outbound", "webhook"),  # 23:30 UTC is the 3rd in Paris
        (9007199254740993001, dt.date(2026, 11, 2), "inbound", "webhook"),
        (9007199254740993002, dt.date(2026, 11, 2), "outbound", "push"),
    ]
    assert str(rows[1][4]) == "0.127500" and rows[1][5] is False
    assert rows[1][6] == "Normal call clearing"

    materialization = instance.get_latest_materialization_event(
        dg.AssetKey("realtime_calls")
    ).asset_materialization
    assert materialization.metadata["loaded_through_seq"].value == 3
    assert materialization.metadata["calls_written"].value == 3

    # Nothing new: the sensor skips, whatever its cursor says.
    again = sensor_tick(defs, instance, tick.cursor)
    assert again.run_ids == [] and "all 3 landed events are loaded" in again.skip_message


def test_bad_cdrs_land_in_call_rejects_with_the_reason(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: ThreadedReceiver
):
    settings = _settings(tmp_path)
    bad = webhook_event(
        sample_cdr("12.0", started="2026-11-02T09:00:00Z", durationTotal=-4, billingDebit="1.23456")
    )
    stored = _webhook(receiver, bad)
    no_started = _push(receiver, {"cdr": {"callid": 55, "direction": "sideways"}})
    clashing_keys = _push(receiver, {"cdr": {"callid": 56, "call_id": 57, "direction": "inbound"}})
    _webhook(receiver, webhook_event(sample_cdr(58)))  # one good call among them

    assert sensor_tick(build_definitions(settings), instance).success
    rejects = _query(
        settings,
        "SELECT source_row, source, call_date, direction, reason, raw FROM call_rejects "
        "ORDER BY source_row",
    )
    assert [r[0] for r in rejects] == [stored["seq"], no_started["seq"], clashing_keys["seq"]]
    seq_bad, seq_missing, seq_clash = rejects
    assert seq_bad[1:4] == ("webhook", dt.date(2026, 11, 2), "inbound")
    for fragment in ("callid: not an int64: '12.0'", "durationTotal", "billingDebit"):
        assert fragment in seq_bad[4]
    assert json.loads(seq_bad[5]) == bad  # raw = the request body as received
    assert seq_missing[1] == "push" and seq_missing[3] == "unknown"
    assert "started: missing" in seq_missing[4] and "direction" in seq_missing[4]
    assert seq_clash[1] == "push" and "both map to the Callr field 'callid'" in seq_clash[4]
    assert _query(settings, "SELECT call_id, source FROM calls") == [(58, "webhook")]


def test_latest_delivery_of_a_call_wins_and_redeliveries_are_harmless(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: ThreadedReceiver
):
    settings = _settings(tmp_path)
    defs = build_definitions(settings)
    _webhook(receiver, webhook_event(sample_cdr(42, billingDebit="100"), event_id="evt-42"))
    _push(receiver, {"cdr": sample_cdr(42, billingDebit="200")})  # same batch: latest wins
    first = sensor_tick(defs, instance)
    assert first.success
    assert _query(settings, "SELECT billing_debit, source FROM calls") == [(Decimal(2), "push")]
    materialization = instance.get_latest_materialization_event(
        dg.AssetKey("realtime_calls")
    ).asset_materialization
    assert materialization.metadata["superseded_deliveries"].value == 1

    # A redelivered webhook is not landed again; a new version in a later batch replaces.
    assert _webhook(receiver, webhook_event(sample_cdr(42), event_id="evt-42"))["status"] == (
        "duplicate"
    )
    _webhook(receiver, webhook_event(sample_cdr(42, billingDebit="300"), event_id="evt-42b"))
    assert sensor_tick(defs, instance, first.cursor).success
    assert _query(settings, "SELECT count(*), max(billing_debit) FROM calls") == [(1, Decimal(3))]


def test_a_killed_load_is_loaded_exactly_once(tmp_path: Path, receiver: ThreadedReceiver):
    # The watermark moves in the loading transaction: a load that fails before COMMIT leaves
    # calls and watermark as they were, and the next load takes the same events, once.
    settings = _settings(tmp_path)
    for callid in (1, 2, 3):
        _webhook(receiver, webhook_event(sample_cdr(callid)))
    lake = warehouse.Lake(settings.data_dir)
    with warehouse.connect(settings.warehouse) as con:
        original = warehouse.upsert_realtime

        def fails_mid_transaction(con, calls_files, rejects_files, **kw):
            # The calls are merged, then reading the rejects fails: all must roll back.
            return original(con, calls_files, [tmp_path / "missing.parquet"], **kw)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(warehouse, "upsert_realtime", fails_mid_transaction)
            with pytest.raises(duckdb.Error):
                realtime.load_landed_events(
                    con, landing_path(tmp_path), lake, timezone=settings.timezone
                )
        assert _count_calls(con) == 0
        result = realtime.load_landed_events(
            con, landing_path(tmp_path), lake, timezone=settings.timezone
        )
        assert (result.events, _count_calls(con)) == (3, 3)
        again = realtime.load_landed_events(
            con, landing_path(tmp_path), lake, timezone=settings.timezone
        )
        assert (again.events, again.load, _count_calls(con)) == (0, None, 3)
        assert not list(lake.staging_dir.glob("realtime-*"))


def _count_calls(con) -> int:
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    return con.execute("SELECT count(*) FROM calls").fetchone()[0] if "calls" in tables else 0


def _export_call(day: dt.date, timezone: str) -> dict[str, str]:
    """A call the simulator's inbound export of `day` holds, started on that day."""
    start, end = day_window(day, timezone)
    export = simulate_export(start, end, "inbound", **SIM_OPTIONS)
    for row in export.calls.iter_rows(named=True):
        if row["callid"] not in {str(i) for i in export.carried_over_ids}:
            return row
    raise AssertionError("the simulated export has no call of its own day")


def test_webhook_then_export_gives_one_row_with_export_values(
    tmp_path: Path,
    instance: dg.DagsterInstance,
    receiver: ThreadedReceiver,
    monkeypatch: pytest.MonkeyPatch,
):
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    with SimulatorServer(api_key=SIMULATOR_KEY, **SIM_OPTIONS) as simulator:
        monkeypatch.setenv("CALLR_API_KEY", SIMULATOR_KEY)
        settings = _settings(tmp_path, CALLR_BASE_URL=simulator.base_url)
        defs = build_definitions(settings)
        call = _export_call(day, settings.timezone)
        callid = int(call["callid"])
        # Real time first, with a provisional debit; and a call the export will never hold.
        provisional = {**call, "billingDebit": "99999", "callerRestricted": "false"}
        _webhook(receiver, webhook_event(provisional, event_id=f"evt-{callid}"))
        ghost = sample_cdr(1234567, started=f"{day.isoformat()}T12:00:00+01:00")
        _push(receiver, {"cdr": ghost})
        assert sensor_tick(defs, instance).success
        assert _query(
            settings, "SELECT source, billing_debit FROM calls WHERE call_id = ?", [callid]
        ) == [("webhook", Decimal("999.99"))]

        # Then the day's export: one row, the export's values.
        run = defs.resolve_job_def(DAILY_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=instance, raise_on_error=False
        )
        assert run.success
        rows = _query(
            settings,
            "SELECT source, billing_debit, load_partition FROM calls WHERE call_id = ?",
            [callid],
        )
        expected_debit = Decimal(call["billingDebit"] or "0") / 100
        assert rows == [("export", expected_debit, day)]
        assert _query(settings, "SELECT count(*) - count(DISTINCT call_id) FROM calls") == [(0,)]

        # A late real-time delivery does not override the export.
        _webhook(receiver, webhook_event(provisional, event_id=f"evt-{callid}-late"))
        assert sensor_tick(defs, instance).success
        assert _query(
            settings, "SELECT source, billing_debit FROM calls WHERE call_id = ?", [callid]
        ) == [("export", expected_debit)]
        # Re-loading the day keeps the real-time-only call (export loads remove only export rows).
        assert (
            defs.resolve_job_def(DAILY_JOB)
            .execute_in_process(partition_key=day.isoformat(), instance=instance)
            .success
        )
        assert _query(settings, "SELECT source FROM calls WHERE call_id = 1234567") == [("push",)]

        # Reconciliation (the day is 3 days back): the ghost call is flagged one way, the
        # export's other calls of that day (never delivered in real time) the other way.
        check_run = defs.resolve_job_def(RECONCILE_JOB).execute_in_process(instance=instance)
        (evaluation,) = [
            e.asset_check_evaluation_data
            for e in check_run.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        assert evaluation.check_name == RECONCILE_CHECK
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        assert metadata["realtime_missing_from_export"] == 1
        assert "1234567" in metadata["realtime_missing_examples"]
        exported_that_day = _query(
            settings,
            "SELECT count(*) FROM calls WHERE source = 'export' AND call_date >= ?",
            [day],
        )[0][0]
        assert metadata["export_missing_from_realtime"] == exported_that_day - 1
        assert str(callid) not in metadata["export_missing_examples"]


def test_reconciliation_passes_when_both_sides_agree(tmp_path: Path):
    settings = _settings(tmp_path)
    with warehouse.connect(settings.warehouse) as con:
        warehouse.ensure_realtime_schema(con)
        assert realtime.reconcile(con, dt.date(2026, 11, 5)).passed
    with LandingStore(landing_path(tmp_path)) as store:
        assert store.max_seq() == 0
