"""SQL users and the pipeline on one DuckDB file, with real processes.

An analyst's read-only session blocks DuckDB's writer. The design (README, "Querying while the
pipeline runs"): the load waits, bounded, logging who holds the file, and carries on once the
reader is gone; it does not fail the run. These tests hold a read-only connection in another
process while a day loads in a real Dagster run: `dagster asset materialize` on an instance
with the project's dagster.yaml, and `cdr-pipeline backfill`.
"""

import datetime as dt
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdr_pipeline import warehouse
from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline.defs.assets import CALLS_KEY
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.dagster_processes import DAGSTER_YAML, make_dagster_home

DAY = dt.date(2026, 6, 3)
WAIT_LINE = re.compile(r"warehouse \S+ is locked by PID (\d+)")
# A read-only session that stays open until its stdin is closed.
READER = (
    "import duckdb, sys; "
    "con = duckdb.connect(sys.argv[1], read_only=True); "
    "con.execute('SELECT count(*) FROM calls').fetchall(); "
    "print('open', flush=True); sys.stdin.read()"
)


class Process:
    """A child process whose output lines are read in the background, for bounded waits."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout_s: float) -> re.Match[str]:
        """The first output line matching `pattern`, waiting at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None and self._queue.empty():
                    break
                continue
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output: {self.lines}")

    def finish(self, timeout_s: float) -> int:
        """Wait for the exit (bounded) and collect the remaining output; the exit status."""
        status = self.popen.wait(timeout=timeout_s)
        time.sleep(0.2)
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return status

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, 9)
            self.popen.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts; all killed at the end, whatever happened."""
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The CLI's environment against the simulator, and a warehouse that already exists."""
    with SimulatorServer(api_key=SIMULATOR_KEY) as simulator:
        data = tmp_path / "data"
        with warehouse.connect(data / "warehouse.duckdb") as con:
            warehouse.ensure_schema(con)
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_", "DAGSTER_"))
        }
        yield clean | {
            "CALLR_BASE_URL": simulator.base_url,
            "CALLR_API_KEY": SIMULATOR_KEY,
            "CDR_DATA_DIR": str(data),
            "CDR_START_DATE": "2026-06-01",
        }


def start_reader(env: dict[str, str], processes: list[Process]) -> Process:
    reader = Process([sys.executable, "-c", READER, f"{env['CDR_DATA_DIR']}/warehouse.duckdb"])
    processes.append(reader)
    reader.wait_for_line("^open$", timeout_s=30)
    return reader


def start_backfill(env: dict[str, str], processes: list[Process]) -> Process:
    day = DAY.isoformat()
    cli = Process(
        [sys.executable, "-m", "cdr_pipeline.cli", "backfill", "--start", day, "--end", day],
        env=env,
    )
    processes.append(cli)
    return cli


def release(reader: Process) -> None:
    """The analyst closes the session."""
    assert reader.popen.stdin is not None
    reader.popen.stdin.close()
    assert reader.finish(timeout_s=10) == 0


@pytest.mark.slow
def test_partition_load_waits_for_a_reader_then_succeeds(
    lake: dict[str, str], processes: list[Process], tmp_path: Path
) -> None:
    home = make_dagster_home(tmp_path / "dagster_home")
    reader = start_reader(lake, processes)
    run = Process(
        [
            sys.executable, "-m", "dagster", "asset", "materialize",
            "-m", "cdr_pipeline.defs.definitions",
            "--select", "raw_cdr_exports,typed_calls,calls,call_rejects",
            "--partition", DAY.isoformat(),
        ],
        env=lake | {"DAGSTER_HOME": str(home)},
    )  # fmt: skip
    processes.append(run)
    # The load reached DuckDB and waits, naming the reader's process.
    match = run.wait_for_line(WAIT_LINE, timeout_s=120)
    assert int(match[1]) == reader.popen.pid
    held_s = 3.0
    time.sleep(held_s)
    release(reader)
    assert run.finish(timeout_s=120) == 0, run.lines

    # The run succeeded; its event log (what the UI shows) has the wait line naming the reader,
    # and `calls` reports how long the load waited.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": DAY.isoformat()}))
        assert record.status == dg.DagsterRunStatus.SUCCESS
        messages = [entry.user_message for entry in instance.all_logs(record.run_id)]
        assert any(f"locked by PID {reader.popen.pid}" in m for m in messages), messages
        event = instance.get_latest_materialization_event(CALLS_KEY)
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["lock_wait_s"].value >= held_s
    with duckdb.connect(f"{lake['CDR_DATA_DIR']}/warehouse.duckdb", read_only=True) as con:
        (calls,) = con.execute(
            "SELECT count(*) FROM calls WHERE load_partition = ?", [DAY]
        ).fetchone()
    assert calls > 0


@pytest.mark.slow
def test_cli_killed_while_waiting_does_not_block_the_next_load(
    lake: dict[str, str], processes: list[Process]
) -> None:
    """Regression: a CLI run killed while it held the `duckdb_writer` pool slot kept the slot
    forever, so the next `cdr-pipeline backfill` waited for it without end."""
    reader = start_reader(lake, processes)
    first = start_backfill(lake, processes)
    first.wait_for_line(WAIT_LINE, timeout_s=120)  # inside the load step: it holds the slot
    first.kill()
    release(reader)

    second = start_backfill(lake, processes)
    assert second.finish(timeout_s=120) == 0, second.lines
    released = "released the duckdb_writer pool slot of abandoned run"
    assert any(released in line for line in second.lines), second.lines
    assert any("1 days loaded" in line for line in second.lines), second.lines
    # The home the CLI created holds the project's instance settings (the pool among them).
    home = Path(lake["CDR_DATA_DIR"]) / "dagster_home"
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML.read_text()


def cdr_pipeline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdr_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sql_answers_while_an_analyst_session_is_open(
    lake: dict[str, str], processes: list[Process]
) -> None:
    start_reader(lake, processes)  # readers share the file
    result = cdr_pipeline(lake, "sql", "SELECT count(*) AS n FROM q850_causes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2].strip("│ ") == "0"  # a one-cell table: n = 0


def test_a_session_on_the_snapshot_does_not_block_loads(
    lake: dict[str, str], processes: list[Process]
) -> None:
    result = cdr_pipeline(lake, "snapshot")
    assert result.returncode == 0, result.stderr
    data = Path(lake["CDR_DATA_DIR"])
    snapshot = data / "warehouse-snapshot.duckdb"
    assert str(snapshot) in result.stdout
    with duckdb.connect(str(snapshot), read_only=True) as con:
        sql = "SELECT table_name, table_type FROM information_schema.tables"
        kinds = dict(con.execute(sql).fetchall())
    assert kinds["calls"] == kinds["call_rejects"] == "BASE TABLE"
    assert kinds["daily_kpis"] == "BASE TABLE"

    analyst = Process([sys.executable, "-c", READER, str(snapshot)])
    processes.append(analyst)
    analyst.wait_for_line("^open$", timeout_s=30)
    # The loader opens the warehouse for writing at once: nobody holds it.
    with warehouse.connect(data / "warehouse.duckdb", lock_wait_s=0) as con:
        con.execute("INSERT INTO q850_causes VALUES (999, 'test cause', 'test class')")
    # Refreshing the snapshot while the analyst still has the old one open works too.
    result = cdr_pipeline(lake, "snapshot")
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(snapshot), read_only=True) as con:
        sql = "SELECT count(*) FROM q850_causes WHERE cause_code = 999"
        assert con.execute(sql).fetchone() == (1,)
    assert analyst.popen.poll() is None  # still reading its own copy
