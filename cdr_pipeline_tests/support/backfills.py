"""Backfills as the Dagster UI launches them (its GraphQL API), and what they should load."""

import dataclasses
import datetime as dt
import time

from cdr_pipeline.callr.simulator import SimulatorServer, expected_call_ids
from cdr_pipeline.config import day_window
from cdr_pipeline.schema import DIRECTIONS
from cdr_pipeline_tests.support.dagster_processes import DagsterDev
from cdr_pipeline_tests.support.paths import ARTIFACTS

__all__ = [
    "ARTIFACTS",
    "BACKFILL_STATUS",
    "DAILY_ASSETS",
    "LOCK_ERRORS",
    "RUN_LOGS",
    "expected_calls",
    "launch_backfill",
    "wait_for_backfill",
]

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


def expected_calls(simulator: SimulatorServer, days: list[dt.date]) -> set[int]:
    """call ids of every valid call the simulator exports for those days, both directions."""
    options = dataclasses.asdict(simulator.options)
    ids: set[int] = set()
    for day in days:
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            ids |= expected_call_ids(start, end, direction, **options)
    return ids


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


RUN_LOGS = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message level } } }
    ... on PythonError { message }
  }
}
"""
