"""Dagster on PostgreSQL as a multi-process deployment, as separate machines would run it.

A throwaway PostgreSQL server (Debian's binaries, on loopback) holds the instance. The webserver
and the daemon are separate processes started by `cdr-pipeline dagster webserver|daemon`, each
with a Dagster home of its own (nothing shared but PostgreSQL, the code and the data folder). A
backfill launched through the webserver's GraphQL and a schedule tick made by the daemon run
concurrently; the runs, the materialisations, the warehouse, the `duckdb_writer` pool (DuckDB
steps of different runs never overlap) and the password (stored nowhere) are checked.
"""

import contextlib
import dataclasses
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import duckdb
import pytest
from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.defs.schedules import partitions_for_tick
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.backfills import (
    ARTIFACTS,
    LOCK_ERRORS,
    expected_calls,
    launch_backfill,
    wait_for_backfill,
)
from cdr_pipeline_tests.support.dagster_processes import (
    PROJECT_ROOT,
    WORKSPACE_YAML,
    DagsterDev,
    DagsterProcess,
    free_port,
    simulator_env,
)
from cdr_pipeline_tests.support.postgres_server import PostgresServer, running_postgres

pytestmark = pytest.mark.slow

PASSWORD = "pg-test-secret-5d1c93a7e2"  # distinctive, so a leak anywhere is found
LAUNCHER = [sys.executable, "-m", "cdr_pipeline.cli", "dagster"]
SCHEDULE = "daily_cdr_schedule"
SCHEDULE_SELECTOR = {
    "repositoryLocationName": "cdr_pipeline",
    "repositoryName": "__repository__",
    "scheduleName": SCHEDULE,
}
DONE_TIMEOUT_S = 420  # ~90 s on an idle 2-core machine

DAEMON_HEALTH = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""
START_SCHEDULE = """
mutation StartSchedule($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""
SCHEDULE_TICKS = """
query ScheduleTicks($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { scheduleState { ticks(limit: 5) { status timestamp runIds } } }
  }
}
"""
MATERIALIZED = """
query Materialized($path: [String!]!, $partitions: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""
RUNS_BY_TAG = """
query Runs($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


@dataclasses.dataclass
class Deployment:
    postgres: PostgresServer
    webserver: DagsterDev
    daemon: DagsterProcess
    simulator: SimulatorServer
    tmp: Path
    env: dict[str, str]
    tick: dt.datetime  # the 00:30 UTC the daemon evaluates

    @property
    def data_dir(self) -> Path:
        return Path(self.env["CDR_DATA_DIR"])


def last_tick_time(now: dt.datetime) -> dt.datetime:
    """The latest 00:30 UTC at or before `now` (the schedule's cron, in UTC)."""
    tick = now.replace(hour=0, minute=30, second=0, microsecond=0)
    return tick if tick <= now else tick - dt.timedelta(days=1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("dagster_postgres")
    tick = last_tick_time(dt.datetime.now(dt.UTC))
    start = tick.date() - dt.timedelta(days=7)
    with (
        running_postgres(PASSWORD) as postgres,
        SimulatorServer(api_key=SIMULATOR_KEY) as simulator,
    ):
        env = simulator_env(simulator, tmp / "data", start) | postgres.env()
        homes = {name: tmp / f"{name}_home" for name in ("webserver", "daemon")}
        for home in homes.values():
            home.mkdir()
        webserver = DagsterDev(
            homes["webserver"], env, tmp / "webserver.log", launcher=[*LAUNCHER, "webserver"]
        )
        daemon = DagsterProcess(
            [*LAUNCHER, "daemon", "-w", str(WORKSPACE_YAML)],
            env | {"DAGSTER_HOME": str(homes["daemon"])},
            tmp / "daemon.log",
            cwd=homes["daemon"],
        )
        try:
            webserver.start()
            yield Deployment(postgres, webserver, daemon, simulator, tmp, env, tick)
        finally:
            daemon.stop()
            webserver.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            for log in (webserver.log_path, daemon.log_path):
                if log.exists():
                    shutil.copyfile(log, ARTIFACTS / f"postgres_{log.name}")


@contextlib.contextmanager
def instance_of(deployment: Deployment) -> Iterator[dg.DagsterInstance]:
    """The deployment's instance, opened from this process (PostgreSQL, like the others)."""
    with (
        mock.patch.dict(os.environ, deployment.postgres.env()),
        dg.DagsterInstance.from_config(str(deployment.webserver.home)) as instance,
    ):
        yield instance


def rewind_schedule_start(deployment: Deployment) -> None:
    """Record the running schedule as started a minute before the last 00:30 tick, as if the
    daemon had been down since: the daemon, once up, catches that tick up."""
    with instance_of(deployment) as instance:
        (state,) = [
            s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
            if s.name == SCHEDULE
        ]
        started = deployment.tick - dt.timedelta(minutes=1)
        data = ScheduleInstigatorData(state.instigator_data.cron_schedule, started.timestamp())
        instance.update_instigator_state(state.with_data(data))


def wait_for_daemon(deployment: Deployment, timeout_s: float = 120.0) -> None:
    """Until the webserver sees the daemon's heartbeats (written to PostgreSQL)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert not deployment.daemon.exited(), deployment.daemon.log_text()[-3000:]
        health = deployment.webserver.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]
        required = [d for d in health["allDaemonStatuses"] if d["required"]]
        if required and all(d["healthy"] for d in required):
            return
        time.sleep(1)
    raise TimeoutError(f"daemon not healthy after {timeout_s} s: {health}")


def wait_for_tick_runs(
    deployment: Deployment, timeout_s: float
) -> tuple[dict, list[dg.DagsterRun]]:
    """The schedule's tick for `deployment.tick` and its runs, once they all ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = deployment.webserver.graphql(SCHEDULE_TICKS, {"selector": SCHEDULE_SELECTOR})
        ticks = answer["scheduleOrError"]["scheduleState"]["ticks"]
        done = [t for t in ticks if t["status"] in ("SUCCESS", "FAILURE")]
        if done:
            with instance_of(deployment) as instance:
                runs = [instance.get_run_by_id(run_id) for run_id in done[0]["runIds"]]
            if all(run is not None and run.is_finished for run in runs):
                return done[0], runs
        time.sleep(2)
    raise TimeoutError(f"schedule tick not done after {timeout_s} s: {ticks}")


def days_of(tags: dict[str, str]) -> set[dt.date]:
    """The days a run loads: its partition, or its partition range (none if unpartitioned)."""
    if "dagster/partition" in tags:
        return {dt.date.fromisoformat(tags["dagster/partition"])}
    if "dagster/asset_partition_range_start" not in tags:
        return set()
    first = dt.date.fromisoformat(tags["dagster/asset_partition_range_start"])
    last = dt.date.fromisoformat(tags["dagster/asset_partition_range_end"])
    return {first + dt.timedelta(days=n) for n in range((last - first).days + 1)}


def pooled_step_intervals(
    instance: dg.DagsterInstance, run_ids: list[str], pooled: set[str]
) -> list[tuple[float, float, str, str]]:
    """(start, end, run id, step) of every step in the `duckdb_writer` pool, by start time."""
    intervals = []
    for run_id in run_ids:
        started: dict[str, float] = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or event.step_key not in pooled:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.event_type in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                intervals.append((started[event.step_key], entry.timestamp, run_id, event.step_key))
    return sorted(intervals)


def test_webserver_and_daemon_on_postgres_run_a_backfill_and_a_schedule_tick(
    deployment: Deployment,
) -> None:
    webserver, tick = deployment.webserver, deployment.tick
    tick_days = partitions_for_tick(tick, "UTC", 2, dt.date.min)
    backfill_days = [tick.date() - dt.timedelta(days=n) for n in (6, 5, 4)]
    started = time.monotonic()

    # The webserver records the backfill and the running schedule in PostgreSQL; the daemon,
    # started afterwards from its own home, finds both there.
    backfill_id = launch_backfill(webserver, backfill_days)
    schedule = webserver.graphql(START_SCHEDULE, {"selector": SCHEDULE_SELECTOR})["startSchedule"]
    assert schedule["__typename"] == "ScheduleStateResult", schedule
    rewind_schedule_start(deployment)
    deployment.daemon.start()
    wait_for_daemon(deployment)

    backfill = wait_for_backfill(webserver, backfill_id, DONE_TIMEOUT_S)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert {run["status"] for run in backfill["runs"]} == {"SUCCESS"}
    tick_answer, tick_runs = wait_for_tick_runs(deployment, DONE_TIMEOUT_S)
    wall_s = time.monotonic() - started
    assert tick_answer["status"] == "SUCCESS", tick_answer
    assert tick_answer["timestamp"] == tick.timestamp()
    assert {run.status for run in tick_runs} == {dg.DagsterRunStatus.SUCCESS}
    assert set().union(*(days_of(run.tags) for run in tick_runs)) == set(tick_days)

    # Every day's assets are materialised, each by a run of the backfill or of the tick.
    days = sorted(backfill_days + tick_days)
    run_ids = [run["runId"] for run in backfill["runs"]] + [run.run_id for run in tick_runs]
    for asset in ("raw_cdr_exports", "calls", "call_rejects"):
        answer = webserver.graphql(
            MATERIALIZED, {"path": [asset], "partitions": [d.isoformat() for d in days]}
        )["assetOrError"]["assetMaterializations"]
        assert {m["partition"] for m in answer} == {d.isoformat() for d in days}, asset
        assert {m["runId"] for m in answer} <= set(run_ids), asset

    # The pool kept DuckDB steps one at a time across all the run workers: no two overlap.
    settings = Settings.from_env(deployment.env)
    pooled = {
        node.name
        for job in build_definitions(settings).resolve_all_job_defs()
        for node in job.graph.node_defs
        if node.pool == "duckdb_writer"
    }
    with instance_of(deployment) as instance:
        intervals = pooled_step_intervals(instance, run_ids, pooled)
        messages = [e.user_message for run_id in run_ids for e in instance.all_logs(run_id)]
    assert {run_id for _, _, run_id, _ in intervals} == set(run_ids)  # every run used the pool
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert overlaps == []
    assert not [m for m in messages if any(e in m for e in LOCK_ERRORS)]

    # The warehouse holds exactly the simulator's calls of those days, each once.
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        ids = [row[0] for row in con.execute("SELECT call_id FROM calls").fetchall()]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected_calls(deployment.simulator, days)
    print(f"PostgreSQL deployment: {len(run_ids)} runs, {len(days)} days in {wall_s:.0f} s")


def test_cli_backfill_records_its_runs_in_postgres(deployment: Deployment) -> None:
    """With DAGSTER_PG_* set, the CLI writes its own home for PostgreSQL: its run is in the same
    instance the webserver shows."""
    day = deployment.tick.date() - dt.timedelta(days=7)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_", "DAGSTER"))}
    result = subprocess.run(
        [sys.executable, "-m", "cdr_pipeline.cli", "backfill", "--start", str(day), "--end",
         str(day)],
        env=env | deployment.env,
        cwd=deployment.tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    home = deployment.data_dir / "dagster_home"
    assert f"Dagster instance: {home}" in result.stdout
    assert "postgres:" in (home / "dagster.yaml").read_text()
    answer = deployment.webserver.graphql(RUNS_BY_TAG, {"key": "cdr/trigger", "value": "cli"})
    runs = answer["runsOrError"]["results"]
    assert runs and {run["status"] for run in runs} == {"SUCCESS"}
    tags = [{tag["key"]: tag["value"] for tag in run["tags"]} for run in runs]
    assert set().union(*map(days_of, tags)) == {day}


def test_the_password_is_stored_nowhere(deployment: Deployment) -> None:
    """Not in the Dagster database, the homes, the data folder, or the processes' output."""
    assert PASSWORD not in deployment.postgres.dump()
    assert PASSWORD not in deployment.webserver.log_text()
    assert PASSWORD not in deployment.daemon.log_text()
    leaks = [
        path
        for path in deployment.tmp.rglob("*")
        if path.is_file() and PASSWORD.encode() in path.read_bytes()
    ]
    assert leaks == []


def launch(
    process: str, env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess, float]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_", "DAGSTER"))
    }
    started = time.monotonic()
    result = subprocess.run(
        [*LAUNCHER, process, "-w", str(WORKSPACE_YAML)],
        env=inherited | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


def test_unreachable_postgres_fails_at_once_naming_host_and_variable(
    deployment: Deployment, tmp_path: Path
) -> None:
    closed = {**deployment.postgres.env(), "DAGSTER_PG_PORT": str(free_port())}
    env = closed | {"CDR_DATA_DIR": str(tmp_path / "data")}
    for process in ("webserver", "daemon"):
        result, seconds = launch(process, env, tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert seconds < 20  # Dagster alone retries for ~30 s, then prints a stack trace
        message = result.stderr
        assert f"PostgreSQL at 127.0.0.1:{closed['DAGSTER_PG_PORT']}" in message
        assert "DAGSTER_PG_HOST" in message and "DAGSTER_PG_PORT" in message
        assert "Traceback" not in message and PASSWORD not in result.stdout + message

    wrong = deployment.postgres.env() | {"DAGSTER_PG_PASSWORD": "not-the-password-81c0"}
    result, _ = launch("daemon", wrong | {"CDR_DATA_DIR": str(tmp_path / "data")}, tmp_path)
    assert result.returncode == 2
    assert "password authentication failed" in result.stderr
    assert "DAGSTER_PG_PASSWORD" in result.stderr
    assert "not-the-password-81c0" not in result.stderr and PASSWORD not in result.stderr
    assert (PROJECT_ROOT / "dagster-postgres.yaml").read_text() in (
        tmp_path / "data" / "dagster_home" / "dagster.yaml"
    ).read_text()
