"""One export: its exact CSV body and its ground truth (pure, no I/O, no wall clock)."""

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from cdr_pipeline.callr.simulator.calls import (
    SimulationOptions,
    window_calls,
    window_day,
    window_us,
)
from cdr_pipeline.callr.simulator.defects import NO_DEFECTS, defect_rows, splice
from cdr_pipeline.callr.simulator.dialects import (
    Dialect,
    dialect_for,
    extra_column_values,
    write_csv,
)
from cdr_pipeline.callr.simulator.draws import seed_of
from cdr_pipeline.schema import DIRECTIONS, SOURCE_FIELDS


@dataclass(frozen=True)
class SimulatedExport:
    """One export body and its ground truth.

    Attributes:
        body: The exact CSV bytes the fake API sends (before any gzip transfer encoding).
        dialect: How the file is spelled.
        calls: The valid calls, one row each, as canonical text (SOURCE_FIELDS columns,
            booleans as true/false, empty strings for blanks), in start order.
        rows: Data rows in the file (header excluded).
        defect_rows: Rows the contract rejects for a bad value (their callids are not calls).
        duplicate_rows: Extra copies of valid rows (exact duplicates: they collapse).
        conflict_rows: Stale versions of valid calls, same callid, different content, placed
            before the final version (they go to call_rejects; the final version wins).
        call_ids: callids of `calls`: what the warehouse holds after loading this export.
        carried_over_ids: The subset of `call_ids` started before the window (overlap).
    """

    body: bytes
    dialect: Dialect
    calls: pl.DataFrame
    rows: int
    defect_rows: int
    duplicate_rows: int
    conflict_rows: int
    call_ids: frozenset[int]
    carried_over_ids: frozenset[int]

    @property
    def rejected_rows(self) -> int:
        """Rows that end in call_rejects: defects and conflicting versions."""
        return self.defect_rows + self.conflict_rows


def check_direction(direction: str) -> None:
    """ValueError unless `direction` is inbound or outbound."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be inbound or outbound, got {direction!r}")


def simulate_export(
    window_start: dt.datetime,
    window_end: dt.datetime,
    direction: str,
    *,
    calls_per_day: int | None = None,
    variety: bool = True,
    overlap: bool = True,
    defects: bool = True,
    seed: int = 0,
) -> SimulatedExport:
    """The export of `direction` calls for the half-open window [window_start, window_end).

    Args:
        window_start: Tz-aware start of the window (the API's `from`).
        window_end: Tz-aware end of the window, excluded (the API's `to`).
        direction: `inbound` or `outbound`.
        calls_per_day: See SimulationOptions.
        variety: See SimulationOptions.
        overlap: See SimulationOptions.
        defects: See SimulationOptions.
        seed: See SimulationOptions.

    Returns:
        The body and its ground truth; the same arguments always give the same bytes.

    Raises:
        ValueError: A naive or empty window, an unknown direction, a day outside 1970-2149.
    """
    options = SimulationOptions(calls_per_day, variety, overlap, defects, seed)
    start_us, end_us = window_us(window_start, window_end)
    check_direction(direction)
    day = window_day(window_start)
    calls = window_calls(start_us, end_us, direction, options)
    dialect = dialect_for(window_start, direction, variety=variety, seed=seed)
    table = calls.with_columns(extra_column_values(dialect.extra_columns))
    added = NO_DEFECTS
    if defects and calls.height:
        rng = random.Random(seed_of(seed, "defects", day.isoformat(), direction))
        added = defect_rows(table, start_us, end_us, day, direction, rng)
    full = splice(table, added.inserts)
    body = write_csv(full, dialect)
    ids = calls["callid"].cast(pl.Int64)
    carried = calls.filter(pl.col("_started_us") < start_us)["callid"].cast(pl.Int64)
    return SimulatedExport(
        body=body,
        dialect=dialect,
        calls=calls.select(SOURCE_FIELDS),
        rows=full.height,
        defect_rows=added.defect_rows,
        duplicate_rows=added.duplicate_rows,
        conflict_rows=added.conflict_rows,
        call_ids=frozenset(ids.to_list()),
        carried_over_ids=frozenset(carried.to_list()),
    )


def generate_export(
    window_start: dt.datetime, window_end: dt.datetime, direction: str, **options: Any
) -> bytes:
    """The exact CSV body of an export (see `simulate_export` for the arguments)."""
    return simulate_export(window_start, window_end, direction, **options).body


def expected_call_ids(
    window_start: dt.datetime, window_end: dt.datetime, direction: str, **options: Any
) -> set[int]:
    """callids of the valid calls of an export: those that should end up in `calls`."""
    return set(simulate_export(window_start, window_end, direction, **options).call_ids)
