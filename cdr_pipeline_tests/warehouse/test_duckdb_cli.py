"""The DuckDB CLI from PyPI opens what the README tells users to open.

The CLI (`duckdb-cli`, a pinned dev dependency) lags the library the pipeline writes with: it
cannot open the warehouse file itself, and must open the snapshot, answer from every table and
view, and agree with the library on the numbers.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cdr_pipeline.config import Settings
from cdr_pipeline_tests.support import paths

README = paths.README.read_text()
CHECKS = (
    "SELECT count(*) AS n, sum(billing_debit)::VARCHAR AS debit, "
    "count(DISTINCT call_id) AS ids FROM calls"
)


def duckdb_cli() -> Path:
    """The PyPI CLI's binary, installed beside this interpreter by `uv sync`."""
    binary = Path(sys.executable).with_name("duckdb")
    if not binary.is_file():
        pytest.fail("the DuckDB CLI is not installed: `uv sync` installs the duckdb-cli dev pin")
    return binary


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(duckdb_cli()), *args], capture_output=True, text=True, timeout=60, check=False
    )


def query(path: Path, sql: str) -> list[dict]:
    """Rows of one query, through the CLI opening `path` read-only (JSON output)."""
    result = run_cli("-readonly", "-json", str(path), "-c", sql)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


def readme_cli_paths() -> set[str]:
    """Every file the README tells users to open with `duckdb -readonly`."""
    return set(re.findall(r"duckdb -readonly (data/[\w.-]+\.duckdb)", README))


@pytest.fixture(scope="module")
def data_dir(loaded_lake: Settings) -> Path:
    """The loaded data folder, with the snapshot the README has users make first."""
    result = subprocess.run(
        [sys.executable, "-m", "cdr_pipeline.cli", "snapshot"],
        env={"PATH": "/usr/bin:/bin", "CDR_DATA_DIR": str(loaded_lake.data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "duckdb -readonly" in result.stdout  # the command it suggests, tested below
    return loaded_lake.data_dir


def test_the_cli_is_older_than_the_library_and_cannot_open_the_warehouse(data_dir: Path) -> None:
    """What the README's table of formats says: the reason the snapshot has another format."""
    cli = run_cli("--version").stdout.split()[0].lstrip("v")
    library = duckdb.execute("SELECT version()").fetchone()[0].lstrip("v")
    assert tuple(map(int, cli.split("."))) < tuple(map(int, library.split(".")))
    result = run_cli("-readonly", str(data_dir / "warehouse.duckdb"), "-c", "SELECT 1")
    assert result.returncode != 0
    assert "version number" in result.stderr + result.stdout


def test_the_cli_opens_every_file_the_readme_tells_users_to_open(data_dir: Path) -> None:
    paths = readme_cli_paths()
    assert paths == {"data/warehouse-snapshot.duckdb"}
    for relative in paths:
        path = data_dir.parent / relative
        with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
            tables = con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY 1"
            ).fetchall()
            expected = {
                name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                for (name,) in tables
            }
            n, debit, ids = con.execute(CHECKS).fetchone()
        # Every table and view answers in the CLI (views are re-bound by its older binder).
        counts = query(path, " UNION ALL ".join(
            f"SELECT '{name}' AS name, count(*) AS n FROM \"{name}\"" for name in expected
        ))  # fmt: skip
        assert {row["name"]: row["n"] for row in counts} == expected
        assert expected["calls"] > 1000 and expected["daily_kpis"] > 0
        assert query(path, CHECKS) == [{"n": n, "debit": str(debit), "ids": ids}]
