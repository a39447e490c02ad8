"""Keeping the mart tables equal to what their definitions compute from `calls`, day by day.

- A load that changes `calls` records the call days whose figures it may change in
  `mart_pending_days` (in its own transaction, so a change is never forgotten); see
  `merge`.
- `refresh_pending` recomputes exactly those days, in one transaction, and empties the list:
  each day's rows are deleted and computed again from that day's calls (and, for the peak
  concurrency, the calls still in progress from the days before).
- `rebuild_marts` recomputes every day: after a change of `CDR_TIMEZONE`, `CDR_NER_CAUSES` or of
  the definitions. `analytics_settings` records what the marts were computed with; a refresh under
  other settings refuses (`MartSettingsError`) rather than mix two definitions in one table.
"""

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from cdr_pipeline.config import DEFAULT_NER_CAUSES, DEFAULT_TIMEZONE
from cdr_pipeline.dayranges import consecutive_ranges
from cdr_pipeline.db import count, date_literal, first_row, transaction
from cdr_pipeline.marts.definitions import (
    DEFINITION_VERSION,
    MART_TABLES,
    SETTINGS_TABLE,
    mart_ddl,
    mart_select,
)
from cdr_pipeline.schema import CALLS_TABLE

log = logging.getLogger(__name__)

PENDING_TABLE = "mart_pending_days"
# Days computed by one query: bounds the rows a query reads when many days are pending.
MAX_DAYS_PER_QUERY = 31
MAX_CALLS_PER_QUERY = 5_000_000  # and the calls a rebuild query reads, when days are big
# When a call stops being in progress (see the definitions): its end, or its start + duration.
CALL_END = "coalesce(c.ended_at, c.started_at + to_seconds(coalesce(c.duration_total_s, 0)))"
REBUILD_HINT = (
    "run `cdr-pipeline rebuild-marts` (or the `rebuild_marts_job` in the Dagster UI) to "
    "recompute every mart with the current settings"
)


class MartSettingsError(RuntimeError):
    """The marts were computed with other settings or definitions than the pipeline's."""


@dataclass(frozen=True)
class MartSettings:
    """What the marts are computed with."""

    timezone: str = DEFAULT_TIMEZONE
    ner_causes: tuple[int, ...] = DEFAULT_NER_CAUSES
    definition_version: str = DEFINITION_VERSION

    def describe(self) -> str:
        codes = ",".join(str(c) for c in self.ner_causes)
        return (
            f"CDR_TIMEZONE={self.timezone}, CDR_NER_CAUSES={codes}, "
            f"definitions {self.definition_version}"
        )


def ensure_marts(con: duckdb.DuckDBPyConnection) -> None:
    """Create the mart tables, the settings row and the pending list, if they are missing.

    A warehouse whose marts are still the views of earlier releases gets tables instead, and
    every call day is put on the pending list (the next refresh computes them all).
    """
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} "
        "(timezone VARCHAR NOT NULL, ner_causes SMALLINT[] NOT NULL)"
    )
    con.execute(f"ALTER TABLE {SETTINGS_TABLE} ADD COLUMN IF NOT EXISTS definition_version VARCHAR")
    con.execute(
        f"ALTER TABLE {SETTINGS_TABLE} ADD COLUMN IF NOT EXISTS span_days INTEGER DEFAULT 1"
    )
    con.execute(
        f"INSERT INTO {SETTINGS_TABLE} (timezone, ner_causes, span_days) "
        f"SELECT ?, ?::SMALLINT[], 1 WHERE NOT EXISTS (SELECT 1 FROM {SETTINGS_TABLE})",
        [DEFAULT_TIMEZONE, list(DEFAULT_NER_CAUSES)],
    )
    con.execute(f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (call_date DATE PRIMARY KEY)")
    views = {
        row[0]
        for row in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND view_name IN "
            f"({', '.join(repr(m) for m in MART_TABLES)})"
        ).fetchall()
    }
    for mart in MART_TABLES:
        if mart in views:
            con.execute(f"DROP VIEW {mart}")
        con.execute(mart_ddl(mart))
    if views:
        log.warning("marts %s were views: now tables, to be computed again", sorted(views))
        con.execute(
            f"INSERT INTO {PENDING_TABLE} SELECT DISTINCT call_date FROM {CALLS_TABLE} "
            "ON CONFLICT DO NOTHING"
        )


def mart_settings(con: duckdb.DuckDBPyConnection) -> MartSettings:
    """The settings the marts were last computed with (the defaults before any refresh)."""
    row = first_row(con, f"SELECT timezone, ner_causes, definition_version FROM {SETTINGS_TABLE}")
    if row is None:
        return MartSettings()
    return MartSettings(row[0], tuple(row[1]), row[2] or "")


def span_days(con: duckdb.DuckDBPyConnection) -> int:
    """The most midnights a stored call crosses (at least 1)."""
    return max(count(con, f"SELECT max(span_days) FROM {SETTINGS_TABLE}"), 1)


def note_span(con: duckdb.DuckDBPyConnection, days: int) -> None:
    """Remember that a call crossing `days` midnights was stored."""
    con.execute(
        f"UPDATE {SETTINGS_TABLE} SET span_days = greatest(coalesce(span_days, 1), ?)", [days]
    )


def _marts_empty(con: duckdb.DuckDBPyConnection) -> bool:
    return not count(con, f"SELECT count(*) FROM (SELECT 1 FROM {MART_TABLES[0]} LIMIT 1)")


def check_settings(con: duckdb.DuckDBPyConnection, wanted: MartSettings) -> None:
    """Raise `MartSettingsError` if the marts hold figures computed with other settings.

    Empty marts take `wanted` as their settings.
    """
    stored = mart_settings(con)
    if stored == wanted:
        return
    if _marts_empty(con):
        _write_settings(con, wanted)
        return
    raise MartSettingsError(
        f"the marts were computed with {stored.describe()}, but the pipeline now runs with "
        f"{wanted.describe()}; refusing to mix the two in one table: {REBUILD_HINT}"
    )


def _write_settings(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> None:
    con.execute(
        f"UPDATE {SETTINGS_TABLE} SET timezone = ?, ner_causes = ?::SMALLINT[], "
        "definition_version = ?",
        [settings.timezone, sorted(set(settings.ner_causes)), settings.definition_version],
    )


def mark_pending(con: duckdb.DuckDBPyConnection, days_query: str, params: Sequence = ()) -> None:
    """Add the days `days_query` returns (one DATE column) to the pending list."""
    con.execute(
        f"INSERT INTO {PENDING_TABLE} SELECT DISTINCT d FROM ({days_query}) AS t(d) "
        "WHERE d IS NOT NULL ON CONFLICT DO NOTHING",
        list(params),
    )


def pending_days(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The days whose marts wait for a refresh."""
    return [
        r[0] for r in con.execute(f"SELECT call_date FROM {PENDING_TABLE} ORDER BY 1").fetchall()
    ]


def _compute(con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date, span: int) -> None:
    """Replace the marts' rows of the days `first` to `last` by what the definitions compute."""
    for mart in MART_TABLES:
        con.execute(
            f"DELETE FROM {mart} WHERE call_date BETWEEN {date_literal(first)} AND "
            f"{date_literal(last)}"
        )
        con.execute(f"INSERT INTO {mart} BY NAME {mart_select(mart, first, last, span)}")


def refresh_pending(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> list[dt.date]:
    """Recompute the pending days' marts and empty the list, in one transaction; those days.

    Raises:
        MartSettingsError: the marts hold figures computed with other settings.
    """
    with transaction(con):
        check_settings(con, settings)
        days = pending_days(con)
        span = span_days(con)
        for first, last in _by_size(_calls_per_day(con, days)):
            _compute(con, first, last, span)
        con.execute(f"DELETE FROM {PENDING_TABLE}")
    return days


def _calls_per_day(con: duckdb.DuckDBPyConnection, days: Sequence[dt.date]) -> dict[dt.date, int]:
    """How many calls each of `days` holds (0 for a day without calls)."""
    sizes = dict.fromkeys(days, 0)
    for first, last in consecutive_ranges(days, MAX_DAYS_PER_QUERY):
        sizes |= dict(
            con.execute(
                f"SELECT call_date, count(*) FROM {CALLS_TABLE} WHERE call_date BETWEEN "
                f"{date_literal(first)} AND {date_literal(last)} GROUP BY 1"
            ).fetchall()
        )
    return sizes


def rebuild_marts(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """Recompute every day of every mart with `settings`, in one transaction; days computed."""
    with transaction(con):
        for mart in MART_TABLES:
            con.execute(f"DELETE FROM {mart}")
        _write_settings(con, settings)
        con.execute(
            f"UPDATE {SETTINGS_TABLE} SET span_days = (SELECT greatest(coalesce(max(datediff("
            f"'day', c.call_date, timezone(s.timezone, {CALL_END})::DATE)), 1), 1) "
            f"FROM {CALLS_TABLE} c CROSS JOIN {SETTINGS_TABLE} s)"
        )
        sizes = dict(
            con.execute(
                f"SELECT call_date, count(*) FROM {CALLS_TABLE} GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        span = span_days(con)
        for first, last in _by_size(sizes):
            _compute(con, first, last, span)
        con.execute(f"DELETE FROM {PENDING_TABLE}")
    return len(sizes)


def _by_size(
    sizes: dict[dt.date, int], max_calls: int = MAX_CALLS_PER_QUERY
) -> list[tuple[dt.date, dt.date]]:
    """Ranges of consecutive days holding at most `max_calls` calls (a bigger day alone), and
    at most `MAX_DAYS_PER_QUERY` days: a query's memory follows the calls it reads."""
    ranges: list[tuple[dt.date, dt.date]] = []
    held = 0
    for first, last in consecutive_ranges(sizes, MAX_DAYS_PER_QUERY):
        day = first
        while day <= last:
            size = sizes.get(day, 0)
            if (
                ranges
                and ranges[-1][1] == day - dt.timedelta(days=1)
                and (day - ranges[-1][0]).days < MAX_DAYS_PER_QUERY
                and held + size <= max_calls
            ):
                ranges[-1] = (ranges[-1][0], day)
                held += size
            else:
                ranges.append((day, day))
                held = size
            day += dt.timedelta(days=1)
    return ranges


def mart_rows(con: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, int]:
    """How many rows each mart holds for `call_date = day`."""
    return {
        mart: count(con, f"SELECT count(*) FROM {mart} WHERE call_date = {date_literal(day)}")
        for mart in MART_TABLES
    }
