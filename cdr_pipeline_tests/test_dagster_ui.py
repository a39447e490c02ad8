"""The Dagster UI as users drive it: `dagster dev` (webserver + daemon) on loopback, a backfill
launched through the GraphQL API the UI uses, and the UI itself in headless Chromium.

One `dagster dev` serves the whole module (starting it takes ~20 s): the backfill test runs
first, so the browser's screenshots show its partitions materialised, but the browser test
asserts only what holds either way.
"""

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cdr_pipeline.callr.simulator import SimulatorServer, expected_call_ids
from cdr_pipeline.config import day_window
from cdr_pipeline.schema import DIRECTIONS
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.dagster_processes import PROJECT_ROOT, DagsterDev, make_dagster_home

pytestmark = pytest.mark.slow

START_DATE = dt.date(2026, 6, 1)
BACKFILL_DAYS = [START_DATE + dt.timedelta(days=n) for n in range(14)]
# What the UI's "Materialize all" selects on the daily job's assets (q850_causes and the
# real-time asset are not daily-partitioned).
DAILY_ASSETS = (
    "raw_cdr_exports",
    "typed_calls",
    "calls",
    "call_rejects",
    "daily_kpis",
    "hourly_traffic",
    "destination_kpis",
    "hangup_cause_daily",
    "scenario_kpis",
    "daily_report",
)
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
BACKFILL_TIMEOUT_S = 480  # ~150 s on an idle 2-core machine
LOCK_ERRORS = ("Could not set lock", "WarehouseLockedError")

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
  }
}
"""
BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      runs { runId status tags { key value } startTime endTime }
    }
    ... on PythonError { message }
  }
}
"""
CALLS_MATERIALIZED = """
query CallsMaterialized($partition: String!) {
  assetOrError(assetKey: {path: ["calls"]}) {
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) { runId } }
  }
}
"""
RUN_LOGS = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message level } } }
    ... on PythonError { message }
  }
}
"""


@dataclasses.dataclass
class DagsterUI:
    dev: DagsterDev
    simulator: SimulatorServer
    data_dir: Path


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    """`dagster dev` on the project's workspace.yaml and dagster.yaml, against the simulator."""
    tmp = tmp_path_factory.mktemp("dagster_ui")
    with SimulatorServer(api_key=SIMULATOR_KEY) as simulator:
        env = simulator_env(simulator, tmp / "data", START_DATE)
        dev = DagsterDev(make_dagster_home(tmp / "dagster_home"), env, tmp / "dagster_dev.log")
        try:
            dev.start()
            yield DagsterUI(dev, simulator, tmp / "data")
        finally:
            status = dev.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(dev.log_path, ARTIFACTS / "dagster_dev.log")
        # A clean shutdown: `dagster dev` handled SIGTERM itself (it was not killed).
        assert status is not None, "dagster dev did not shut down on SIGTERM"


def simulator_env(simulator: SimulatorServer, data_dir: Path, start: dt.date) -> dict[str, str]:
    """The pipeline's settings for Dagster processes: the simulator's API, `data_dir`, UTC."""
    return {
        "CALLR_BASE_URL": simulator.base_url,
        "CALLR_API_KEY": SIMULATOR_KEY,
        "CDR_DATA_DIR": str(data_dir),
        "CDR_START_DATE": start.isoformat(),
        "CDR_TIMEZONE": "UTC",
    }


def expected_calls(simulator: SimulatorServer, days: list[dt.date]) -> set[int]:
    """call ids of every valid call the simulator exports for those days, both directions."""
    options = dataclasses.asdict(simulator.options)
    ids: set[int] = set()
    for day in days:
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            ids |= expected_call_ids(start, end, direction, **options)
    return ids


def launch_backfill(dev: DagsterDev, days: list[dt.date]) -> str:
    """Launch a backfill of the daily assets over `days`, as the UI's dialog does; its id."""
    launched = dev.graphql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "partitionNames": [day.isoformat() for day in days],
                "assetSelection": [{"path": [name]} for name in DAILY_ASSETS],
                "fromFailure": False,
                "tags": [],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def assert_calls_loaded_once(warehouse: Path, expected: set[int]) -> int:
    """`calls` holds exactly the `expected` call ids, each once; how many rows that is."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT call_id) FROM calls"
        ).fetchone()
        loaded = {row[0] for row in con.execute("SELECT call_id FROM calls").fetchall()}
    assert rows == distinct == len(expected)
    assert loaded == expected
    return rows


def wait_for_backfill(dev: DagsterDev, backfill_id: str, timeout_s: float) -> dict:
    """Poll the backfill until it leaves REQUESTED; its final state."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = dev.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})
        backfill = answer["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] != "REQUESTED":
            return backfill
        if time.monotonic() > deadline:
            statuses = [run["status"] for run in backfill["runs"]]
            raise TimeoutError(f"backfill still running after {timeout_s} s: {statuses}")
        time.sleep(2)


def test_ui_backfill_of_14_days_loads_every_call_once(dagster_ui: DagsterUI) -> None:
    dev = dagster_ui.dev
    started = time.monotonic()
    backfill_id = launch_backfill(dev, BACKFILL_DAYS)
    backfill = wait_for_backfill(dev, backfill_id, BACKFILL_TIMEOUT_S)
    wall_s = time.monotonic() - started

    runs = backfill["runs"]
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert {run["status"] for run in runs} == {"SUCCESS"}, [(r["runId"], r["status"]) for r in runs]
    partitions = [
        next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition") for run in runs
    ]
    assert sorted(partitions) == [day.isoformat() for day in BACKFILL_DAYS]  # one run per day

    # No run met a DuckDB lock error: the pool kept the DuckDB steps one at a time.
    for run in runs:
        logs = dev.graphql(RUN_LOGS, {"runId": run["runId"]})["logsForRun"]
        assert logs["__typename"] == "EventConnection", logs
        messages = [event.get("message", "") for event in logs["events"]]
        assert not [m for m in messages if any(e in m for e in LOCK_ERRORS)], run["runId"]
    assert not any(e in dev.log_text() for e in LOCK_ERRORS)

    # The warehouse holds exactly the simulator's calls for those days, each once.
    expected = expected_calls(dagster_ui.simulator, BACKFILL_DAYS)
    rows = assert_calls_loaded_once(dagster_ui.data_dir / "warehouse.duckdb", expected)

    run_seconds = [run["endTime"] - run["startTime"] for run in runs]
    observed = {
        "partitions": len(BACKFILL_DAYS),
        "runs": len(runs),
        "retried_runs": sum(
            any(t["key"] == "dagster/retry_number" for t in run["tags"]) for run in runs
        ),
        "wall_s": round(wall_s, 1),
        "run_s_min_max": [round(min(run_seconds), 1), round(max(run_seconds), 1)],
        "calls": rows,
        "cpus": os.cpu_count(),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ui_backfill.json").write_text(json.dumps(observed, indent=2) + "\n")
    print(f"UI backfill: {observed}")


def chromium_path() -> str:
    """Debian's chromium (.ci/run installs it); in CI its absence is a failure, not a skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_browser_shows_the_asset_graph_and_the_daily_partitions(dagster_ui: DagsterUI) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)

            # Global asset lineage, every group expanded (the UI's ⌥E shortcut).
            page.goto(f"{dagster_ui.dev.url}/asset-groups")
            expect(page.get_by_text("Global asset lineage")).to_be_visible()
            expect(page.get_by_role("button", name="warehouse").first).to_be_visible()
            page.mouse.click(1100, 700)  # focus the graph canvas
            page.keyboard.press("Alt+KeyE")
            for asset in ("raw_cdr_exports", "typed_calls", "calls", "call_rejects", *DAILY_ASSETS):
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dagster_asset_graph.png"))

            # The partitions page of the daily `calls` asset, the backfill's last day selected.
            last_day = BACKFILL_DAYS[-1].isoformat()
            page.goto(f"{dagster_ui.dev.url}/assets/calls?view=partitions&partition={last_day}")
            expect(page.get_by_text("Partitions Selected")).to_be_visible()
            expect(page.get_by_text(START_DATE.isoformat()).first).to_be_visible()
            expect(page.get_by_text("Materialized (")).to_be_visible()
            expect(page.get_by_text("Missing (")).to_be_visible()
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            expect(page.get_by_text("No partition selected")).to_have_count(0)
            answer = dagster_ui.dev.graphql(CALLS_MATERIALIZED, {"partition": last_day})
            if answer["assetOrError"].get("assetMaterializations"):  # the backfill test ran
                # The day's materialisation metadata, as the load reported it.
                for label in ("dagster/row_count", "lock_wait_s", "load_s"):
                    expect(page.get_by_text(label, exact=True).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dagster_calls_partitions.png"))
        finally:
            browser.close()
