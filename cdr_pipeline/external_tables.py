"""External-table DDL for engines that read the Parquet lake: Spark, Trino, Athena.

The lake is a contract (README, "Reading the lake from other engines"): `parquet/calls` and
`parquet/call_rejects` under the data directory, Hive-partitioned by `call_date`. A call in
progress at midnight is exported by both days, so it is in two files of its `call_date=` folder;
each engine gets a `*_files` table over the files as they are and a `calls` view holding each
call once, chosen as the warehouse's load chooses among export rows (`merge.RANK`): the
file of the call's own day (`part-<call_date>.parquet`) first, then the latest day's file.

Columns and types come from `cdr_pipeline.schema`, like the DuckDB DDL; the README shows this
module's output and a test keeps the two equal.
"""

import textwrap

from cdr_pipeline.schema import CALL_COLUMNS, CALLS_TABLE, REJECT_COLUMNS, REJECTS_TABLE, Column
from cdr_pipeline.warehouse.lake import CALLS_PREFIX, REJECTS_PREFIX

ENGINES = ("spark", "trino", "athena")
PARTITION_COLUMN = "call_date"

# DuckDB type -> engine type. TIMESTAMPTZ: Parquet TIMESTAMP(isAdjustedToUTC=true, MICROS), an
# instant; Spark's TIMESTAMP is one, Trino's and Athena's Hive tables read it as UTC.
_TYPES = {
    "spark": {"VARCHAR": "STRING", "INTEGER": "INT", "TIMESTAMPTZ": "TIMESTAMP"},
    "trino": {"TIMESTAMPTZ": "TIMESTAMP(6)"},
    "athena": {"VARCHAR": "STRING", "INTEGER": "INT", "TIMESTAMPTZ": "TIMESTAMP"},
}
# The day a lake file belongs to, from its name `part-<day>.parquet`.
_PATH_DAY = "CAST(regexp_extract(\"$path\", 'part-(\\d{4}-\\d{2}-\\d{2})\\.parquet$', 1) AS DATE)"
_FILE_DAY = {
    "spark": "to_date(substr(_metadata.file_name, 6, 10))",
    "trino": _PATH_DAY,
    "athena": _PATH_DAY,
}
# How each engine then discovers the `call_date=` folders.
_DISCOVER = {
    "spark": "MSCK REPAIR TABLE {table}",
    "trino": "CALL system.sync_partition_metadata('{schema}', '{name}', 'FULL')",
    "athena": "MSCK REPAIR TABLE {table}",
}


def _type(engine: str, column: Column) -> str:
    return _TYPES[engine].get(column.duckdb_type, column.duckdb_type)


def create_table(engine: str, table: str, columns: tuple[Column, ...], location: str) -> str:
    """`CREATE TABLE` over one lake folder (`location`), partitioned by `call_date`, then the
    statement that registers its partitions; statements end with `;`."""
    data = [c for c in columns if c.name != PARTITION_COLUMN]
    partition = next(c for c in columns if c.name == PARTITION_COLUMN)
    body = [f"  {c.name} {_type(engine, c)}" for c in data]
    if engine == "athena":
        head = f"CREATE EXTERNAL TABLE {table} (\n" + ",\n".join(body) + "\n)"
        tail = (
            f"PARTITIONED BY ({partition.name} {_type(engine, partition)})\n"
            f"STORED AS PARQUET\nLOCATION '{location}'"
        )
    else:  # the partition column goes last, as Trino requires
        body.append(f"  {partition.name} {_type(engine, partition)}")
        head = f"CREATE TABLE {table} (\n" + ",\n".join(body) + "\n)"
        if engine == "spark":
            tail = f"USING parquet\nPARTITIONED BY ({partition.name})\nLOCATION '{location}'"
        else:
            tail = (
                f"WITH (\n  format = 'PARQUET',\n  external_location = '{location}',\n"
                f"  partitioned_by = ARRAY['{partition.name}']\n)"
            )
    schema, _, name = table.rpartition(".")
    discover = _DISCOVER[engine].format(table=table, schema=schema, name=name)
    return f"{head}\n{tail};\n{discover};"


def calls_view(engine: str, view: str, files_table: str) -> str:
    """`CREATE VIEW` holding each call once, with the `load_partition` the warehouse keeps."""
    names = textwrap.fill(
        ", ".join([*(c.name for c in CALL_COLUMNS), "load_partition"]),
        width=96,
        initial_indent="SELECT ",
        subsequent_indent="       ",
    )
    return (
        f"CREATE VIEW {view} AS\n"
        f"{names}\n"
        f"FROM (\n"
        f"  SELECT *, row_number() OVER (\n"
        f"    PARTITION BY call_id\n"
        f"    ORDER BY CASE WHEN load_partition = call_date THEN 1 ELSE 0 END DESC,\n"
        f"             load_partition DESC) AS copy_rank\n"
        f"  FROM (SELECT *,\n"
        f"          {_FILE_DAY[engine]} AS load_partition\n"
        f"        FROM {files_table}) f\n"
        f") ranked\n"
        f"WHERE copy_rank = 1;"
    )


def lake_ddl(engine: str, lake_url: str, schema: str = "cdr") -> str:
    """Every statement an engine needs to read the lake at `lake_url` (the data directory)."""
    root = lake_url.rstrip("/")
    files = f"{schema}.{CALLS_TABLE}_files"
    return "\n\n".join(
        [
            f"CREATE SCHEMA IF NOT EXISTS {schema};",
            create_table(engine, files, CALL_COLUMNS, f"{root}/{CALLS_PREFIX}"),
            create_table(
                engine, f"{schema}.{REJECTS_TABLE}", REJECT_COLUMNS, f"{root}/{REJECTS_PREFIX}"
            ),
            calls_view(engine, f"{schema}.{CALLS_TABLE}", files),
        ]
    )
