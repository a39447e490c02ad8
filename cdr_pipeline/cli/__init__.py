"""`cdr-pipeline`: demo, backfill, simulator and sql, over the same Dagster definitions."""

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdr_pipeline.cli.commands import (
    cmd_audit,
    cmd_backfill,
    cmd_dagster,
    cmd_demo,
    cmd_erase,
    cmd_rebuild_marts,
    cmd_receiver,
    cmd_report,
    cmd_simulator,
    cmd_snapshot,
    cmd_sql,
)
from cdr_pipeline.config import ConfigError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cdr-pipeline` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Library chatter (HTTP requests, storage migrations) only with --verbose.
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    try:
        return args.command(args)
    except ConfigError as error:
        print(f"cdr-pipeline: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdr-pipeline", description="Callr CDRs into a DuckDB warehouse, with Dagster."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        found = sub.add_parser(name, help=text)
        found.set_defaults(command=run)
        return found

    date: dict[str, Any] = {"type": dt.date.fromisoformat, "metavar": "YYYY-MM-DD"}
    demo = command("demo", cmd_demo, "run the pipeline over the last days on the simulator")
    demo.add_argument("--days", type=int, default=7, help="how many past days (default 7)")

    backfill = command("backfill", cmd_backfill, "materialise every day in a range")
    backfill.add_argument("--start", required=True, **date)
    backfill.add_argument("--end", required=True, **date)

    rebuild = command(
        "rebuild-marts",
        cmd_rebuild_marts,
        "recompute every mart from calls (after changing CDR_TIMEZONE or CDR_NER_CAUSES)",
    )
    report = command(
        "report", cmd_report, "render the HTML report of a day, or of every day of a range"
    )
    report.add_argument("--day", required=True, **date)
    report.add_argument("--end", help="last day of a range", **date)

    command("audit", cmd_audit, "check that every call_id is stored once in the whole calls table")
    erase = command(
        "erase",
        cmd_erase,
        "remove a phone number's calls from every copy and keep it out of later loads",
    )
    erase.add_argument("--number", required=True, help="the number, e.g. +33612345678")
    for runs_dagster in (demo, backfill, rebuild, erase):
        runs_dagster.add_argument("--verbose", action="store_true", help="show Dagster's run logs")

    sql = command("sql", cmd_sql, "run one read-only SQL query against the warehouse")
    sql.add_argument("query", help='e.g. "SELECT * FROM daily_kpis ORDER BY call_date"')
    sql.add_argument("--max-rows", type=int, default=50, help="rows to show (default 50)")

    snapshot = command(
        "snapshot", cmd_snapshot, "copy the warehouse into a file to query for as long as you like"
    )
    snapshot.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where (default: warehouse-snapshot.duckdb beside the warehouse)",
    )

    simulator = command("simulator", cmd_simulator, "serve a fake Callr export API on loopback")
    simulator.add_argument("--port", type=int, default=8765)
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument(
        "--api-key",
        default=None,
        help="key the simulator accepts (default: $CALLR_API_KEY or 'sim-key')",
    )

    receiver = command(
        "receiver",
        cmd_receiver,
        "serve the real-time receiver for Callr webhooks and Actions pushes",
    )
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--port", type=int, default=8766)
    receiver.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="trust X-Forwarded-For/-Proto from these proxy addresses (e.g. 127.0.0.1)",
    )

    dagster = command(
        "dagster",
        cmd_dagster,
        "start a Dagster process on the instance the environment selects (SQLite/PostgreSQL)",
    )
    dagster.add_argument("process", choices=["webserver", "daemon", "dev"])
    dagster.add_argument(
        "dagster_args", nargs=argparse.REMAINDER, help="passed on (e.g. --host 0.0.0.0 --port 3000)"
    )
    return parser
