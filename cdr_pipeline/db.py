"""Small DuckDB helpers shared by the warehouse's modules: transactions and single values."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> object:
    """The first column of the first row of `sql` (None when there is no row)."""
    row = first_row(con, sql, params)
    return row[0] if row else None


def count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> int:
    """An integer result of `sql` (0 when it returns no row or null)."""
    value = scalar(con, sql, params)
    return int(value) if value is not None else 0  # type: ignore[call-overload]


def date_literal(day: object) -> str:
    """A DuckDB date literal for `day` (a `datetime.date`): constants let DuckDB skip row groups
    by their min/max, which a parameter does not guarantee."""
    return f"DATE '{day.isoformat()}'"  # type: ignore[attr-defined]
