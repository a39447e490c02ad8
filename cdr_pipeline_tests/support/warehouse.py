"""The warehouse as tests see it: its content's checksums, and a day staged as a load does."""

import datetime as dt
from pathlib import Path

import polars as pl

from cdr_pipeline import warehouse
from cdr_pipeline.config import Settings
from cdr_pipeline.schema import CALL_SCHEMA, REJECT_SCHEMA

CHECKSUM_SQL = """
SELECT count(*), md5(string_agg(c::VARCHAR, chr(10) ORDER BY call_id)) FROM calls c
"""


REJECTS_SQL = """
SELECT count(*), md5(string_agg(r::VARCHAR, chr(10) ORDER BY call_date, direction, source_row))
FROM call_rejects r
"""


def checksums(settings: Settings) -> tuple[tuple, tuple]:
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        return con.execute(CHECKSUM_SQL).fetchone(), con.execute(REJECTS_SQL).fetchone()


def stage(
    lake: warehouse.Lake, tmp: Path, partition: dt.date, calls: list[dict], rejects: int = 0
) -> None:
    """Write a partition's typed Parquet the way the typed_calls asset does, then publish it."""
    staging = tmp / f"staging-{partition}"
    frame = pl.DataFrame(calls, schema=CALL_SCHEMA)
    staged = []
    for (day,), part in frame.group_by("call_date"):
        path = staging / f"call_date={day}" / "0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_parquet(path)
        staged.append(path)
    reject_rows = pl.DataFrame(
        [
            {
                "call_date": partition,
                "direction": "inbound",
                "source_row": n + 1,
                "raw": "{}",
                "reason": f"bad row {n}",
                "source": "export",
            }
            for n in range(rejects)
        ],
        schema=REJECT_SCHEMA,
    )
    staging.mkdir(parents=True, exist_ok=True)
    reject_rows.write_parquet(staging / "rejects.parquet")
    warehouse.publish_partition(lake, partition, staged, staging / "rejects.parquet")
