"""Shared fixtures: the in-process Callr simulator, a Dagster instance, a running receiver."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.receiver_fixtures import SECRET, TOKEN, ThreadedReceiver, settings_for

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
