"""Shared fixtures: the in-process Callr simulator on a free loopback port, a Dagster instance,
a running receiver, a loaded lake."""

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline.config import Settings
from cdr_pipeline.defs import runner
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.support.receiver import SECRET, TOKEN, ThreadedReceiver, settings_for

# A distinctive key, so tests can prove it never leaks into messages, logs or files.
SIMULATOR_KEY = "sim-test-key-4f8e2b91c7"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A running simulator (default data options) that accepts SIMULATOR_KEY."""
    with SimulatorServer(api_key=SIMULATOR_KEY) as server:
        yield server


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance (SQLite storage) in a temporary DAGSTER_HOME under tmp_path."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ThreadedReceiver]:
    """The receiver app on loopback (default settings, both credentials), landing in tmp_path."""
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    with ThreadedReceiver(settings_for(tmp_path), credentials) as server:
        yield server


# Three days of the simulator's calls, loaded through the daily job: the first day's export
# carries calls of the day before (in progress at midnight), and each later day's export
# carries calls of its previous day, so the lake holds calls in two files.
LAKE_DAYS = (dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4))


@pytest.fixture(scope="session")
def loaded_lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a data directory the pipeline filled (raw, Parquet lake, warehouse)."""
    data_dir = tmp_path_factory.mktemp("loaded_lake") / "data"
    with (
        SimulatorServer(api_key=SIMULATOR_KEY) as server,
        mock.patch.dict(os.environ, {"CALLR_API_KEY": SIMULATOR_KEY}),
        dg.instance_for_test() as dagster_instance,
    ):
        settings = Settings.from_env(
            {
                "CDR_DATA_DIR": str(data_dir),
                "CDR_START_DATE": "2026-10-01",
                "CALLR_BASE_URL": server.base_url,
            }
        )
        defs = build_definitions(settings)
        outcomes = runner.run_ranges(defs, LAKE_DAYS, dagster_instance, days_per_run=1)
        assert [o.error for o in outcomes if not o.success] == []
    return settings
