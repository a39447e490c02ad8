"""Backfill throughput: N simulator days through the CLI, and through the webserver and daemon
as the Dagster UI launches a backfill.

    uv run python benchmarks/backfill.py --days 365                    # both ways
    uv run python benchmarks/backfill.py --days 30 --via cli --repeat 3

The Callr simulator runs in this process, in a thread, with every export body generated into
its cache before the clock starts (Callr's own CPU is not the pipeline's). Then, per round:

- `cli`: `cdr-pipeline backfill --start D1 --end DN` as a process (the console script, as
  `uv run cdr-pipeline` starts it), on an empty data folder: wall time from start to exit,
  the process's peak RSS, the runs it made;
- `ui`: `dagster dev` (webserver, daemon, code server) on loopback with the project's
  workspace.yaml and dagster.yaml in a fresh DAGSTER_HOME; one backfill of the daily assets over
  the N days through the GraphQL mutation the UI's "Materialize" dialog sends; wall time from the
  launch to the backfill's completion as the UI shows it, runs, retries, lock errors.

Both check that the warehouse holds exactly the simulator's calls, once each. Measures, never
asserts; quote the medians.
"""

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from cdr_pipeline.callr.simulator import SimulatorServer, cached_export, expected_call_ids
from cdr_pipeline.config import day_window
from cdr_pipeline.schema import DIRECTIONS
from cdr_pipeline_tests.dagster_processes import DagsterDev, make_dagster_home
from cdr_pipeline_tests.test_dagster_ui import (
    BACKFILL_STATUS,
    RUN_LOGS,
    launch_backfill,
    wait_for_backfill,
)

API_KEY = "bench-key"
FIRST_DAY = dt.date(2025, 1, 1)


def warm_cache(simulator: SimulatorServer, days: list[dt.date]) -> float:
    """Generate every export body the backfill will ask for; seconds it took."""
    started = time.perf_counter()
    options = dataclasses.asdict(simulator.options)
    for day in days:
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            cached_export(simulator.cache_dir, start, end, direction, gzip_encoded=True, **options)
    return time.perf_counter() - started


def check_warehouse(path: Path, simulator: SimulatorServer, days: list[dt.date]) -> dict:
    """Calls loaded, and whether they are exactly the simulator's, once each."""
    options = dataclasses.asdict(simulator.options)
    expected: set[int] = set()
    for day in days:
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            expected |= expected_call_ids(start, end, direction, **options)
    with duckdb.connect(str(path), read_only=True) as con:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT call_id) FROM calls"
        ).fetchone()
        loaded = {r[0] for r in con.execute("SELECT call_id FROM calls").fetchall()}
    return {"calls": rows, "exactly_the_simulators_calls": rows == distinct and loaded == expected}


def via_cli(simulator: SimulatorServer, days: list[dt.date], work: Path, per_run: int) -> dict:
    """`cdr-pipeline backfill` over the days, as a process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_", "DAGSTER"))}
    env |= {
        "CALLR_BASE_URL": simulator.base_url,
        "CALLR_API_KEY": API_KEY,
        "CDR_DATA_DIR": str(work / "data"),
        "CDR_START_DATE": days[0].isoformat(),
        "CDR_DAYS_PER_RUN": str(per_run),
    }
    command = [
        str(Path(sys.executable).with_name("cdr-pipeline")),
        "backfill",
        "--start",
        days[0].isoformat(),
        "--end",
        days[-1].isoformat(),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"backfill failed ({process.returncode}):\n{output[-3000:]}")
    runs = sum(1 for line in output.splitlines() if line.startswith("["))
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "runs": runs,
        **check_warehouse(work / "data" / "warehouse.duckdb", simulator, days),
    }


def via_ui(simulator: SimulatorServer, days: list[dt.date], work: Path, per_run: int) -> dict:
    """A backfill launched through the webserver's GraphQL, run by the daemon."""
    env = {
        "CALLR_BASE_URL": simulator.base_url,
        "CALLR_API_KEY": API_KEY,
        "CDR_DATA_DIR": str(work / "data"),
        "CDR_START_DATE": days[0].isoformat(),
        "CDR_DAYS_PER_RUN": str(per_run),
    }
    with DagsterDev(make_dagster_home(work / "home"), env, work / "dagster_dev.log") as dev:
        started = time.monotonic()
        backfill_id = launch_backfill(dev, days)
        wait_for_backfill(dev, backfill_id, 3600)
        wall = time.monotonic() - started
        backfill = dev.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})[
            "partitionBackfillOrError"
        ]
        runs = backfill["runs"]
        lock_errors = 0
        for run in runs:
            events = dev.graphql(RUN_LOGS, {"runId": run["runId"]})["logsForRun"]["events"]
            lock_errors += sum("Could not set lock" in e.get("message", "") for e in events)
    durations = sorted(r["endTime"] - r["startTime"] for r in runs if r["endTime"])
    return {
        "wall_s": round(wall, 1),
        "status": backfill["status"],
        "runs": len(runs),
        "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        "retried_runs": sum(
            any(t["key"] == "dagster/retry_number" for t in r["tags"]) for r in runs
        ),
        "run_s_median": round(statistics.median(durations), 1) if durations else None,
        "lock_errors": lock_errors,
        **check_warehouse(work / "data" / "warehouse.duckdb", simulator, days),
    }


METHODS = {"cli": via_cli, "ui": via_ui}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365, help="days to backfill (default 365)")
    parser.add_argument("--via", choices=[*METHODS, "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (default 1)")
    parser.add_argument("--days-per-run", type=int, default=31, help="CDR_DAYS_PER_RUN")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    days = [FIRST_DAY + dt.timedelta(days=n) for n in range(args.days)]
    methods = list(METHODS) if args.via == "both" else [args.via]
    root = Path(tempfile.mkdtemp(prefix="cdr-backfill-bench-"))
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    try:
        with SimulatorServer(api_key=API_KEY, cache_dir=root / "cache") as simulator:
            warmed = warm_cache(simulator, days)
            print(f"{len(days)} days of exports generated in {warmed:.1f} s", flush=True)
            for round_ in range(args.repeat):
                for method in methods[round_ % len(methods) :] + methods[: round_ % len(methods)]:
                    work = root / f"{method}-{round_}"
                    work.mkdir()
                    result = METHODS[method](simulator, days, work, args.days_per_run)
                    results[method].append(result)
                    print(f"round {round_ + 1} {method}: {json.dumps(result)}", flush=True)
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {
        method: {
            "days": args.days,
            "days_per_run": args.days_per_run,
            "rounds": len(runs),
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "wall_s_all": [r["wall_s"] for r in runs],
            "s_per_day": round(statistics.median(r["wall_s"] for r in runs) / args.days, 3),
            "exact": all(r["exactly_the_simulators_calls"] for r in runs),
            "calls": runs[0]["calls"],
        }
        for method, runs in results.items()
    }
    about = {
        "cpus": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "peak_rss_mb_this_process": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
    }
    print(json.dumps({"machine": about, "summary": summary}, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": about, "summary": summary, "runs": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
