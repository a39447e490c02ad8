"""Run the project's jobs through a real Dagster instance: ranges of days (the CLI's backfill)."""

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cdr_pipeline.dayranges import consecutive_ranges, days_between
from cdr_pipeline.defs.definitions import DAILY_JOB
from cdr_pipeline.defs.instance import dagster_home
from cdr_pipeline.defs.keys import REPORT_KEY
from cdr_pipeline.defs.ranges import failed_days, range_tags, without

log = logging.getLogger(__name__)

# The CLI prints one line per day and the cause of a failure; Dagster's own console log (with
# stack traces) is for --verbose and the UI's event log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


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


@dataclass(frozen=True)
class RangeOutcome:
    """How one run over a range of days went."""

    first: dt.date
    last: dt.date
    run_id: str
    seconds: float
    failed_days: dict[dt.date, str] = field(default_factory=dict)
    error: str | None = None  # a failure of the whole range (no day named)

    @property
    def success(self) -> bool:
        return self.error is None and not self.failed_days

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def days_ok(self) -> int:
        """The days of the range that loaded (none if the whole range failed)."""
        return self.days - len(self.failed_days) if self.error is None else 0

    @property
    def span(self) -> str:
        """`first..last`, or the one day."""
        return f"{self.first}" if self.days == 1 else f"{self.first}..{self.last}"


@dataclass
class DaysTally:
    """The days of a run of ranges loaded so far, and those failed with their reasons (a day
    that failed in one run and loaded in a later one counts as loaded)."""

    loaded: set[dt.date] = field(default_factory=set)
    failed: dict[dt.date, str] = field(default_factory=dict)

    def record(self, outcome: RangeOutcome) -> None:
        """Count the days of a finished run."""
        for day in days_between(outcome.first, outcome.last):
            if outcome.error is None and day not in outcome.failed_days:
                self.loaded.add(day)
                self.failed.pop(day, None)
            else:
                self.failed.setdefault(day, outcome.failed_days.get(day) or outcome.error or "")


def run_reports(
    defs: dg.Definitions, days: Iterable[dt.date], instance: dg.DagsterInstance
) -> RangeOutcome:
    """Render the reports of `days` (the `daily_report` asset with those days asked for)."""
    days = sorted(set(days))
    op = REPORT_KEY.to_python_identifier()
    config = {"ops": {op: {"config": {"days": [d.isoformat() for d in days]}}}}
    return run_job(
        defs,
        DAILY_JOB,
        instance,
        run_config=QUIET_RUN_CONFIG | config,
        asset_selection=[REPORT_KEY],
    )


def run_job(
    defs: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    verbose: bool = False,
    *,
    run_config: dict | None = None,
    asset_selection: list[dg.AssetKey] | None = None,
) -> RangeOutcome:
    """Run an unpartitioned job (or assets of one) of the definitions, recorded in `instance`."""
    started = time.perf_counter()
    if run_config is None and not verbose:
        run_config = QUIET_RUN_CONFIG
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=run_config,
        asset_selection=asset_selection,
        tags=_cli_tags(),
    )
    return RangeOutcome(
        dt.date.min,
        dt.date.min,
        result.run_id,
        time.perf_counter() - started,
        error=None if result.success else _failure_message(result)[0],
    )


def run_ranges(
    defs: dg.Definitions,
    days: Iterable[dt.date],
    instance: dg.DagsterInstance,
    *,
    days_per_run: int,
    on_done: Callable[[RangeOutcome], None] = lambda _: None,
    verbose: bool = False,
) -> list[RangeOutcome]:
    """Run the daily job over `days`, `days_per_run` consecutive days per run, in order.

    A run in which some days failed (it names them) is followed by runs of the range's other
    days, so a bad day costs that day only, as the `split_failed_ranges` sensor does for the
    daemon's backfills.
    """
    job = defs.resolve_job_def(DAILY_JOB)
    run_config = None if verbose else QUIET_RUN_CONFIG
    outcomes: list[RangeOutcome] = []
    queue = list(consecutive_ranges(days, days_per_run))
    retried: set[dt.date] = set()
    while queue:
        first, last = queue.pop(0)
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=run_config,
            tags={**_cli_tags(), **range_tags(first, last)},
        )
        failed: dict[dt.date, str] = {}
        error = None
        if not result.success:
            error, failed = _failure_message(result)
            if failed:
                error = None
        outcome = RangeOutcome(
            first, last, result.run_id, time.perf_counter() - started, failed, error
        )
        outcomes.append(outcome)
        on_done(outcome)
        if failed and first not in retried:
            others = without(days_between(first, last), failed, days_per_run)
            retried.update(d for a, b in others for d in days_between(a, b))
            queue[:0] = others
    return outcomes


def _failure_message(result: dg.ExecuteInProcessResult) -> tuple[str, dict[dt.date, str]]:
    """The first step failure's message (the user-facing cause, not a stack trace), and the
    days it named with their reasons."""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            named = data.user_failure_data.metadata if data.user_failure_data else {}
            days = failed_days(named)
            error = data.error
            while error is not None and error.cause is not None and _is_wrapper(error):
                error = error.cause
            message = error.message.strip() if error is not None else "step failed"
            reasons = _day_reasons(message, days)
            return f"{event.step_key}: {message}", reasons
    return "run failed (see the Dagster UI for its event log)", {}


def _day_reasons(message: str, days: list[dt.date]) -> dict[dt.date, str]:
    """Each named day's own reason, from the failure's `<day>: <reason>; ...` description."""
    reasons = {day: message for day in days}
    for part in message.split("; "):
        head, _, reason = part.partition(": ")
        for day in days:
            if head.endswith(day.isoformat()):
                reasons[day] = reason
    return reasons


def _is_wrapper(error: object) -> bool:
    # Dagster wraps user errors in "Error occurred while executing op ..."; show the cause.
    return "Error occurred while" in getattr(error, "message", "")
