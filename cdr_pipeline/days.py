"""A range of days through the pipeline, as the Dagster assets run it (no Dagster here).

- `land_days`: fetch each day's two exports and type them into the Parquet lake. Downloads of
  different days overlap (a few at a time), while the typing runs one day at a time as the
  downloads complete, so memory depends on one day, never on the range's length. The first day
  is fetched alone: a rejected key or a wrong URL costs one request, not one per day.
- `load_days`: load each day into DuckDB (one transaction per day), then refresh the marts of
  every day the loads changed, once for the range.

A day that fails is reported by date with its reason; the other days of the range go on.
"""

import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from cdr_pipeline import marts, merge, normalize, privacy, warehouse
from cdr_pipeline.callr.client import (
    CallrAuthError,
    CallrExportClient,
    CallrRequestError,
    ExportDownload,
)
from cdr_pipeline.config import DEFAULT_FETCH_CONCURRENCY, day_window
from cdr_pipeline.lakestore import LakeError
from cdr_pipeline.raw_erasure import remove_raw_rows
from cdr_pipeline.schema import DIRECTIONS

log = logging.getLogger(__name__)

LOAD_BATCH_ROWS = 500_000  # incoming calls per load transaction, when days are small


class RetentionError(ValueError):
    """A day older than the calls' retention was asked for (the message names the setting)."""


def refusal(day: dt.date, first_day_kept: dt.date) -> str:
    """Why `day` is not loaded."""
    return (
        f"{day} is older than CDR_CALLS_RETENTION_DAYS allows (the first day kept is "
        f"{first_day_kept}): its calls would be deleted by the next retention run, so it is "
        "not loaded; raise CDR_CALLS_RETENTION_DAYS to load it"
    )


def check_days(days: Iterable[dt.date], first_day_kept: dt.date | None) -> None:
    """Raise RetentionError if one of `days` is before the calls' horizon."""
    if first_day_kept is None:
        return
    old = sorted(d for d in days if d < first_day_kept)
    if old:
        raise RetentionError(refusal(old[0], first_day_kept) + f" ({len(old)} day(s) refused)")


@dataclass(frozen=True)
class LandedDay:
    """One day's exports on disk."""

    day: dt.date
    window: tuple[dt.datetime, dt.datetime]
    downloads: tuple[ExportDownload, ...]
    rows: dict[str, int]  # data records per direction
    fetch_s: float
    locations: dict[str, str]  # where each direction's raw file is (a path or an s3:// URL)


@dataclass(frozen=True)
class TypedDay:
    """One day typed into the lake."""

    day: dt.date
    stats: normalize.NormalizeStats
    published: tuple[str, ...]  # where the calls files are (paths or s3:// URLs)
    typed_rows: int  # read back from the published files
    rejected_rows: int  # read back from the published rejects file
    parquet_bytes: int
    normalize_s: float
    preview: pl.DataFrame

    @property
    def reconciled(self) -> bool:
        """Raw records = typed + rejected + collapsed duplicates (+ erased), each counted
        independently."""
        return self.stats.raw_rows == (
            self.typed_rows
            + self.rejected_rows
            + self.stats.duplicate_rows
            + self.stats.erased_rows
        )


@dataclass
class LandingResult:
    """What `land_days` did, day by day."""

    landed: dict[dt.date, LandedDay] = field(default_factory=dict)
    typed: dict[dt.date, TypedDay] = field(default_factory=dict)
    failures: dict[dt.date, str] = field(default_factory=dict)


def fetch_day(
    client: CallrExportClient, lake: warehouse.Lake, day: dt.date, timezone: str
) -> LandedDay:
    """Download both directions' exports of local `day` into the raw landing (on S3: both
    published once both are whole, see `LakeStore.writing`)."""
    started = time.perf_counter()
    window = day_window(day, timezone)
    keys = [lake.raw_key(day, direction) for direction in DIRECTIONS]
    with lake.store.writing(keys, lake.staging_dir) as paths:
        downloads = client.fetch_exports(dict(zip(DIRECTIONS, paths, strict=True)), *window)
        rows = {d.direction: normalize.count_csv_rows(d.path) for d in downloads}
    locations = {d: lake.store.uri(key) for d, key in zip(DIRECTIONS, keys, strict=True)}
    return LandedDay(day, window, tuple(downloads), rows, time.perf_counter() - started, locations)


def type_day(
    lake: warehouse.Lake,
    day: dt.date,
    timezone: str,
    naive_timezone: str = "UTC",
    raw_rows: int | None = None,
    rules: privacy.Privacy = privacy.CLEAR,
) -> TypedDay:
    """Type the day's raw exports into the Parquet lake (published atomically, see
    `warehouse.publish_partition`); counts read back from the published files.

    `rules` pseudonymise the numbers and drop the erased ones (`cdr_pipeline.privacy`). In
    pseudonymise mode the raw exports, which hold the numbers in clear, are deleted once typed.
    """
    raw_keys = [lake.raw_key(day, d) for d in DIRECTIONS]
    if rules.pseudonymise and not all(lake.store.exists(key) for key in raw_keys):
        raise FileNotFoundError(
            f"the raw exports of {day} are gone: in pseudonymise mode a raw export is deleted "
            "once typed, so the day must be fetched again (materialise raw_cdr_exports with "
            "typed_calls)"
        )
    staging = lake.staging_dir / f"{day.isoformat()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    started = time.perf_counter()
    try:
        with lake.store.local_files(staging) as local:
            raw = local.paths(raw_keys)
            plan = normalize.normalize_exports(
                [normalize.ExportFile(Path(p), d) for p, d in zip(raw, DIRECTIONS, strict=True)],
                partition_date=day,
                timezone=timezone,
                naive_timezone=naive_timezone,
                privacy=rules,
            )
            stats = normalize.write_normalized(
                plan,
                pl.PartitionBy(
                    staging / "calls",
                    key="call_date",
                    include_key=True,
                    approximate_bytes_per_file=None,
                ),
                staging / "rejects.parquet",
                raw_rows=raw_rows,
            )
            if stats.erased_rows and not rules.pseudonymise:
                # An erased number came back in the export: not in the raw landing either.
                rewritten = {}
                for key, path in zip(raw_keys, raw, strict=True):
                    remove_raw_rows(Path(path), rules.is_erased_number)
                    rewritten[key] = Path(path)
                if lake.store.folder is None:
                    lake.store.publish(rewritten)
        staged = sorted((staging / "calls").glob("call_date=*/*.parquet"))
        # Five rows, read lazily (reading the file, then taking its head, would load the day),
        # from the first file before it is published: the same bytes, without a download.
        # Without the personal columns, in either mode: Dagster's storage then never holds a
        # number, so an erasure need not (and could not) reach into its event log.
        preview = (
            pl.scan_parquet(staged[0]).drop(privacy.PERSONAL_COLUMNS).head(5).collect()
            if staged
            else pl.DataFrame()
        )
        published = warehouse.publish_partition(lake, day, staged, staging / "rejects.parquet")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if rules.pseudonymise:
        lake.store.publish({}, remove=raw_keys)
    elapsed = time.perf_counter() - started
    rejects = lake.rejects_key(day)
    return TypedDay(
        day=day,
        stats=stats,
        published=tuple(lake.store.uri(key) for key in published),
        typed_rows=sum(lake.store.parquet_rows(key) for key in published),
        rejected_rows=lake.store.parquet_rows(rejects),
        parquet_bytes=sum(lake.store.size(key) for key in [*published, rejects]),
        normalize_s=elapsed,
        preview=preview,
    )


def land_days(
    days: Iterable[dt.date],
    lake: warehouse.Lake,
    timezone: str,
    *,
    client: CallrExportClient | None,
    typing: bool = True,
    concurrency: int = DEFAULT_FETCH_CONCURRENCY,
    naive_timezone: str = "UTC",
    on_day: Callable[[dt.date, str | None], None] = lambda _day, _error: None,
    rules: privacy.Privacy = privacy.CLEAR,
    first_day_kept: dt.date | None = None,
) -> LandingResult:
    """Fetch (when `client` is given) and type (when `typing`) each of `days`. A day before
    `first_day_kept` (CDR_CALLS_RETENTION_DAYS) fails at once, saying why.

    Raises:
        CallrError: the first day's fetch failed: the key, the URL or the API itself is wrong,
            so no other day is tried.
    """
    result = LandingResult()
    ordered = _kept_days(set(days), first_day_kept, result, on_day)
    if not ordered:
        return result
    lake.store.check()  # an unusable lake fails the range at once, like a rejected key

    def finish(day: dt.date, landed: Future | None) -> None:
        try:
            raw_rows = None
            if landed is not None:
                result.landed[day] = landed.result()
                raw_rows = sum(result.landed[day].rows.values())  # counted once, at the fetch
            if typing:
                result.typed[day] = type_day(lake, day, timezone, naive_timezone, raw_rows, rules)
        except Exception as error:  # one day's failure is reported, not fatal
            result.failures[day] = str(error) or type(error).__name__
            log.warning("%s failed: %s", day, result.failures[day])
        on_day(day, result.failures.get(day))

    if client is None:
        for day in ordered:
            finish(day, None)
    else:
        _fetch_days(client, lake, ordered, timezone, concurrency, finish)
    return result


def _kept_days(
    days: set[dt.date],
    first_day_kept: dt.date | None,
    result: LandingResult,
    on_day: Callable[[dt.date, str | None], None],
) -> list[dt.date]:
    """`days` in order, but those before `first_day_kept`: these fail at once, saying why."""
    if first_day_kept is None:
        return sorted(days)
    for day in sorted(d for d in days if d < first_day_kept):
        result.failures[day] = refusal(day, first_day_kept)
        on_day(day, result.failures[day])
    return sorted(d for d in days if d >= first_day_kept)


def _fetch_days(
    client: CallrExportClient,
    lake: warehouse.Lake,
    ordered: list[dt.date],
    timezone: str,
    concurrency: int,
    finish: Callable[[dt.date, Future], None],
) -> None:
    """Fetch the first day alone (a wrong key, URL or lake stops there), then the others
    concurrently; `finish` each day as its fetch completes, in day order among those done."""
    with ThreadPoolExecutor(max(concurrency, 1), thread_name_prefix="callr-day") as pool:
        first = pool.submit(fetch_day, client, lake, ordered[0], timezone)
        wait([first])
        error = first.exception()
        if isinstance(error, CallrAuthError | CallrRequestError | LakeError):
            raise error  # the key, a URL, the lake: every day would fail the same way
        pending = {pool.submit(fetch_day, client, lake, d, timezone): d for d in ordered[1:]}
        finish(ordered[0], first)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                finish(pending.pop(future), future)


def load_batches(
    lake: warehouse.Lake, days: Iterable[dt.date], max_rows: int = LOAD_BATCH_ROWS
) -> list[list[dt.date]]:
    """Days in order, grouped into loads of at most `max_rows` incoming calls (a bigger day
    alone): one transaction costs a dozen statements, worth sharing between small days, while
    a big day's load stays its own (memory follows the rows a load holds, not the range)."""
    batches: list[list[dt.date]] = []
    rows = 0
    ordered = sorted(set(days))
    owned = lake.calls_keys_of(ordered)
    for day in ordered:
        size = sum(lake.store.parquet_rows(key) for key in owned[day])
        if batches and rows + size <= max_rows:
            batches[-1].append(day)
            rows += size
        else:
            batches.append([day])
            rows = size
    return batches


@dataclass
class LoadResult:
    """What `load_days` did."""

    loads: dict[dt.date, warehouse.LoadStats] = field(default_factory=dict)
    refreshed_days: list[dt.date] = field(default_factory=list)
    window: merge.Window | None = None
    duplicates: int = 0
    duplicate_examples: list[int] = field(default_factory=list)
    seconds: dict[dt.date, float] = field(default_factory=dict)


def load_days(
    con: duckdb.DuckDBPyConnection,
    lake: warehouse.Lake,
    days: Iterable[dt.date],
    *,
    settings: marts.MartSettings,
    load_calls: bool = True,
    refresh: bool = True,
    first_day_kept: dt.date | None = None,
) -> LoadResult:
    """Load each day (one transaction each, in date order), then refresh the changed marts.

    The marts' settings are checked before anything is loaded (`marts.MartSettingsError`).
    The uniqueness of `call_id` is checked over the call dates the loads read and wrote.

    Raises:
        RetentionError: a day is before `first_day_kept` (CDR_CALLS_RETENTION_DAYS).
    """
    days = sorted(set(days))
    if load_calls:
        check_days(days, first_day_kept)
    warehouse.ensure_schema(con)
    marts.check_settings(con, settings)
    result = LoadResult()
    for batch in load_batches(lake, days) if load_calls else []:
        started = time.perf_counter()
        loaded = warehouse.load_partitions(con, lake, batch, timezone=settings.timezone)
        seconds = (time.perf_counter() - started) / len(batch)
        for day, stats in loaded.items():
            result.loads[day] = stats
            result.seconds[day] = seconds
            if stats.window is not None:
                result.window = stats.window.union(result.window)
    if refresh:
        result.refreshed_days = marts.refresh_pending(con, settings)
    if result.window is not None:
        result.duplicates, result.duplicate_examples = warehouse.duplicate_call_ids(
            con, result.window
        )
    return result
