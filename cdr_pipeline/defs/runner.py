"""Run the project's jobs through a real Dagster instance, one day at a time (CLI backfill)."""

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from cdr_pipeline.defs.definitions import DAILY_JOB, REFERENCE_JOB
from cdr_pipeline.defs.instance import dagster_home

log = logging.getLogger(__name__)

# The CLI prints one line per day and the cause of a failure; Dagster's own console log (with
# stack traces) is for --verbose and the UI's event log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class PartitionOutcome:
    """How one partition's run went."""

    day: dt.date
    run_id: str
    success: bool
    seconds: float
    error: str | None = None


# Tags on the CLI's runs: which process runs them, so a later CLI can tell an abandoned run.
CLI_PID_TAG = "cdr/cli_pid"
CLI_HOST_TAG = "cdr/cli_host"


def instance_for(data_dir: Path) -> dg.DagsterInstance:
    """The Dagster instance at DAGSTER_HOME, or a persistent one under the data directory.

    The home gets the project's instance settings (the `duckdb_writer` pool, queued runs,
    retries), on SQLite or, with DAGSTER_PG_HOST set, on PostgreSQL (see
    `cdr_pipeline.defs.instance`), so `DAGSTER_HOME=<data>/dagster_home dagster dev` later opens
    the same instance, with the same settings, and shows the CLI's runs.
    """
    dagster_home(data_dir)
    instance = dg.DagsterInstance.get()
    release_abandoned_slots(instance)
    return instance


def release_abandoned_slots(instance: dg.DagsterInstance) -> list[str]:
    """Free concurrency-pool slots held by runs that will never release them; their run ids.

    A run claims a `duckdb_writer` slot for each pooled step and releases it when the step ends.
    A CLI killed mid-step (SIGKILL, out of memory, a reboot) never does, and with no daemon
    watching, the next load would wait for that slot forever. A run is abandoned when it has
    finished (the daemon frees those too, after `free_slots_after_run_end_seconds`) or when it is
    a CLI run of this host whose process is gone; such a run is also marked failed.
    """
    storage = instance.event_log_storage
    released: list[str] = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        holders = {slot.run_id for slot in info.claimed_slots}
        holders |= {step.run_id for step in info.pending_steps}
        for run_id in sorted(holders - set(released)):
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                if not _is_dead_cli_run(run):
                    continue
                instance.report_run_failed(
                    run,
                    message=f"its cdr-pipeline process (PID {run.tags[CLI_PID_TAG]}) ended "
                    "before the run did",
                )
            storage.free_concurrency_slots_for_run(run_id)
            log.warning("released the %s pool slot of abandoned run %s", pool, run_id)
            released.append(run_id)
    return released


def _is_dead_cli_run(run: dg.DagsterRun) -> bool:
    pid, host = run.tags.get(CLI_PID_TAG, ""), run.tags.get(CLI_HOST_TAG)
    if not pid.isdigit() or host != socket.gethostname() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _cli_tags() -> dict[str, str]:
    return {
        "cdr/trigger": "cli",
        CLI_PID_TAG: str(os.getpid()),
        CLI_HOST_TAG: socket.gethostname(),
    }


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from `start` to `end`, inclusive."""
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def run_reference_tables(defs: dg.Definitions, instance: dg.DagsterInstance) -> PartitionOutcome:
    """Materialise the unpartitioned reference tables (q850_causes)."""
    started = time.perf_counter()
    result = defs.resolve_job_def(REFERENCE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG, tags=_cli_tags()
    )
    return PartitionOutcome(
        dt.date.min,
        result.run_id,
        result.success,
        time.perf_counter() - started,
        None if result.success else _failure_message(result),
    )


def run_partitions(
    defs: dg.Definitions,
    days: Iterable[dt.date],
    instance: dg.DagsterInstance,
    on_done: Callable[[PartitionOutcome], None] = lambda _: None,
    verbose: bool = False,
) -> list[PartitionOutcome]:
    """Run the daily job for each day, in order, recording each run in `instance`."""
    job = defs.resolve_job_def(DAILY_JOB)
    outcomes = []
    for day in days:
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            run_config=None if verbose else QUIET_RUN_CONFIG,
            tags=_cli_tags(),
        )
        outcome = PartitionOutcome(
            day,
            result.run_id,
            result.success,
            time.perf_counter() - started,
            None if result.success else _failure_message(result),
        )
        outcomes.append(outcome)
        on_done(outcome)
    return outcomes


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's message (the user-facing cause, not a stack trace)."""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None and _is_wrapper(error):
                error = error.cause
            if error is not None:
                return f"{event.step_key}: {error.message.strip()}"
    return "run failed (see the Dagster UI for its event log)"


def _is_wrapper(error: object) -> bool:
    # Dagster wraps user errors in "Error occurred while executing op ..."; show the cause.
    return "Error occurred while" in getattr(error, "message", "")
