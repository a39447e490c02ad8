"""End to end through real Dagster against the simulator: raw landing, typed Parquet, DuckDB."""

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdr_pipeline import warehouse
from cdr_pipeline.callr.simulator import SimulatorServer, simulate_export
from cdr_pipeline.config import Settings, day_window
from cdr_pipeline.defs import runner
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.schema import DIRECTIONS
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support import paths
from cdr_pipeline_tests.support.warehouse import checksums

DAYS = [dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)]
PROJECT = paths.PROJECT_ROOT


def settings_for(tmp_path: Path, base_url: str) -> Settings:
    return Settings.from_env(
        {
            "CDR_DATA_DIR": str(tmp_path / "data"),
            "CDR_START_DATE": "2026-10-01",
            "CALLR_BASE_URL": base_url,
        }
    )


@pytest.fixture
def pipeline(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dg.Definitions]:
    monkeypatch.setenv("CALLR_API_KEY", SIMULATOR_KEY)
    settings = settings_for(tmp_path, simulator.base_url)
    return settings, build_definitions(settings)


def run(
    defs: dg.Definitions, instance: dg.DagsterInstance, days: list[dt.date], days_per_run: int = 1
) -> None:
    outcomes = runner.run_ranges(defs, days, instance, days_per_run=days_per_run)
    assert [(o.error, o.failed_days) for o in outcomes if not o.success] == []


def materializations(result: dg.ExecuteInProcessResult, key: str) -> list[dg.AssetMaterialization]:
    """The materialisations of one asset in a run."""
    return [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(key)
    ]


def expected_ids(days: list[dt.date], **options: object) -> set[int]:
    ids: set[int] = set()
    for day in days:
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            ids |= set(simulate_export(start, end, direction, **options).call_ids)
    return ids


def test_raw_asset_lands_both_directions_byte_identical(
    pipeline: tuple[Settings, dg.Definitions], instance: dg.DagsterInstance
) -> None:
    settings, defs = pipeline
    day = DAYS[0]
    job = defs.resolve_job_def("daily_cdr_job")
    lake = warehouse.Lake(settings.data_dir)
    digests = []
    for _ in range(2):
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=[dg.AssetKey("raw_cdr_exports")],
        )
        assert result.success
        digests.append(
            {d: hashlib.sha256(lake.raw_file(day, d).read_bytes()).hexdigest() for d in DIRECTIONS}
        )
    start, end = day_window(day, "UTC")
    for direction in DIRECTIONS:
        assert (
            lake.raw_file(day, direction).read_bytes()
            == simulate_export(start, end, direction).body
        )
    assert digests[0] == digests[1]
    (materialization,) = materializations(result, "raw_cdr_exports")
    assert materializations(result, "typed_calls") == []  # only the raw landing was asked for
    metadata = materialization.metadata
    assert metadata["inbound_sha256"].value == digests[0]["inbound"]
    assert metadata["outbound_rows"].value == simulate_export(start, end, "outbound").rows
    assert metadata["inbound_retries"].value == 0


def test_backfill_is_idempotent_in_any_order(
    pipeline: tuple[Settings, dg.Definitions], instance: dg.DagsterInstance
) -> None:
    settings, defs = pipeline
    run(defs, instance, DAYS, days_per_run=len(DAYS))  # one run over the range
    first = checksums(settings)
    run(defs, instance, [DAYS[1]])
    assert checksums(settings) == first
    for day in (DAYS[2], DAYS[0], DAYS[1]):
        run(defs, instance, [day])
    assert checksums(settings) == first

    with warehouse.connect(settings.warehouse, read_only=True) as con:
        stored = {r[0] for r in con.sql("SELECT call_id FROM calls").fetchall()}
        assert warehouse.duplicate_call_ids(con) == (0, [])
        # Calls in progress at midnight come with two days' exports and are stored once.
        start, end = day_window(DAYS[1], "UTC")
        carried = set().union(
            *(simulate_export(start, end, d).carried_over_ids for d in DIRECTIONS)
        )
        assert carried, "the simulator should carry calls over midnight"
        counts = con.execute(
            "SELECT count(*), count(DISTINCT call_id) FROM calls "
            "WHERE call_id IN (SELECT unnest(?::BIGINT[]))",
            [sorted(carried)],
        ).fetchone()
        assert counts == (len(carried), len(carried))
    assert stored == expected_ids(DAYS)

    # Each day's checks ran and passed.
    for key in (
        dg.AssetCheckKey(dg.AssetKey("typed_calls"), "raw_rows_reconcile"),
        dg.AssetCheckKey(dg.AssetKey("calls"), "call_id_unique"),
    ):
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
        # One evaluation per run (5 runs); PLANNED records are Dagster's bookkeeping.
        evaluated = [r.status.value for r in records if r.status.value != "PLANNED"]
        assert evaluated == ["SUCCEEDED"] * 5


def test_run_killed_between_parquet_and_duckdb_leaves_previous_state(
    tmp_path: Path, pipeline: tuple[Settings, dg.Definitions], instance: dg.DagsterInstance
) -> None:
    settings, defs = pipeline
    run(defs, instance, DAYS[:1])
    before = checksums(settings)
    lake = warehouse.Lake(settings.data_dir)

    # The source changes (another seed) and a run for the day starts in its own process. An
    # analyst's read-only session holds the warehouse, so that run publishes its Parquet, then
    # waits for the lock inside the load step: that is where it is killed.
    with SimulatorServer(api_key=SIMULATOR_KEY, seed=1) as changed:
        env = os.environ | {
            "CDR_DATA_DIR": str(settings.data_dir),
            "CDR_START_DATE": "2026-10-01",
            "CALLR_BASE_URL": changed.base_url,
            "CALLR_API_KEY": SIMULATOR_KEY,
            "DAGSTER_HOME": str(tmp_path / "killed_home"),
        }
        (tmp_path / "killed_home").mkdir()
        reader = duckdb.connect(str(settings.warehouse), read_only=True)
        worker = subprocess.Popen(
            [sys.executable, "-c", RUN_ONE_DAY, DAYS[0].isoformat()],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            waited = ""
            for line in worker.stderr:
                waited += line
                if "is locked by" in line:
                    break
            assert "is locked by" in waited, waited
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        finally:
            reader.close()
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

        assert checksums(settings) == before
        # The new Parquet is whole (the run got past publishing) and differs from the old.
        new_ids = expected_ids(DAYS[:1], seed=1)
        with duckdb.connect() as con:
            files = [str(p) for p in lake.calls_files(DAYS[0])]
            parquet_ids = {
                r[0] for r in con.sql(f"SELECT call_id FROM read_parquet({files!r})").fetchall()
            }
        assert parquet_ids == new_ids
        assert list((settings.data_dir / "staging").iterdir()) == []  # no scratch left behind

        # Re-running converges on the new source.
        run(defs_for(tmp_path, changed.base_url), instance, DAYS[:1])
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        stored = {r[0] for r in con.sql("SELECT call_id FROM calls").fetchall()}
    assert stored == new_ids


RUN_ONE_DAY = """
import datetime as dt, logging, sys
import dagster as dg
from cdr_pipeline.config import Settings
from cdr_pipeline.defs import runner
from cdr_pipeline.defs.definitions import build_definitions
logging.basicConfig(level=logging.WARNING)
day = dt.date.fromisoformat(sys.argv[1])
runner.run_ranges(
    build_definitions(Settings.from_env()), [day], dg.DagsterInstance.get(), days_per_run=1
)
"""


def defs_for(tmp_path: Path, base_url: str) -> dg.Definitions:
    return build_definitions(settings_for(tmp_path, base_url))


def test_bad_key_fails_the_day_with_a_clear_error_and_no_leak(
    tmp_path: Path,
    simulator: SimulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong_key = "wrong-key-d41d8cd98f00b204"
    monkeypatch.setenv("CALLR_API_KEY", wrong_key)
    defs = defs_for(tmp_path, simulator.base_url)
    outcomes = runner.run_ranges(defs, DAYS, instance, days_per_run=3)
    assert len(outcomes) == 1 and not outcomes[0].success
    assert outcomes[0].failed_days == {}  # the key, not a day: the whole range failed
    assert "CALLR_API_KEY was rejected" in outcomes[0].error
    assert "401" in outcomes[0].error
    assert simulator.request_count == 1  # no retries on 401
    assert wrong_key not in outcomes[0].error
    logs = "\n".join(str(e) for e in instance.all_logs(outcomes[0].run_id))
    assert "CALLR_API_KEY was rejected" in logs
    assert wrong_key not in logs
    for root in (tmp_path, Path(instance.root_directory)):
        for path in root.rglob("*"):
            if path.is_file():
                assert wrong_key.encode() not in path.read_bytes(), path


def test_definitions_load_from_workspace_yaml(tmp_path: Path) -> None:
    env = os.environ | {"CDR_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cdr_pipeline" in result.stdout + result.stderr
