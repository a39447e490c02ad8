"""Dagster resources: the Callr connection and the warehouse location."""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from cdr_pipeline import marts, privacy, warehouse
from cdr_pipeline.callr.client import CallrExportClient, RetryPolicy
from cdr_pipeline.config import (
    DEFAULT_BASE_URL,
    DEFAULT_CALLR_MAX_ATTEMPTS,
    DEFAULT_CALLR_MAX_TOTAL_S,
    DEFAULT_CALLR_TIMEOUT_S,
    DEFAULT_FETCH_CONCURRENCY,
    DEFAULT_NER_CAUSES,
    DEFAULT_TIMEZONE,
    check_timezone,
)


class CallrResource(dg.ConfigurableResource):
    """Connection to Callr's CDR export API. Wire `api_key` with `dg.EnvVar("CALLR_API_KEY")`
    so the key is read at run time and never stored in run config."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str = Field(description="Callr API key (from CALLR_API_KEY; never logged)")
    account_sid: str | None = Field(
        default=None, description="If set, authenticate with HTTP Basic (account SID, key)"
    )
    max_attempts: int = DEFAULT_CALLR_MAX_ATTEMPTS
    max_total_s: float = DEFAULT_CALLR_MAX_TOTAL_S
    timeout_s: float = DEFAULT_CALLR_TIMEOUT_S
    fetch_concurrency: int = Field(
        default=DEFAULT_FETCH_CONCURRENCY,
        description="Days of a range downloading at once (each downloads both directions)",
    )

    def __repr__(self) -> str:
        return f"CallrResource(base_url={self.base_url!r}, api_key='***')"

    __str__ = __repr__

    @contextmanager
    def client(self) -> Iterator[CallrExportClient]:
        """An export client configured from this resource, closed after use."""
        retry = RetryPolicy(max_attempts=self.max_attempts, max_total_s=self.max_total_s)
        client = CallrExportClient(
            self.base_url,
            self.api_key,
            retry=retry,
            timeout_s=self.timeout_s,
            account_sid=self.account_sid,
        )
        try:
            yield client
        finally:
            client.close()


class WarehouseResource(dg.ConfigurableResource):
    """Where the pipeline keeps raw files, Parquet and the DuckDB warehouse."""

    data_dir: str
    warehouse_path: str
    lake_url: str = Field(
        default="",
        description="CDR_LAKE_URL: a folder or s3://bucket/prefix (empty: data_dir). "
        "S3 credentials come from the AWS variables at run time, never from here",
    )
    timezone: str = DEFAULT_TIMEZONE
    naive_timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="The zone timestamps without an offset are read in (CDR_NAIVE_TIMEZONE)",
    )
    ner_causes: list[int] = Field(
        default=list(DEFAULT_NER_CAUSES),
        description="Q.850 codes that count as effective for NER (CDR_NER_CAUSES)",
    )
    lock_wait_s: float = Field(
        default=600.0,
        description="How long a load waits for another process to release the DuckDB file",
    )
    privacy_key: str = Field(
        default="",
        description="CDR_PRIVACY_KEY, wired with dg.EnvVar in pseudonymise mode (never stored); "
        "empty: numbers are kept in clear",
    )
    raw_retention_days: int | None = Field(
        default=None,
        description="CDR_RAW_RETENTION_DAYS: raw exports and landed events older are deleted",
    )
    calls_retention_days: int | None = Field(
        default=None,
        description="CDR_CALLS_RETENTION_DAYS: calls older are deleted, and not loaded",
    )

    def __repr__(self) -> str:
        return f"WarehouseResource(data_dir={self.data_dir!r}, privacy_key='***')"

    __str__ = __repr__

    def today(self) -> dt.date:
        """Today in CDR_TIMEZONE."""
        return dt.datetime.now(check_timezone(self.timezone)).date()

    def first_day_kept(self) -> dt.date | None:
        """The calls' retention horizon (None: every day is kept)."""
        days = self.calls_retention_days
        return None if days is None else self.today() - dt.timedelta(days=days)

    def privacy_rules(self) -> privacy.Privacy:
        """The pseudonymisation key (if any) and the erasure list, as of now."""
        return privacy.load_privacy(Path(self.data_dir), self.privacy_key or None)

    @property
    def layout(self) -> warehouse.Lake:
        """The lake's layout: where raw exports and typed Parquet are kept (`warehouse.Lake`)."""
        return warehouse.Lake(Path(self.data_dir), self.lake_url)

    def mart_settings(self) -> marts.MartSettings:
        """What the marts must be computed with."""
        return marts.MartSettings(self.timezone, tuple(sorted(set(self.ner_causes))))

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection to the warehouse (waits, bounded, for a held lock)."""
        with warehouse.connect(
            Path(self.warehouse_path), read_only=read_only, lock_wait_s=self.lock_wait_s
        ) as con:
            yield con
