"""Measure a backfill launched the way the Dagster UI launches it.

    uv run python benchmarks/ui_backfill.py --days 30

Starts `dagster dev` (webserver, daemon, code server) headless on loopback, against the
project's workspace.yaml, with a temporary DAGSTER_HOME holding the project's dagster.yaml and
the Callr simulator (in this process) as the API; launches one backfill of the daily assets over
`--days` partitions through the GraphQL mutation the UI's "Materialize" dialog sends; waits for
it, then prints wall time (launch to the backfill's completion, as the UI shows it), runs,
retried runs, per-run durations, DuckDB lock waits and the rows loaded. Measures, never asserts.
"""

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline_tests.dagster_processes import DagsterDev, make_dagster_home
from cdr_pipeline_tests.test_dagster_ui import (
    BACKFILL_STATUS,
    RUN_LOGS,
    launch_backfill,
    wait_for_backfill,
)

API_KEY = "bench-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="partitions to backfill")
    parser.add_argument("--first-day", type=dt.date.fromisoformat, default=dt.date(2026, 6, 1))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait at most")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()

    days = [args.first_day + dt.timedelta(days=n) for n in range(args.days)]
    tmp = Path(tempfile.mkdtemp(prefix="ui-backfill-"))
    with SimulatorServer(api_key=API_KEY) as simulator:
        env = {
            "CALLR_BASE_URL": simulator.base_url,
            "CALLR_API_KEY": API_KEY,
            "CDR_DATA_DIR": str(tmp / "data"),
            "CDR_START_DATE": args.first_day.isoformat(),
        }
        with DagsterDev(make_dagster_home(tmp / "home"), env, tmp / "dagster_dev.log") as dev:
            started = time.monotonic()
            backfill_id = launch_backfill(dev, days)
            backfill = wait_for_backfill(dev, backfill_id, args.timeout)
            wall_s = time.monotonic() - started
            backfill = dev.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})[
                "partitionBackfillOrError"
            ]
            runs = backfill["runs"]
            lock_errors = waits = 0
            for run in runs:
                events = dev.graphql(RUN_LOGS, {"runId": run["runId"]})["logsForRun"]["events"]
                messages = [e.get("message", "") for e in events]
                lock_errors += sum("Could not set lock" in m for m in messages)
                waits += sum("is locked by" in m for m in messages)
    with duckdb.connect(str(tmp / "data" / "warehouse.duckdb"), read_only=True) as con:
        sql = "SELECT count(*), count(DISTINCT call_id) FROM calls"
        calls, distinct = con.execute(sql).fetchone()
    durations = sorted(r["endTime"] - r["startTime"] for r in runs if r["endTime"])
    result = {
        "partitions": len(days),
        "status": backfill["status"],
        "wall_s": round(wall_s, 1),
        "runs": len(runs),
        "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        "retried_runs": sum(
            any(t["key"] == "dagster/retry_number" for t in r["tags"]) for r in runs
        ),
        "run_s_median": round(statistics.median(durations), 1),
        "run_s_max": round(durations[-1], 1),
        "lock_errors": lock_errors,
        "lock_wait_lines": waits,
        "calls": calls,
        "distinct_call_ids": distinct,
        "cpus": os.cpu_count(),
        "simulator": dataclasses.asdict(simulator.options),
        "dagster_dev_log": str(tmp / "dagster_dev.log"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
