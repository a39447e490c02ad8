"""Reconciliation of real-time rows with the export: calls seen in real time that no export
confirmed, and export calls that never arrived in real time (the `realtime_matches_export`
check, docs/realtime.md)."""

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdr_pipeline.db import count, scalar
from cdr_pipeline.schema import CALLS_TABLE, REALTIME_SEEN_TABLE


@dataclass(frozen=True)
class Reconciliation:
    """Real-time deliveries against the export, for call days up to `through_day`."""

    through_day: dt.date
    realtime_missing_from_export: int
    export_missing_from_realtime: int
    realtime_examples: list[tuple[int, dt.date]]
    export_examples: list[tuple[int, dt.date]]
    days_without_export: list[dt.date]
    first_realtime_day: dt.date | None

    @property
    def passed(self) -> bool:
        return not (self.realtime_missing_from_export or self.export_missing_from_realtime)


def reconcile(
    con: duckdb.DuckDBPyConnection, through_day: dt.date, *, examples: int = 10
) -> Reconciliation:
    """Calls seen in real time that no export confirmed, and export calls (from the first day
    real time was used) that never arrived in real time, for call days up to `through_day`."""
    seen, calls = REALTIME_SEEN_TABLE, CALLS_TABLE
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    if not {seen, calls} <= tables:  # nothing loaded in real time yet
        return Reconciliation(through_day, 0, 0, [], [], [], None)
    first_day = scalar(con, f"SELECT min(call_date) FROM {seen}")
    missing_sql = (
        f"FROM {seen} s WHERE s.call_date <= ? AND NOT EXISTS "
        f"(SELECT 1 FROM {calls} c WHERE c.call_id = s.call_id AND c.source = 'export')"
    )
    unseen_sql = (
        f"FROM {calls} c WHERE c.source = 'export' AND c.call_date BETWEEN ? AND ? AND NOT EXISTS "
        f"(SELECT 1 FROM {seen} s WHERE s.call_id = c.call_id)"
    )
    day = through_day.isoformat()
    missing = count(con, f"SELECT count(*) {missing_sql}", [day])
    missing_examples = con.execute(
        f"SELECT s.call_id, s.call_date {missing_sql} ORDER BY 2, 1 LIMIT ?", [day, examples]
    ).fetchall()
    unseen = unseen_examples = None
    if first_day is not None and first_day <= through_day:
        params = [first_day.isoformat(), day]
        unseen = count(con, f"SELECT count(*) {unseen_sql}", params)
        unseen_examples = con.execute(
            f"SELECT c.call_id, c.call_date {unseen_sql} ORDER BY 2, 1 LIMIT ?",
            [*params, examples],
        ).fetchall()
    days_without_export = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT s.call_date FROM {seen} s WHERE s.call_date <= ? AND NOT EXISTS "
            f"(SELECT 1 FROM {calls} c WHERE c.call_date = s.call_date AND c.source = 'export') "
            "ORDER BY 1",
            [day],
        ).fetchall()
    ]
    return Reconciliation(
        through_day=through_day,
        realtime_missing_from_export=int(missing),
        export_missing_from_realtime=int(unseen or 0),
        realtime_examples=[(int(a), b) for a, b in missing_examples],
        export_examples=[(int(a), b) for a, b in unseen_examples or []],
        days_without_export=days_without_export,
        first_realtime_day=first_day,
    )
