"""The rows a real export gets wrong, spliced among the valid ones.

With `defects=True` (the default) each non-empty export also carries a few rows the contract
rejects (one each: unparsable `started`, negative `durationTotal`, a debit with five fractional
cent digits, a `callid` mangled to scientific notation), two exact duplicates of valid rows and
one stale version of a valid call placed before its final version (same `callid`, different
content: the final version, being the last occurrence, wins). An export without calls stays
a header-only file.
"""

import datetime as dt
import random
from typing import NamedTuple

import polars as pl

from cdr_pipeline.callr.simulator.calls import call_id

DEFECT_KINDS: tuple[str, ...] = ("started", "durationTotal", "billingDebit", "callid")
DUPLICATES_PER_EXPORT = 2


class Insert(NamedTuple):
    """A row to place before the valid row at index `before` (`order` breaks ties)."""

    before: int
    order: int
    row: pl.DataFrame


class Defects(NamedTuple):
    """The rows to insert, and how many of each kind."""

    inserts: list[Insert]
    defect_rows: int
    duplicate_rows: int
    conflict_rows: int


NO_DEFECTS = Defects([], 0, 0, 0)


def defect_rows(
    table: pl.DataFrame,
    start_us: int,
    end_us: int,
    window_day: dt.date,
    direction: str,
    rng: random.Random,
) -> Defects:
    """Defective rows, exact duplicates and a stale version of the window's valid `table`."""
    n = table.height
    rows: list[Insert] = []

    def at(index: int, before: int, **changes: str) -> Insert:
        row = table.slice(index, 1).with_columns(
            **{k: pl.lit(v, pl.String) for k, v in changes.items()}
        )
        return Insert(before, len(rows), row)

    for sequence, kind in enumerate(DEFECT_KINDS):
        index = rng.randrange(n)
        template = table.row(index, named=True)
        bad_id = call_id(window_day, direction, sequence, extra=True)
        changes = {"callid": str(bad_id)}
        if kind == "started":
            text = template["started"]
            changes["started"] = f"{text[:11]}25{text[13:]}"  # hour 25
        elif kind == "durationTotal":
            changes["durationTotal"] = f"-{int(template['durationTotal']) + 3}"
        elif kind == "billingDebit":
            changes["billingDebit"] = rng.choice(("12.34567", "0.00001", "318.50005"))
        else:
            changes["callid"] = f"{bad_id:.6e}"  # what a spreadsheet makes of an int64
        rows.append(at(index, rng.randrange(n + 1), **changes))

    for _ in range(DUPLICATES_PER_EXPORT):
        original = rng.randrange(n)
        rows.append(at(original, rng.randrange(original + 1, n + 1)))

    conflicts = 0
    inside = table.with_row_index("_i").filter(
        (pl.col("_started_us") >= start_us) & (pl.col("_ended_us") < end_us)
    )["_i"]
    if len(inside):
        final = int(inside[rng.randrange(len(inside))])
        stale = {f: "" for f in ("answered", "ended", "hangupCause", "hangupSource", "hangupTech")}
        stale |= {f: "0" for f in ("durationAnswered", "durationBilled", "durationTotal")}
        stale |= {"billingCredit": "0", "billingDebit": "0", "status": "ringing"}
        rows.append(at(final, rng.randrange(final + 1), **stale))
        conflicts = 1
    return Defects(rows, len(DEFECT_KINDS), DUPLICATES_PER_EXPORT, conflicts)


def splice(table: pl.DataFrame, inserts: list[Insert]) -> pl.DataFrame:
    """`table` with the inserted rows in place (slices, not a sort: a million rows stay fast)."""
    pieces, previous = [], 0
    for insert in sorted(inserts, key=lambda item: (item.before, item.order)):
        pieces += [table.slice(previous, insert.before - previous), insert.row]
        previous = insert.before
    return pl.concat([*pieces, table.slice(previous)], rechunk=False)
