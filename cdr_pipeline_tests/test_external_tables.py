"""The Parquet lake as other engines read it: the README's DDL, run by Apache Spark.

Spark (pyspark in local mode, its bundled jars only, Debian's Java) runs the README's Spark
statements over a lake the pipeline filled, and must see exactly what DuckDB holds: every
column of every call and reject, money as exact decimals, timestamps as the same instants, the
copy of each call the warehouse kept, and `call_date` as the partition column.
"""

import re
import shutil
from collections.abc import Iterator
from decimal import Decimal

import duckdb
import pytest

from cdr_pipeline.config import Settings
from cdr_pipeline.external_tables import ENGINES, lake_ddl
from cdr_pipeline.schema import CALL_COLUMNS, REJECT_COLUMNS, WAREHOUSE_COLUMNS, Column
from cdr_pipeline_tests.support import paths

README = paths.README.read_text()
# Where the README's examples point; the test points Spark's at its own lake.
README_LAKE_URLS = {
    "spark": "/srv/cdr/data",
    "trino": "s3://your-bucket/cdr",
    "athena": "s3://your-bucket/cdr",
}


def readme_ddl(engine: str) -> str:
    """The README's SQL block that follows the `<!-- ddl:ENGINE -->` marker."""
    match = re.search(rf"<!-- ddl:{engine} -->\s*```sql\n(.*?)```", README, flags=re.DOTALL)
    assert match, f"README has no DDL block for {engine}"
    return match[1].strip()


@pytest.mark.parametrize("engine", ENGINES)
def test_readme_ddl_is_the_generated_ddl(engine: str) -> None:
    assert readme_ddl(engine) == lake_ddl(engine, README_LAKE_URLS[engine])


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A local Spark session (2 threads, UTC, loopback only, no UI)."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: .ci/run installs Debian's openjdk-17-jre-headless")
    from pyspark.sql import SparkSession

    warehouse_dir = tmp_path_factory.mktemp("spark_warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("cdr_pipeline_tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(warehouse_dir))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def comparable(columns: tuple[Column, ...], micros: str) -> str:
    """A select list of every column, timestamps as microseconds since the epoch (`micros`)."""
    return ", ".join(
        micros.format(c.name) if c.duckdb_type == "TIMESTAMPTZ" else c.name for c in columns
    )


@pytest.mark.slow
def test_spark_reads_the_lake_exactly_as_duckdb_holds_it(
    spark: object, loaded_lake: Settings
) -> None:
    statements = readme_ddl("spark").replace(README_LAKE_URLS["spark"], str(loaded_lake.data_dir))
    for statement in statements.split(";"):
        if statement.strip():
            spark.sql(statement)

    calls = CALL_COLUMNS + WAREHOUSE_COLUMNS
    with duckdb.connect(str(loaded_lake.warehouse), read_only=True) as con:
        duck_calls = con.execute(f"SELECT {comparable(calls, 'epoch_us({})')} FROM calls")
        duck_calls = duck_calls.fetchall()
        duck_rejects = con.execute(f"SELECT {comparable(REJECT_COLUMNS, '{}')} FROM call_rejects")
        duck_rejects = duck_rejects.fetchall()
        (duck_debit,) = con.execute("SELECT sum(billing_debit) FROM calls").fetchone()
        call_days = {r[0] for r in con.execute("SELECT DISTINCT call_date FROM calls").fetchall()}
        reject_days = con.execute("SELECT DISTINCT call_date FROM call_rejects").fetchall()

    spark_calls = spark.sql(f"SELECT {comparable(calls, 'unix_micros({})')} FROM cdr.calls")
    spark_calls = [tuple(row) for row in spark_calls.collect()]
    spark_rejects = spark.sql(f"SELECT {comparable(REJECT_COLUMNS, '{}')} FROM cdr.call_rejects")
    spark_rejects = [tuple(row) for row in spark_rejects.collect()]
    ((spark_debit,),) = spark.sql("SELECT sum(billing_debit) FROM cdr.calls").collect()

    # The same rows: counts, every column, the kept copy of each call (`load_partition`).
    assert len(spark_calls) == len(duck_calls) > 1000
    assert len({row[0] for row in spark_calls}) == len(spark_calls)
    assert set(spark_calls) == set(duck_calls)
    assert sorted(spark_rejects) == sorted(duck_rejects) and len(duck_rejects) > 0
    # The lake does hold calls twice (in progress at midnight): the view is what dedupes them.
    (files_rows,) = spark.sql("SELECT count(*) FROM cdr.calls_files").collect()[0]
    assert files_rows > len(spark_calls)
    # Money: exact decimals, the same sum to the last digit.
    assert isinstance(spark_debit, Decimal) and isinstance(duck_debit, Decimal)
    assert spark_debit == duck_debit
    # `call_date` is the partition column, one partition per day folder.
    for table, days in (("calls_files", call_days), ("call_rejects", {r[0] for r in reject_days})):
        columns = spark.catalog.listColumns(f"cdr.{table}")
        assert [c.name for c in columns if c.isPartition] == ["call_date"]
        partitions = spark.sql(f"SHOW PARTITIONS cdr.{table}").collect()
        assert {row[0] for row in partitions} == {f"call_date={day}" for day in days}
