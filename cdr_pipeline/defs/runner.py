"""Run the project's jobs through a real Dagster instance, one day at a time (CLI backfill)."""

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from cdr_pipeline.defs.definitions import DAILY_JOB, REFERENCE_JOB

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


def instance_for(data_dir: Path) -> dg.DagsterInstance:
    """The Dagster instance at DAGSTER_HOME, or a persistent one under the data directory."""
    if not os.environ.get("DAGSTER_HOME"):
        home = (data_dir / "dagster_home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from `start` to `end`, inclusive."""
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def run_reference_tables(defs: dg.Definitions, instance: dg.DagsterInstance) -> PartitionOutcome:
    """Materialise the unpartitioned reference tables (q850_causes)."""
    started = time.perf_counter()
    result = defs.resolve_job_def(REFERENCE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
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
            tags={"cdr/trigger": "cli"},
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
