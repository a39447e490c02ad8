"""Shared fixtures: the in-process Callr simulator on a free loopback port."""

from collections.abc import Iterator

import pytest

from cdr_pipeline.callr.simulator import SimulatorServer

# A distinctive key, so tests can prove it never leaks into messages, logs or files.
SIMULATOR_KEY = "sim-test-key-4f8e2b91c7"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A running simulator (default data options) that accepts SIMULATOR_KEY."""
    with SimulatorServer(api_key=SIMULATOR_KEY) as server:
        yield server
