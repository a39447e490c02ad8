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

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.backfills import (
    ARTIFACTS,
    DAILY_ASSETS,
    LOCK_ERRORS,
    RUN_LOGS,
    expected_calls,
    launch_backfill,
    wait_for_backfill,
)
from cdr_pipeline_tests.support.dagster_processes import (
    DagsterDev,
    make_dagster_home,
    simulator_env,
)

pytestmark = pytest.mark.slow

START_DATE = dt.date(2026, 6, 1)
BACKFILL_DAYS = [START_DATE + dt.timedelta(days=n) for n in range(14)]
DAYS_PER_RUN = 5  # 14 days: runs of 5, 5 and 4 days
FAILING_DAYS = [dt.date(2026, 6, 20) + dt.timedelta(days=n) for n in range(5)]
FAILING_DAY = FAILING_DAYS[2]
BACKFILL_TIMEOUT_S = 480  # ~150 s on an idle 2-core machine

CALLS_MATERIALIZED = """
query CallsMaterialized($partition: String!) {
  assetOrError(assetKey: {path: ["calls"]}) {
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        runId
        partition
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""
PARTITION_STATUS = """
query PartitionStatus($asset: [String!]!) {
  assetNodes(assetKeys: [{path: $asset}]) {
    assetPartitionStatuses {
      ... on TimePartitionStatuses { ranges { status startKey endKey } }
    }
  }
}
"""
RECENT_RUNS = """
query RecentRuns {
  runsOrError(limit: 200) {
    ... on Runs { results { runId status tags { key value } } }
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
        env["CDR_DAYS_PER_RUN"] = str(DAYS_PER_RUN)
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


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def run_range(run: dict) -> tuple[str, str]:
    return tag(run, "dagster/asset_partition_range_start"), tag(
        run, "dagster/asset_partition_range_end"
    )


def calls_materialization(dev: DagsterDev, day: dt.date) -> dict | None:
    """The latest materialisation of `calls` for `day`, with its metadata."""
    answer = dev.graphql(CALLS_MATERIALIZED, {"partition": day.isoformat()})
    found = answer["assetOrError"].get("assetMaterializations") or []
    return found[0] if found else None


def partition_ranges(dev: DagsterDev, asset: str, status: str) -> set[str]:
    """The days of `asset` the UI shows with `status` (MATERIALIZED, FAILED, ...)."""
    nodes = dev.graphql(PARTITION_STATUS, {"asset": [asset]})["assetNodes"]
    days: set[str] = set()
    for span in nodes[0]["assetPartitionStatuses"]["ranges"]:
        if span["status"] == status:
            first = dt.date.fromisoformat(span["startKey"])
            last = dt.date.fromisoformat(span["endKey"])
            days |= {
                (first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)
            }
    return days


def test_ui_backfill_of_14_days_loads_every_call_once(dagster_ui: DagsterUI) -> None:
    dev = dagster_ui.dev
    started = time.monotonic()
    backfill = wait_for_backfill(dev, launch_backfill(dev, BACKFILL_DAYS), BACKFILL_TIMEOUT_S)
    wall_s = time.monotonic() - started

    runs = backfill["runs"]
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert {run["status"] for run in runs} == {"SUCCESS"}, [(r["runId"], r["status"]) for r in runs]
    # Ranged runs: 5 + 5 + 4 days, each day in exactly one run; then one run for the report
    # (not daily-partitioned), which renders the latest day loaded.
    ranged = [run for run in runs if run_range(run)[0] is not None]
    assert sorted(run_range(run) for run in ranged) == [
        ("2026-06-01", "2026-06-05"),
        ("2026-06-06", "2026-06-10"),
        ("2026-06-11", "2026-06-14"),
    ]
    assert len(runs) == len(ranged) + 1
    report = dagster_ui.data_dir / "reports" / f"cdr-report-{BACKFILL_DAYS[-1]}.html"
    assert report.is_file()

    # No run met a DuckDB lock error: the pool kept the DuckDB steps one at a time.
    for run in runs:
        logs = dev.graphql(RUN_LOGS, {"runId": run["runId"]})["logsForRun"]
        assert logs["__typename"] == "EventConnection", logs
        messages = [event.get("message", "") for event in logs["events"]]
        assert not [m for m in messages if any(e in m for e in LOCK_ERRORS)], run["runId"]
    assert not any(e in dev.log_text() for e in LOCK_ERRORS)

    # The warehouse holds exactly the simulator's calls for those days, each once.
    expected = expected_calls(dagster_ui.simulator, BACKFILL_DAYS)
    warehouse = dagster_ui.data_dir / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT call_id) FROM calls"
        ).fetchone()
        loaded = {row[0] for row in con.execute("SELECT call_id FROM calls").fetchall()}
        per_day = dict(con.execute("SELECT call_date, count(*) FROM calls GROUP BY ALL").fetchall())
    assert rows == distinct == len(expected)
    assert loaded == expected
    # Each day has its own materialisation of `calls`, with that day's own row count.
    for day in BACKFILL_DAYS:
        materialization = calls_materialization(dev, day)
        assert materialization is not None, day
        entries = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}
        assert entries["dagster/row_count"] == per_day[day], day

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


def test_ui_backfill_with_a_failing_day_loads_the_others_and_names_it(
    dagster_ui: DagsterUI,
) -> None:
    """A day the API keeps failing, in a 5-day run: the run fails naming it (its retries too),
    then the `split_failed_ranges` sensor runs the range's other days again without it."""
    dev, simulator = dagster_ui.dev, dagster_ui.simulator
    simulator.fail_days(FAILING_DAY, status=503)
    try:
        backfill = wait_for_backfill(dev, launch_backfill(dev, FAILING_DAYS), BACKFILL_TIMEOUT_S)
        assert backfill["status"] != "COMPLETED_SUCCESS", backfill
        others = sorted(d.isoformat() for d in FAILING_DAYS if d != FAILING_DAY)
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while True:
            runs = dev.graphql(RECENT_RUNS)["runsOrError"]["results"]
            split = [run for run in runs if tag(run, "cdr/split_of")]
            if split and all(r["status"] in ("SUCCESS", "FAILURE") for r in split):
                break
            assert time.monotonic() < deadline, split
            time.sleep(2)
    finally:
        simulator.heal_days()
    assert sorted(run_range(run) for run in split) == [
        ("2026-06-20", "2026-06-21"),
        ("2026-06-23", "2026-06-24"),
    ]
    assert {run["status"] for run in split} == {"SUCCESS"}
    # The failed run named the day and why.
    failed = [r for r in backfill["runs"] if r["status"] == "FAILURE"]
    messages = "\n".join(
        event.get("message", "")
        for run in failed
        for event in dev.graphql(RUN_LOGS, {"runId": run["runId"]})["logsForRun"]["events"]
    )
    assert f"{FAILING_DAY}: " in messages and "503" in messages
    # Exactly that day is failed in the UI; the other four are materialised, and loaded.
    assert FAILING_DAY.isoformat() in partition_ranges(dev, "calls", "FAILED")
    assert set(others) <= partition_ranges(dev, "calls", "MATERIALIZED")
    assert FAILING_DAY.isoformat() not in partition_ranges(dev, "raw_cdr_exports", "MATERIALIZED")
    with duckdb.connect(str(dagster_ui.data_dir / "warehouse.duckdb"), read_only=True) as con:
        loaded = {
            r[0].isoformat()
            for r in con.execute(
                "SELECT DISTINCT load_partition FROM calls WHERE load_partition >= ?",
                [FAILING_DAYS[0]],
            ).fetchall()
        }
    assert loaded == set(others)


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
