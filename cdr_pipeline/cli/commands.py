"""The `cdr-pipeline` commands: each reads its settings, calls the core or runs the Dagster
definitions, and prints what a user needs."""

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdr_pipeline.config import ConfigError, Settings, check_timezone
from cdr_pipeline.dayranges import days_between

if TYPE_CHECKING:
    import dagster as dg
    import polars as pl

log = logging.getLogger("cdr_pipeline")


def cmd_dagster(args: argparse.Namespace) -> int:
    from cdr_pipeline.defs.instance import exec_dagster

    exec_dagster(args.process, args.dagster_args, Settings.from_env().data_dir)
    return 0  # not reached: the process became Dagster's


def cmd_receiver(args: argparse.Namespace) -> int:
    from cdr_pipeline.receiver.app import serve

    serve(Settings.from_env(), args.host, args.port, forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from cdr_pipeline.callr.simulator import serve

    api_key = args.api_key or os.environ.get("CALLR_API_KEY") or "sim-key"
    log.setLevel(logging.INFO)  # say where it listens
    serve(args.host, args.port, api_key)
    return 0


def _settings_with_warehouse() -> Settings:
    """Settings from the environment, once the warehouse they name exists."""
    settings = Settings.from_env()
    if not settings.warehouse.exists():
        raise ConfigError(
            f"no warehouse at {settings.warehouse}: run `cdr-pipeline demo` or a backfill first, "
            "or set CDR_WAREHOUSE"
        )
    return settings


def _dagster(
    settings: Settings, simulator_api_key: str | None = None
) -> "tuple[dg.Definitions, dg.DagsterInstance]":
    """The project's definitions for `settings`, and the Dagster instance the CLI records in."""
    from cdr_pipeline.defs import runner
    from cdr_pipeline.defs.definitions import build_definitions

    instance = runner.instance_for(settings.data_dir)
    return build_definitions(settings, simulator_api_key=simulator_api_key), instance


def cmd_snapshot(args: argparse.Namespace) -> int:
    from cdr_pipeline import warehouse

    settings = _settings_with_warehouse()
    target = args.output or warehouse.snapshot_path(settings.warehouse)
    warehouse.snapshot(settings.warehouse, target)
    print(f"Snapshot of {settings.warehouse} written to {target}")
    print(f"Query it for as long as you like (loads are not blocked): duckdb -readonly {target}")
    print("Run `cdr-pipeline snapshot` again to refresh it.")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from cdr_pipeline import warehouse

    settings = _settings_with_warehouse()
    # Read-only and short-lived: the connection is closed as soon as the result is in memory,
    # so a quick question never holds the file against the loader for long.
    with warehouse.connect(settings.warehouse, read_only=True, lock_wait_s=60) as con:
        try:
            result = con.sql(args.query)
            frame = result.pl() if result is not None else None
        except duckdb.Error as error:
            print(f"cdr-pipeline sql: {error}", file=sys.stderr)
            return 1
    if frame is not None:
        print(_table(frame, rows=args.max_rows, width=200, fmt_str_lengths=60))
    return 0


def _table(frame: "pl.DataFrame", rows: int, width: int, **options: Any) -> str:
    """A frame as the CLI prints it: every column, no types, no shape line."""
    import polars as pl

    with pl.Config(
        tbl_rows=rows,
        tbl_cols=-1,
        tbl_width_chars=width,
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        **options,
    ):
        return str(frame)


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.end < args.start:
        raise ConfigError(f"--end {args.end} is before --start {args.start}")
    if not os.environ.get("CALLR_API_KEY"):
        raise ConfigError(
            "CALLR_API_KEY is not set: export your Callr API key (or run `cdr-pipeline demo` "
            "to try the pipeline on the built-in simulator)"
        )
    settings = Settings.from_env()
    if args.start < settings.start_date:
        raise ConfigError(
            f"--start {args.start} is before CDR_START_DATE {settings.start_date}: "
            "set CDR_START_DATE earlier to backfill those days"
        )
    return _run_days(settings, days_between(args.start, args.end), args.verbose)


def cmd_rebuild_marts(args: argparse.Namespace) -> int:
    from cdr_pipeline.defs import runner
    from cdr_pipeline.defs.maintenance import REBUILD_JOB

    settings = _settings_with_warehouse()
    defs, instance = _dagster(settings)
    started = time.perf_counter()
    outcome = runner.run_job(defs, REBUILD_JOB, instance, args.verbose)
    if outcome.error:
        print(f"rebuild-marts failed: {outcome.error}", file=sys.stderr)
        return 1
    print(
        f"Marts recomputed with CDR_TIMEZONE={settings.timezone}, CDR_NER_CAUSES="
        f"{','.join(str(c) for c in settings.ner_causes)} in {time.perf_counter() - started:.1f} s "
        f"(run {outcome.run_id[:8]})"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cdr_pipeline import report
    from cdr_pipeline.defs import runner

    settings = _settings_with_warehouse()
    days = days_between(args.day, args.end or args.day)
    if not days:
        raise ConfigError(f"--end {args.end} is before --day {args.day}")
    defs, instance = _dagster(settings)
    outcome = runner.run_reports(defs, days, instance)
    if outcome.error:
        print(f"report failed: {outcome.error}", file=sys.stderr)
        return 1
    folder = report.reports_dir(settings.data_dir)
    for day in days:
        print(report.report_path(folder, day))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from cdr_pipeline import warehouse

    settings = _settings_with_warehouse()
    with warehouse.connect(settings.warehouse, read_only=True, lock_wait_s=60) as con:
        duplicates, examples = warehouse.duplicate_call_ids(con)
        rows = warehouse.table_rows(con)
    if duplicates:
        print(
            f"{duplicates} call_id(s) stored more than once among ~{rows:,} calls, e.g. "
            f"{', '.join(str(e) for e in examples)}: re-load their days to keep one copy",
            file=sys.stderr,
        )
        return 1
    print(f"every call_id is stored once (~{rows:,} calls)")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    import json

    from cdr_pipeline import erasure, privacy
    from cdr_pipeline.defs import runner
    from cdr_pipeline.defs.privacy import ERASE_JOB

    settings = Settings.from_env()
    try:
        request = erasure.write_request(settings.data_dir, args.number)
    except privacy.ErasureError as error:
        print(f"cdr-pipeline erase: {error}", file=sys.stderr)
        return 2
    config = {"ops": {"erase_number": {"config": {"request": request}}}}
    try:
        defs, instance = _dagster(settings)
        outcome = runner.run_job(
            defs,
            ERASE_JOB,
            instance,
            args.verbose,
            run_config=config if args.verbose else runner.QUIET_RUN_CONFIG | config,
        )
    finally:  # a run that failed before taking the request leaves no number behind
        with contextlib.suppress(privacy.ErasureError):
            erasure.take_request(settings.data_dir, request)
    if outcome.error:
        print(f"erase failed: {outcome.error}", file=sys.stderr)
        return 1
    audit = privacy.erasure_audit_path(settings.data_dir)
    entry = json.loads(audit.read_text().splitlines()[-1])
    print(f"Erased the number (hash {entry['number_hash']}…), run {outcome.run_id[:8]}:")
    for place, changed in entry["changes"].items():
        print(f"  {place}: {changed}")
    print(f"It is on the erasure list: later loads drop its calls. Audit entry: {audit}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cdr_pipeline.callr.simulator import SimulatorServer

    settings = Settings.from_env()
    today = dt.datetime.now(check_timezone(settings.timezone)).date()
    days = days_between(today - dt.timedelta(days=args.days), today - dt.timedelta(days=1))
    settings = dataclasses.replace(settings, start_date=min(settings.start_date, days[0]))
    with SimulatorServer() as simulator:
        settings = dataclasses.replace(settings, base_url=simulator.base_url)
        print(f"Callr simulator listening on {simulator.base_url}")
        status = _run_days(settings, days, args.verbose, simulator_api_key=simulator.api_key)
    if status == 0:
        _print_summary(settings, days)
    return status


def _run_days(
    settings: Settings,
    days: list[dt.date],
    verbose: bool,
    simulator_api_key: str | None = None,
) -> int:
    from cdr_pipeline.defs import runner

    defs, instance = _dagster(settings, simulator_api_key)
    print(f"Dagster instance: {instance.root_directory}")
    total = len(days)
    tally = runner.DaysTally()

    def progress(outcome: runner.RangeOutcome) -> None:
        tally.record(outcome)
        state = "ok" if outcome.success else "FAILED"
        print(
            f"[{len(tally.loaded)}/{total}] {outcome.span}  {state:6}  "
            f"{outcome.days_ok}/{outcome.days} days  {outcome.seconds:5.1f} s  "
            f"run {outcome.run_id[:8]}",
            flush=True,
        )
        for day, reason in sorted(outcome.failed_days.items()):
            print(f"        {day}: {reason}", flush=True)
        if outcome.error:
            print(f"        {outcome.error}", flush=True)

    runner.run_ranges(
        defs,
        days,
        instance,
        days_per_run=settings.days_per_run,
        on_done=progress,
        verbose=verbose,
    )
    if failed := tally.failed:
        print(
            f"{len(failed)} of {total} days failed: " + ", ".join(str(d) for d in sorted(failed)),
            file=sys.stderr,
        )
        for day, reason in sorted(failed.items()):
            print(f"  {day}: {reason}", file=sys.stderr)
        return 1
    print(f"{total} days loaded into {settings.warehouse}")
    return 0


def _print_summary(settings: Settings, days: list[dt.date]) -> None:
    from cdr_pipeline import queries, report, warehouse

    with warehouse.connect(settings.warehouse, read_only=True) as con:
        per_day = queries.rows_per_day(con, days)
        kpis = queries.daily_kpis(con, days[0], days[-1], queries.KPI_SUMMARY_COLUMNS)
    print("\nRows per day")
    print(_table(per_day, rows=100, width=160))
    print("\nDaily KPIs")
    print(_table(kpis, rows=100, width=160))
    store = warehouse.Lake(settings.data_dir, settings.lake_url).store
    print(f"\nRaw exports:   {store.uri(warehouse.RAW_PREFIX)}")
    print(f"Typed Parquet: {store.uri(warehouse.CALLS_PREFIX)}")
    print(f"Warehouse:     {settings.warehouse}")
    print('Query it:      uv run cdr-pipeline sql "FROM daily_kpis ORDER BY ALL"')
    folder = report.reports_dir(Path(settings.data_dir))
    print(f"Daily report:  {report.report_path(folder, days[-1])}")
