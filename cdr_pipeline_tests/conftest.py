"""Shared fixtures: the in-process Callr simulator on a free loopback port."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cdr_pipeline.callr.simulator import SimulatorServer

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
