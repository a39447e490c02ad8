"""The README stays true: its table reference matches the schema, its SQL runs."""

import re
from pathlib import Path

import duckdb

from cdr_pipeline import warehouse
from cdr_pipeline.schema import CALL_COLUMNS, REJECT_COLUMNS, WAREHOUSE_COLUMNS
from cdr_pipeline_tests.support import paths

README = paths.README.read_text()


def documented_columns(heading: str) -> dict[str, str]:
    section = README.split(heading, 1)[1].split("\n### ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| ([A-Z0-9(), ]+?) \|", section, flags=re.MULTILINE))


def test_readme_documents_every_column_with_its_type() -> None:
    def declared(columns: tuple) -> dict[str, str]:
        return {c.name: c.duckdb_type + ("" if c.nullable else " NOT NULL") for c in columns}

    assert documented_columns("### `calls`") == declared(CALL_COLUMNS + WAREHOUSE_COLUMNS)
    assert documented_columns("### `call_rejects`") == declared(REJECT_COLUMNS)


def test_readme_example_queries_run(tmp_path: Path) -> None:
    block = README.split("### Example queries", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    queries = [q.strip() for q in block.split(";") if q.strip()]
    assert len(queries) == 3
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        warehouse.ensure_schema(con)
        for query in queries:
            con.execute(query).fetchall()


def test_readme_says_how_timestamps_without_an_offset_are_read() -> None:
    # Regression: "no offset means UTC" was stated only in a docstring.
    section = README.split("### Timestamps", 1)[1].split("\n## ", 1)[0]
    assert "**Without an offset**, it is read as **UTC** by default" in section
    assert "CDR_NAIVE_TIMEZONE" in section and "| `CDR_NAIVE_TIMEZONE` | `UTC` |" in README
