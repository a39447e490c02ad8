"""A fake Callr CDR export API: deterministic synthetic CDRs over real HTTP, with fault injection.

Two halves:

- **Generation** (pure functions, no I/O, no wall clock, no global random state):
  `simulate_export` builds the exact CSV body the fake API returns for a window and a direction,
  together with its ground truth (`SimulatedExport`): which calls are valid and should reach the
  warehouse, and how many rows are defects, exact duplicates or conflicting versions.
  `generate_export` and `expected_call_ids` are shortcuts to its two most used parts.
- **Serving**: `SimulatorServer` answers `POST /v2.0/calls/export` like Callr does (key check,
  parameter validation, gzip when asked), on loopback, in a daemon thread; `inject` queues
  faults (429, 5xx, slow answers, truncated bodies, dropped connections, a rejected key) that
  are consumed one per request. `serve` runs one until interrupted, for
  `cdr-pipeline simulator --port N`.

The modules, in data-path order: `catalog` (the customer's world: outcomes, destinations,
scenarios), `draws` (seeded vectorised random draws), `calls` (the calls of a window, the
callid layout, `SimulationOptions`), `dialects` (how a file is spelled), `defects` (the rows a
real export gets wrong), `exports` (one export and its ground truth), `cache` (export bodies as
files), `faults`, `handler` (HTTP) and `server`.
"""

from cdr_pipeline.callr.client import EXPORT_PATH
from cdr_pipeline.callr.simulator.cache import cached_export
from cdr_pipeline.callr.simulator.calls import (
    CALLID_BASE,
    MAX_CALLS_PER_DAY,
    SimulationOptions,
    call_id,
)
from cdr_pipeline.callr.simulator.catalog import STATUSES
from cdr_pipeline.callr.simulator.defects import DEFECT_KINDS
from cdr_pipeline.callr.simulator.dialects import (
    BOOLEAN_STYLES,
    CANONICAL_DIALECT,
    EXTRA_COLUMNS,
    HEADER_STYLES,
    Dialect,
    dialect_for,
)
from cdr_pipeline.callr.simulator.exports import (
    SimulatedExport,
    expected_call_ids,
    generate_export,
    simulate_export,
)
from cdr_pipeline.callr.simulator.faults import Fault
from cdr_pipeline.callr.simulator.handler import ServedRequest
from cdr_pipeline.callr.simulator.server import DEFAULT_API_KEY, SimulatorServer, serve

__all__ = [
    "BOOLEAN_STYLES",
    "CALLID_BASE",
    "CANONICAL_DIALECT",
    "DEFAULT_API_KEY",
    "DEFECT_KINDS",
    "EXPORT_PATH",
    "EXTRA_COLUMNS",
    "HEADER_STYLES",
    "MAX_CALLS_PER_DAY",
    "STATUSES",
    "Dialect",
    "Fault",
    "ServedRequest",
    "SimulatedExport",
    "SimulationOptions",
    "SimulatorServer",
    "cached_export",
    "call_id",
    "dialect_for",
    "expected_call_ids",
    "generate_export",
    "serve",
    "simulate_export",
]
