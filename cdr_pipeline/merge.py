"""Merging incoming calls into `calls` by `call_id`, reading only the days a call can be on.

The invariant that keeps `call_id` unique at a cost proportional to the day: **a call is only
ever stored with a `call_date` within one day of the `call_date` it arrives with**. A day's
export holds the calls in progress during that day, so every copy of a call carries the same
start, give or take a correction of the start that moves it across one midnight. A merge
therefore looks for the stored copies of its incoming calls only among the rows whose
`call_date` lies between the earliest incoming `call_date` minus one day and the latest plus
one (its *window*): DuckDB skips every row group whose `call_date` range lies outside, so the
merge reads a few days of `calls`, whatever the table holds. A copy stored outside the window
would break the invariant: the full-table audit (`audit_call_ids`) reports it.

When several loads carry the same call, the stored row is chosen by a fixed rank (see `RANK`),
not by the order the loads ran in, which makes loads idempotent in any order. Every day whose
figures the merge changes (the days of the calls it removed, replaced or inserted, and the days
those calls are still in progress on) goes to the marts' pending list in the same transaction.
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdr_pipeline import marts
from cdr_pipeline.db import TableReads, count, date_literal, execute_measuring, first_row
from cdr_pipeline.schema import CALL_COLUMNS, CALLS_TABLE

CALL_NAMES = ", ".join(c.name for c in CALL_COLUMNS)
# Higher wins; compared as a row value, lexicographically: an export row beats a real-time one;
# a row loaded by its home partition (`load_partition = call_date`) beats one from another day;
# a later partition beats an earlier one.
RANK = (
    "(({t}.source = 'export')::INT, ({t}.load_partition = {t}.call_date)::INT, {t}.load_partition)"
)
WINDOW_DAYS = 1  # how far a stored copy's call_date may lie from an incoming one


@dataclass(frozen=True)
class Window:
    """The inclusive range of `call_date` a merge reads and writes."""

    first: dt.date
    last: dt.date

    def sql(self, alias: str = "c") -> str:
        """A filter on `<alias>.call_date` that DuckDB can prune row groups with."""
        return f"{alias}.call_date BETWEEN {date_literal(self.first)} AND {date_literal(self.last)}"

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def widened(self, days: int = WINDOW_DAYS) -> "Window":
        step = dt.timedelta(days=days)
        return Window(self.first - step, self.last + step)

    def union(self, other: "Window | None") -> "Window":
        if other is None:
            return self
        return Window(min(self.first, other.first), max(self.last, other.last))


@dataclass(frozen=True)
class Incoming:
    """Rows to merge: a SQL relation with every `calls` column (`load_partition` included)."""

    relation: str  # e.g. "(SELECT ... FROM read_parquet(?)) i" -- must be aliased `i`
    params: list
    rows: int
    window: Window | None  # of the incoming call dates (None when there are no rows)
    span_days: int  # the most midnights an incoming call crosses


def end_day(alias: str, timezone: str) -> str:
    """SQL: the local day on which the call `alias` stops being in progress."""
    end = marts.CALL_END.replace("c.", f"{alias}.")
    return f"timezone({_quote(timezone)}, {end})::DATE"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def describe_incoming(
    con: duckdb.DuckDBPyConnection, relation: str, params: list, timezone: str
) -> Incoming:
    """Count the incoming rows and find their call-date window and longest span (one scan)."""
    row = first_row(
        con,
        f"SELECT count(*), min(i.call_date), max(i.call_date), "
        f"max(datediff('day', i.call_date, {end_day('i', timezone)})) FROM {relation}",
        params,
    )
    rows, first, last, span = row if row else (0, None, None, None)
    window = Window(first, last) if rows else None
    return Incoming(relation, params, int(rows or 0), window, max(int(span or 0), 0))


@dataclass(frozen=True)
class Owned:
    """The stored rows a merge re-loads: the partitions' previous rows, which their new exports
    replace (a partition's re-load drops what its export no longer holds)."""

    condition: str  # SQL over stored rows `c`: the rows the partitions loaded before
    window: Window | None  # their call dates


@dataclass(frozen=True)
class MergeResult:
    """What a merge did to `calls`. It leaves two temporary tables for the caller: `orphaned`
    (owned rows no incoming row replaces) and `downgraded` (owned rows replaced by a copy that
    ranks lower: another partition's Parquet may hold a better one), both with `call_id`,
    `call_date`, `end_day` and the `owner` partition."""

    written: int  # incoming rows now stored (inserted, or replacing a stored copy)
    kept: int  # incoming rows a stored copy outranks
    removed: int  # owned rows removed without an incoming replacement
    window: Window | None
    calls_read: TableReads  # what the merge read of `calls`: a few days' row groups


def merge(
    con: duckdb.DuckDBPyConnection,
    incoming: Incoming,
    *,
    timezone: str,
    replace_when: str,
    owned: Owned | None = None,
) -> MergeResult:
    """Merge `incoming` into `calls`, inside the caller's transaction.

    Args:
        incoming: the rows, one per `call_id`, from `describe_incoming`.
        timezone: CDR_TIMEZONE, for the days a changed call is in progress on.
        replace_when: SQL over the incoming row `i` and its stored copy `c`: true when the
            incoming row replaces the stored one (else the stored one stays, the incoming is
            dropped).
        owned: the stored rows being re-loaded, if any (see `Owned`); they are always
            replaced, or removed when no incoming copy of their call is left.

    Returns:
        The counts; the changed days are on the marts' pending list.
    """
    scope = incoming.window.union(owned.window if owned else None) if incoming.window else None
    scope = scope or (owned.window if owned else None)
    if scope is None:
        _empty_leftovers(con)
        return MergeResult(0, 0, 0, None, TableReads())
    scope = scope.widened()
    where = scope.sql("c")
    ends = end_day("c", timezone)
    mine = f"({owned.condition})" if owned else "false"
    reads = execute_measuring(
        con,
        CALLS_TABLE,
        "CREATE OR REPLACE TEMP TABLE matched AS "
        f"SELECT c.rowid AS rid, c.call_id, c.call_date, {ends} AS end_day, "
        f"c.load_partition AS owner, {mine} OR ({replace_when}) AS replaced, "
        f"{mine} AND {RANK.format(t='i')} < {RANK.format(t='c')} AS downgraded "
        f"FROM {CALLS_TABLE} c JOIN {incoming.relation} ON c.call_id = i.call_id WHERE {where}",
        incoming.params,
    )
    if owned is not None:
        reads.add(
            execute_measuring(
                con,
                CALLS_TABLE,
                "CREATE OR REPLACE TEMP TABLE orphaned AS "
                f"SELECT c.rowid AS rid, c.call_id, c.call_date, {ends} AS end_day, "
                f"c.load_partition AS owner FROM {CALLS_TABLE} c "
                f"WHERE {where} AND {mine} AND NOT EXISTS "
                f"(SELECT 1 FROM {incoming.relation} WHERE i.call_id = c.call_id)",
                incoming.params,
            )
        )
    else:
        _empty_leftovers(con, matched=False)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE downgraded AS "
        "SELECT call_id, call_date, end_day, owner FROM matched WHERE downgraded"
    )
    removed = count(con, "SELECT count(*) FROM orphaned")
    # The days of every stored row about to go, before it goes.
    marts.mark_pending(
        con,
        spanned_days(
            "SELECT call_date, end_day FROM matched WHERE replaced "
            "UNION ALL SELECT call_date, end_day FROM orphaned"
        ),
    )
    reads.add(
        execute_measuring(
            con,
            CALLS_TABLE,
            f"DELETE FROM {CALLS_TABLE} c WHERE {where} AND c.rowid IN "
            "(SELECT rid FROM matched WHERE replaced UNION ALL SELECT rid FROM orphaned)",
        )
    )
    kept = count(con, "SELECT count(*) FROM matched WHERE NOT replaced")
    survivors = (
        f"{incoming.relation} WHERE NOT EXISTS "
        "(SELECT 1 FROM matched m WHERE m.call_id = i.call_id AND NOT m.replaced)"
    )
    marts.mark_pending(
        con,
        spanned_days(f"SELECT DISTINCT i.call_date, {end_day('i', timezone)} FROM {survivors}"),
        incoming.params,
    )
    written = 0
    if incoming.rows:
        written = count(
            con, f"INSERT INTO {CALLS_TABLE} BY NAME SELECT i.* FROM {survivors}", incoming.params
        )
    marts.note_span(con, incoming.span_days)
    return MergeResult(written, kept, removed, scope, reads)


def _empty_leftovers(con: duckdb.DuckDBPyConnection, *, matched: bool = True) -> None:
    columns = "(rid BIGINT, call_id BIGINT, call_date DATE, end_day DATE, owner DATE)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE orphaned {columns}")
    if matched:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE matched (rid BIGINT, call_id BIGINT, call_date DATE, "
            "end_day DATE, owner DATE, replaced BOOLEAN, downgraded BOOLEAN)"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE downgraded {columns}")


def spanned_days(rows: str) -> str:
    """SQL: every day from `call_date` to `end_day` of the (call_date, end_day) rows."""
    return (
        "SELECT (d.call_date + unnest(range(0, greatest(datediff('day', d.call_date, "
        "coalesce(d.end_day, d.call_date)), 0) + 1))::INTEGER) "
        f"FROM ({rows}) AS d(call_date, end_day)"
    )
