"""Search every file under some folders for phone numbers in clear: their bytes, and the text
of every table of every Parquet, DuckDB and SQLite file (compression and encodings hide
substrings from a byte search, so the values are read back too)."""

import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import polars as pl

_DIGIT_RUNS = re.compile(r"[0-9]{6,}")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def digits(number: str) -> str:
    """The digits of a number: `+33 6 12…`, `0033612…` and `33612…` all contain them."""
    return re.sub(r"[^0-9]", "", number).removeprefix("00")


def _texts(path: Path) -> Iterator[str]:
    """The file's bytes (as Latin-1 text), then its tables' values as text."""
    data = path.read_bytes()
    yield data.decode("latin-1")
    if data[:4] == b"PAR1":
        frame = pl.read_parquet(path, hive_partitioning=False)
        yield str(frame.cast(pl.String).rows())
    elif data.startswith(_SQLITE_MAGIC):
        yield from _sqlite_tables(path)
    elif data[8:12] == b"DUCK":
        with duckdb.connect(str(path), read_only=True) as con:
            tables = con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT temporary"
            ).fetchall()
            for schema, table in tables:
                yield str(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall())


def _sqlite_tables(path: Path) -> Iterator[str]:
    """Every table's rows; read-only (with its WAL), else as an immutable file (its WAL, plain
    pages, is searched as bytes anyway)."""
    for options in ("mode=ro", "immutable=1"):
        try:
            con = sqlite3.connect(f"file:{path}?{options}", uri=True)
            try:
                tables = con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
                rows = [str(con.execute(f'SELECT * FROM "{t}"').fetchall()) for (t,) in tables]
            finally:
                con.close()
        except sqlite3.Error:
            continue
        yield from rows
        return
    raise AssertionError(f"{path} looks like SQLite but cannot be read")


def numbers_found(roots: Iterable[Path], numbers: Iterable[str]) -> dict[str, set[str]]:
    """file -> the numbers (of `numbers`) found in it in clear; empty when none is anywhere."""
    wanted = {digits(n) for n in numbers if len(digits(n)) >= 6}
    lengths = {len(n) for n in wanted}
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            for text in _texts(path):
                for run in _DIGIT_RUNS.findall(text):
                    hits = {
                        run[i : i + n]
                        for n in lengths
                        for i in range(len(run) - n + 1)
                        if run[i : i + n] in wanted
                    }
                    if hits:
                        found.setdefault(str(path), set()).update(hits)
    return found
