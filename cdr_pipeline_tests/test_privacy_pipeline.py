"""Privacy end to end (README "Privacy"), through real Dagster, the simulator over HTTP, the
receiver over HTTP, real Parquet, DuckDB and SQLite files:

- pseudonymise mode: after the daily job and a real-time delivery, none of the numbers the
  clear-mode run stored is in any file of the data folder or of Dagster's storage, the key
  neither, and the analytics by country are those of the clear run;
- `cdr-pipeline erase`: the number is nowhere afterwards, a re-load of its days keeps it out,
  every other call is unchanged;
- the retention job deletes exactly what is past the horizon.
"""

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import duckdb
import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cdr_pipeline import privacy, warehouse
from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline.config import Settings
from cdr_pipeline.defs import runner
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.defs.privacy import RETENTION_JOB
from cdr_pipeline.landing import LandingRecord, LandingStore, landing_path
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.cli import cdr_pipeline
from cdr_pipeline_tests.support.privacy_search import numbers_found
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
    settings_for,
    signed_headers,
    webhook_event,
)

PRIVACY_KEY = "privacy-test-key-7d1f0c93b25e"
DAYS = (dt.date(2026, 11, 2), dt.date(2026, 11, 3))
SIM_OPTIONS = {"calls_per_day": 150}  # with the simulator's variety and defects
REALTIME_CALLER = "+33698765432"
REALTIME_CALLEE = "+447700900777"

pytestmark = pytest.mark.slow


def _settings(data_dir: Path, base_url: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "CDR_DATA_DIR": str(data_dir),
            "CDR_START_DATE": "2026-10-01",
            "CALLR_BASE_URL": base_url,
            **env,
        }
    )


def _query(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _deliver_realtime(
    data_dir: Path, callid: int = 9_000_001, callee: str = REALTIME_CALLEE
) -> None:
    """One webhook and one push (a reject whose raw body carries the numbers)."""
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    with ThreadedReceiver(settings_for(data_dir), credentials) as server:
        cdr = sample_cdr(
            callid,
            started=f"{DAYS[1].isoformat()}T10:15:00+01:00",
            callerNumber=REALTIME_CALLER,
            callee=callee,
        )
        body = encode(webhook_event(cdr, event_id=f"evt-privacy-{callid}"))
        response = httpx.post(
            server.base_url + WEBHOOK_URL, content=body, headers=signed_headers(body), timeout=10
        )
        assert response.status_code == 200, response.text
        bad = {**cdr, "callid": callid + 1, "durationTotal": -5}
        response = httpx.post(
            server.base_url + PUSH_URL, content=encode({"cdr": bad}), headers=bearer_headers()
        )
        assert response.status_code == 200, response.text


def _run_pipeline(data_dir: Path, env: dict[str, str]) -> Settings:
    """The daily job over DAYS, then a real-time delivery loaded by the sensor's run."""
    home = data_dir.parent / "dagster_home"
    home.mkdir(parents=True)
    with (
        SimulatorServer(api_key=SIMULATOR_KEY, **SIM_OPTIONS) as simulator,
        mock.patch.dict(os.environ, {"CALLR_API_KEY": SIMULATOR_KEY, **env}),
        dg.instance_for_test(temp_dir=str(home)) as instance,
    ):
        settings = _settings(data_dir, simulator.base_url, **env)
        defs = build_definitions(settings)
        outcomes = runner.run_ranges(defs, DAYS, instance, days_per_run=len(DAYS))
        assert [o.error or o.failed_days for o in outcomes if not o.success] == []
        _deliver_realtime(data_dir)
        assert sensor_tick(defs, instance).success
    return settings


@pytest.fixture(scope="module")
def clear_run(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _run_pipeline(tmp_path_factory.mktemp("clear") / "data", {"CDR_PRIVACY": "clear"})


def _stored_numbers(settings: Settings) -> set[str]:
    """Every number the clear run stored: in `calls` and in the rejects' raw rows."""
    numbers = {
        n
        for (n,) in _query(
            settings.warehouse,
            "SELECT caller_number FROM calls UNION SELECT callee FROM calls",
        )
        if n
    }
    for (raw,) in _query(settings.warehouse, "SELECT raw FROM call_rejects"):
        document = json.loads(raw)
        cdr = document.get("cdr") or document.get("data") or document
        numbers.update(
            str(v)
            for k, v in cdr.items()
            if k.lower().replace("_", "") in ("callernumber", "callee") and v
        )
    return numbers


def _by_country(path: Path, *, derive: bool) -> pl.DataFrame:
    """Calls, debit and billed seconds by direction and both numbers' country code and type;
    `derive`: from the numbers themselves (clear mode stores them, not their classes)."""
    with duckdb.connect(str(path), read_only=True) as con:
        calls = con.sql("SELECT * FROM calls").pl()
    if derive:
        for number, (code, kind) in privacy.NUMBER_COLUMNS.items():
            calls = privacy.with_number_classes(
                calls.drop(code, kind).lazy(), number, code, kind
            ).collect()
    keys = ["direction", *(n for names in privacy.NUMBER_COLUMNS.values() for n in names)]
    return (
        calls.group_by(keys)
        .agg(pl.len(), pl.col("billing_debit").sum(), pl.col("duration_billed_s").sum())
        .sort(keys, nulls_last=True)
    )


def test_pseudonymise_mode_stores_no_number_in_clear(clear_run: Settings, tmp_path: Path) -> None:
    numbers = _stored_numbers(clear_run)
    assert {REALTIME_CALLER, REALTIME_CALLEE} <= numbers and len(numbers) > 100
    data_dir = tmp_path / "data"
    settings = _run_pipeline(
        data_dir, {"CDR_PRIVACY": "pseudonymise", "CDR_PRIVACY_KEY": PRIVACY_KEY}
    )

    # The search would find them: in the clear run, in the warehouse, the lake and the landing.
    clear_hits = numbers_found([clear_run.data_dir], numbers)
    assert any(path.endswith(".duckdb") for path in clear_hits)
    assert any(path.endswith(".parquet") for path in clear_hits)
    assert any(path.endswith("events.sqlite") for path in clear_hits)
    # Pseudonymised: nowhere under the data folder, nowhere in Dagster's storage.
    assert numbers_found([data_dir, data_dir.parent / "dagster_home"], numbers) == {}
    for path in [*data_dir.rglob("*"), *(data_dir.parent / "dagster_home").rglob("*")]:
        assert not path.is_file() or PRIVACY_KEY.encode() not in path.read_bytes(), path
    assert not list((data_dir / "raw").rglob("*.csv"))  # deleted once typed

    # Tokens, not numbers; the name is gone; the analytics by country are the clear run's.
    assert _query(
        settings.warehouse,
        "SELECT count(*) FROM calls WHERE NOT regexp_full_match(callee, 'pn_[0-9a-f]{32}') "
        "OR caller_name IS NOT NULL",
    ) == [(0,)]
    by_country = _by_country(settings.warehouse, derive=False)
    assert by_country.filter(pl.col("callee_country_code") == "33").height > 0
    assert_frame_equal(by_country, _by_country(clear_run.warehouse, derive=True))
    # Same number, same token: as many distinct callees as distinct numbers (in any spelling).
    clear_callees = _query(clear_run.warehouse, "SELECT DISTINCT callee FROM calls")
    assert _query(settings.warehouse, "SELECT count(DISTINCT callee) FROM calls") == [
        (len({privacy.number_key(n) for (n,) in clear_callees if n}),)
    ]
    destinations = "SELECT * FROM destination_kpis ORDER BY ALL"
    assert _query(settings.warehouse, destinations) == _query(clear_run.warehouse, destinations)
    # The real-time reject's raw body is kept, with the numbers' tokens.
    (raw,) = _query(settings.warehouse, "SELECT raw FROM call_rejects WHERE source = 'push'")[0]
    assert json.loads(raw)["cdr"]["callee"].startswith("pn_")


def _calls_by_day(path: Path, exclude: list[int]) -> list[tuple]:
    ids = ", ".join(str(i) for i in exclude) or "-1"  # NOT IN (NULL) would keep no row
    return _query(
        path,
        "SELECT call_date, direction, source, count(*), sum(billing_debit), "
        f"sum(duration_billed_s) FROM calls WHERE call_id NOT IN ({ids}) GROUP BY ALL ORDER BY ALL",
    )


@pytest.fixture
def erasable(tmp_path: Path) -> Iterator[tuple[Settings, dg.DagsterInstance]]:
    """A clear-mode data folder after the daily job, a real-time delivery and a snapshot."""
    data_dir = tmp_path / "data"
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        SimulatorServer(api_key=SIMULATOR_KEY, **SIM_OPTIONS) as simulator,
        mock.patch.dict(os.environ, {"CALLR_API_KEY": SIMULATOR_KEY}),
        dg.instance_for_test(temp_dir=str(home)) as instance,
    ):
        settings = _settings(data_dir, simulator.base_url)
        defs = build_definitions(settings)
        assert all(o.success for o in runner.run_ranges(defs, DAYS, instance, days_per_run=2))
        _deliver_realtime(data_dir)
        assert sensor_tick(defs, instance).success
        warehouse.snapshot(settings.warehouse, warehouse.snapshot_path(settings.warehouse))
        yield settings, instance


def test_erase_removes_a_number_everywhere_and_for_good(
    erasable: tuple[Settings, dg.DagsterInstance],
) -> None:
    settings, instance = erasable
    defs = build_definitions(settings)
    # A person called from a scenario, who also reached the receiver in real time.
    (number,) = _query(
        settings.warehouse,
        "SELECT callee FROM calls WHERE source = 'export' AND direction = 'outbound' "
        "AND callee LIKE '+33%' ORDER BY callee LIMIT 1",
    )[0]
    _deliver_realtime(settings.data_dir, 9_100_001, callee=number)
    assert sensor_tick(defs, instance).success
    victims = [
        i
        for (i,) in _query(
            settings.warehouse,
            f"SELECT call_id FROM calls WHERE callee = '{number}' OR caller_number = '{number}'",
        )
    ]
    before = _calls_by_day(settings.warehouse, victims)
    assert len(victims) >= 2 and numbers_found([settings.data_dir], [number])
    assert _query(
        settings.warehouse,
        f"SELECT count(*) FROM call_rejects WHERE source = 'push' AND raw LIKE '%{number}%'",
    ) == [(1,)]

    env = {"CDR_DATA_DIR": str(settings.data_dir), "CDR_START_DATE": "2026-10-01"}
    erased = cdr_pipeline("erase", "--number", number, cwd=settings.data_dir.parent, **env)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert f"duckdb calls: {len(victims)}\n" in erased.stdout
    assert "real-time landed events: 2\n" in erased.stdout
    assert number not in erased.stdout + erased.stderr
    # Nowhere: raw files, Parquet, DuckDB, snapshot, landing store, audit, Dagster's storage.
    roots = [settings.data_dir, Path(instance.root_directory)]
    assert numbers_found(roots, [number]) == {}
    assert _calls_by_day(settings.warehouse, []) == before
    assert _calls_by_day(warehouse.snapshot_path(settings.warehouse), []) == before
    assert _query(
        settings.warehouse,
        "SELECT sum(calls) FROM daily_kpis",
    ) == _query(settings.warehouse, "SELECT count(*) FROM calls")
    audit = (settings.data_dir / "privacy" / "erasure-audit.jsonl").read_text()
    assert json.loads(audit)["changes"]["duckdb calls"] == len(victims)

    # A re-load of its days (fetching the export again) and a new delivery keep it out.
    assert all(o.success for o in runner.run_ranges(defs, DAYS, instance, days_per_run=2))
    _deliver_realtime(settings.data_dir, 9_200_001, callee=number)
    assert sensor_tick(defs, instance).success
    assert numbers_found(roots, [number]) == {}
    assert _calls_by_day(settings.warehouse, []) == before

    # A bad number is a clear error, not a stack trace.
    bad = cdr_pipeline("erase", "--number", "not-a-number", cwd=settings.data_dir.parent, **env)
    assert bad.returncode == 2 and "--number must be a phone number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_retention_deletes_exactly_what_is_past_the_horizon(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir, "http://127.0.0.1:9", CDR_RAW_RETENTION_DAYS="3")
    today = dt.datetime.now(dt.UTC).date()
    lake = warehouse.Lake(data_dir)
    for age in range(1, 7):
        for direction in ("inbound", "outbound"):
            path = lake.raw_file(today - dt.timedelta(days=age), direction)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("callid\n1\n")
    (lake.raw_dir / "notes").mkdir()  # not a day: not the pipeline's to delete
    horizon = dt.datetime.combine(today - dt.timedelta(days=3), dt.time(), dt.UTC)
    received = {
        "old": horizon - dt.timedelta(microseconds=1),
        "older": horizon - dt.timedelta(days=2),
        "at": horizon,
        "new": horizon + dt.timedelta(hours=30),
    }
    with LandingStore(landing_path(data_dir)) as store:
        store.append(
            [
                LandingRecord(at, "push", None, None, name, "1", None, "cdr", "{}")
                for name, at in received.items()
            ]
        )
    result = (
        build_definitions(settings)
        .resolve_job_def(RETENTION_JOB)
        .execute_in_process(instance=instance)
    )
    assert result.success
    kept = sorted(p.name for p in lake.raw_dir.iterdir())
    assert kept == sorted(
        ["notes", *((today - dt.timedelta(days=age)).isoformat() for age in (1, 2, 3))]
    )
    with LandingStore(landing_path(data_dir), read_only=True) as store:
        assert [e.received_at for e in store.read_after(0, limit=10)] == [
            received["at"],
            received["new"],
        ]
    (observation,) = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["deleted_raw_files"].value == 6
    assert observation.metadata["deleted_landed_events"].value == 2


def test_calls_retention_deletes_old_days_only_and_refuses_to_load_them(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    old, kept = today - dt.timedelta(days=5), today - dt.timedelta(days=4)
    env = {"CDR_START_DATE": (old - dt.timedelta(days=1)).isoformat()}
    with (
        SimulatorServer(api_key=SIMULATOR_KEY, **SIM_OPTIONS) as simulator,
        mock.patch.dict(os.environ, {"CALLR_API_KEY": SIMULATOR_KEY}),
    ):
        settings = _settings(tmp_path / "data", simulator.base_url, **env)
        loaded = runner.run_ranges(
            build_definitions(settings), [old, kept], instance, days_per_run=2
        )
        assert all(o.success for o in loaded)
        newer = {
            table: _query(
                settings.warehouse,
                f"SELECT * FROM {table} WHERE call_date >= '{kept}' ORDER BY ALL",
            )
            for table in ("calls", "call_rejects", "daily_kpis", "destination_kpis")
        }
        assert _query(settings.warehouse, f"SELECT count(*) FROM calls WHERE call_date < '{kept}'")[
            0
        ][0]

        limited = _settings(
            settings.data_dir, simulator.base_url, CDR_CALLS_RETENTION_DAYS="4", **env
        )
        defs = build_definitions(limited)
        assert defs.resolve_job_def(RETENTION_JOB).execute_in_process(instance=instance).success
        for table, rows in newer.items():
            assert _query(settings.warehouse, f"SELECT * FROM {table} ORDER BY ALL") == rows
        lake = warehouse.Lake(settings.data_dir)
        assert sorted(p.name for p in lake.calls_dir.iterdir())[0] == f"call_date={kept}"

        # Loading the old day again is refused, with the reason; nothing changes.
        (refused,) = runner.run_ranges(defs, [old], instance, days_per_run=1)
        assert not refused.success
        assert "older than CDR_CALLS_RETENTION_DAYS" in str(refused.failed_days.get(old))
        assert _query(settings.warehouse, "SELECT min(call_date) FROM calls") == [(kept,)]
