"""Small DuckDB helpers shared by the warehouse's modules: transactions, single values, and
how much of a table a statement read."""

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, *temp_tables: str) -> Iterator[None]:
    """One DuckDB transaction: committed if the block succeeds, else rolled back; the block's
    temporary tables are dropped either way."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for table in temp_tables:
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def first_row(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()
) -> tuple | None:
    """The first row of `sql` (None when there is none). The result is read to its end: a
    connection with a partly read result refuses the next statement."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0] if rows else None


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> Any:
    """The first column of the first row of `sql` (None when there is no row)."""
    row = first_row(con, sql, params)
    return row[0] if row else None


def count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> int:
    """An integer result of `sql` (0 when it returns no row or null)."""
    value = scalar(con, sql, params)
    return int(value) if value is not None else 0


def date_literal(day: dt.date) -> str:
    """A DuckDB date literal for `day`: constants let DuckDB skip row groups by their min/max,
    which a parameter does not guarantee."""
    return f"DATE '{day.isoformat()}'"


@dataclass
class TableReads:
    """Row groups of one table that statements read, out of those the table had: the evidence
    that DuckDB skipped the rest by their min/max (zone maps)."""

    row_groups_read: int = 0
    row_groups_total: int = 0
    rows_read: int = 0

    def add(self, other: "TableReads") -> None:
        self.row_groups_read += other.row_groups_read
        self.row_groups_total = max(self.row_groups_total, other.row_groups_total)
        self.rows_read += other.rows_read


def execute_measuring(
    con: duckdb.DuckDBPyConnection, table: str, sql: str, params: Sequence[object] = ()
) -> TableReads:
    """Run `sql` (its result is discarded) with DuckDB's profiler on; what it read of `table`."""
    con.execute("SET enable_profiling = 'no_output'")
    try:
        con.execute(sql, list(params)).fetchall()
        profile = json.loads(con.get_profiling_information(format="json"))
    finally:
        con.execute("RESET enable_profiling")
    reads = TableReads()
    stack = list(profile.get("operator", []))
    while stack:
        operator = stack.pop()
        stack.extend(operator.get("children", []))
        scanned = str(operator.get("extra_info", {}).get("Table", ""))
        if scanned == table or scanned.endswith(f".{table}"):
            reads.add(
                TableReads(
                    int(operator.get("row_groups_scanned", 0)),
                    int(operator.get("total_row_groups_to_scan", 0)),
                    int(operator.get("rows_scanned", 0)),
                )
            )
    return reads
