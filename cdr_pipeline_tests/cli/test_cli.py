"""The `cdr-pipeline` commands as a user runs them: real processes, real files."""

import datetime as dt
from pathlib import Path

import duckdb

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline_tests.conftest import SIMULATOR_KEY
from cdr_pipeline_tests.support.cli import cdr_pipeline


def test_demo_loads_days_and_prints_kpis_and_report(tmp_path: Path) -> None:
    result = cdr_pipeline("demo", "--days", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[2/2]" in result.stdout  # both days in one run
    assert "Daily KPIs" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    report = result.stdout.split("Daily report:", 1)[1].split()[0]
    assert (tmp_path / report).is_file()
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        days = con.execute("SELECT count(DISTINCT load_partition) FROM calls").fetchone()[0]
    assert days == 2
    assert (tmp_path / "data" / "dagster_home").is_dir()


def test_backfill_names_failed_days_and_exits_non_zero(tmp_path: Path) -> None:
    with SimulatorServer(api_key=SIMULATOR_KEY) as simulator:
        env = {
            "CALLR_BASE_URL": simulator.base_url,
            "CALLR_API_KEY": "not-the-key-7d1c",
            "CDR_START_DATE": "2026-11-01",
        }
        result = cdr_pipeline(
            "backfill", "--start", "2026-11-02", "--end", "2026-11-03", cwd=tmp_path, **env
        )
    assert result.returncode == 1
    assert "[0/2] 2026-11-02..2026-11-03  FAILED" in result.stdout
    assert "2 of 2 days failed: 2026-11-02, 2026-11-03" in result.stderr
    assert "CALLR_API_KEY was rejected by the Callr API (HTTP 401)" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "not-the-key-7d1c" not in result.stdout + result.stderr


def test_backfill_then_sql(tmp_path: Path) -> None:
    with SimulatorServer(api_key=SIMULATOR_KEY) as simulator:
        env = {
            "CALLR_BASE_URL": simulator.base_url,
            "CALLR_API_KEY": SIMULATOR_KEY,
            "CDR_START_DATE": "2026-11-01",
        }
        result = cdr_pipeline(
            "backfill", "--start", "2026-11-02", "--end", "2026-11-02", cwd=tmp_path, **env
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/1] 2026-11-02  ok" in result.stdout
    query = cdr_pipeline(
        "sql", "SELECT count(*) AS n, count(DISTINCT call_id) AS ids FROM calls", cwd=tmp_path
    )
    assert query.returncode == 0, query.stderr
    numbers = [int(tok) for tok in query.stdout.split() if tok.isdigit()]
    assert numbers[0] == numbers[1] > 0
    bad = cdr_pipeline("sql", "SELECT nope FROM calls", cwd=tmp_path)
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    # Read-only: the sql command cannot change the warehouse.
    write = cdr_pipeline("sql", "DELETE FROM calls", cwd=tmp_path)
    assert write.returncode == 1 and "read-only" in write.stderr.lower()


def test_configuration_errors_are_one_clear_line(tmp_path: Path) -> None:
    no_key = cdr_pipeline("backfill", "--start", "2026-11-02", "--end", "2026-11-02", cwd=tmp_path)
    assert no_key.returncode == 2
    assert "CALLR_API_KEY is not set" in no_key.stderr
    bad_tz = cdr_pipeline("sql", "SELECT 1", cwd=tmp_path, CDR_TIMEZONE="Mars/Olympus")
    assert bad_tz.returncode == 2 and "CDR_TIMEZONE" in bad_tz.stderr
    for result in (no_key, bad_tz):
        assert "Traceback" not in result.stderr


def test_backfill_in_ranges_loads_every_day_but_the_one_that_fails(tmp_path: Path) -> None:
    """One run per range of days; a day the API keeps failing costs that day only: the range's
    other days are loaded by runs of their own, and the failure is named."""
    days = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    with SimulatorServer(api_key=SIMULATOR_KEY) as simulator:
        simulator.fail_days(dt.date(2026, 11, 4), status=503)
        env = {
            "CALLR_BASE_URL": simulator.base_url,
            "CALLR_API_KEY": SIMULATOR_KEY,
            "CDR_START_DATE": "2026-11-01",
            "CDR_DAYS_PER_RUN": "3",
        }
        result = cdr_pipeline(
            "backfill", "--start", days[0], "--end", days[-1], cwd=tmp_path, **env
        )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # 2..4 fails on the 4th; 2..3 runs again alone; 5..6 is the second range.
    assert any("2026-11-02..2026-11-04  FAILED  2/3 days" in line for line in lines), lines
    assert any("2026-11-02..2026-11-03  ok" in line for line in lines), lines
    assert any("2026-11-05..2026-11-06  ok" in line for line in lines), lines
    assert "1 of 5 days failed: 2026-11-04" in result.stderr
    assert "503" in result.stderr and "Traceback" not in result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        loaded = {
            r[0].isoformat()
            for r in con.execute("SELECT DISTINCT load_partition FROM calls").fetchall()
        }
        kpi_days = {
            r[0].isoformat()
            for r in con.execute("SELECT DISTINCT call_date FROM daily_kpis").fetchall()
        }
    assert loaded == set(days) - {"2026-11-04"}
    assert set(days) - {"2026-11-04"} <= kpi_days
