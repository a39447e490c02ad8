"""Running a planned normalisation: four streaming stages through scratch Parquet files, then
`calls` and the rejects written as Parquet (docs/normalization.md, "Streaming")."""

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

import polars as pl

from cdr_pipeline import privacy as privacy_rules
from cdr_pipeline.normalize.columns import (
    DUPLICATE_REASON,
    ERASED,
    FILE_DIRECTION,
    IDENTICAL,
    JSON,
    ORD,
    ORD_FILE_SHIFT,
    REJECTED,
    ROW,
)
from cdr_pipeline.normalize.dedup import DERIVED, SUPERSEDED_SCHEMA, deduplicate, repeated_ids
from cdr_pipeline.normalize.header import count_csv_rows
from cdr_pipeline.normalize.plan import NormalizedExport, normalize_exports
from cdr_pipeline.normalize.rules import typing_reason
from cdr_pipeline.normalize.scan import ExportFile
from cdr_pipeline.normalize.summary import calls_summary
from cdr_pipeline.schema import CALL_SCHEMA, REJECT_SCHEMA, SOURCE_FIELDS

# Stage one's scratch file: only what the dedup and `calls` need. The rejects re-read their
# few rows from the raw file (stage four) instead of carrying raw text for every row.
_SCRATCH_SCHEMA: dict[str, pl.DataType] = {
    **{name: dtype for name, dtype in CALL_SCHEMA.items() if name not in DERIVED},
    ROW: pl.Int64(),
    ORD: pl.Int64(),
    FILE_DIRECTION: pl.String(),
    REJECTED: pl.Boolean(),
    ERASED: pl.Boolean(),
}


class _SinkOptions(TypedDict, total=False):
    compression: Literal["zstd", "lz4"]
    compression_level: int
    statistics: bool
    row_group_size: int


# Published files: zstd level 1 is as small as polars' default level 3 on CDRs, and faster.
_PUBLISHED: _SinkOptions = {"compression": "zstd", "compression_level": 1}

# Scratch files are read once, by this process: fast compression, no column statistics, and
# small row groups, because the Parquet reader prefetches whole row groups (peak memory).
_SCRATCH: _SinkOptions = {"compression": "lz4", "statistics": False, "row_group_size": 65_536}

# Stages three and four read each scratch file once per branch instead of sharing one read:
# a shared read lets one branch race ahead while the engine buffers the rows for the other.
_NO_SHARED_SCANS = pl.QueryOptFlags(comm_subplan_elim=False)


@dataclass(frozen=True)
class NormalizeStats:
    """Counts of one normalisation, for run metadata and the reconciliation check.

    Attributes:
        raw_rows: data records in the raw files, counted separately from the typing query.
        typed_rows: rows written to `calls`.
        rejected_rows: rows written to the rejects.
        duplicate_rows: exact duplicates collapsed into the kept row of their `call_id`.
        unknown_columns: header names that are no Callr field, in order of first appearance.
        min_started_at: earliest `started_at` among typed rows (None if there is none).
        max_started_at: latest `started_at` among typed rows (None if there is none).
        erased_rows: rows dropped because a number of theirs is on the erasure list.
    """

    raw_rows: int
    typed_rows: int
    rejected_rows: int
    duplicate_rows: int
    unknown_columns: tuple[str, ...]
    min_started_at: datetime | None
    max_started_at: datetime | None
    erased_rows: int = 0

    @property
    def reconciles(self) -> bool:
        """Whether every raw record is accounted for: raw = typed + rejected + duplicates
        (+ rows of erased numbers)."""
        return self.raw_rows == (
            self.typed_rows + self.rejected_rows + self.duplicate_rows + self.erased_rows
        )


def _scan_all(paths: Sequence[Path], schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """The Parquet files in order, or an empty frame of `schema` when there are none."""
    return pl.scan_parquet(list(paths)) if paths else pl.LazyFrame(schema=schema)


def _write_typed(result: NormalizedExport, scratch_dir: Path) -> pl.LazyFrame:
    """Stage one: type each raw file once into a scratch file; the typed rows of all files."""
    typed_files = [scratch_dir / f"typed-{scan.index}.parquet" for scan in result.scans]
    for scan, path in zip(result.scans, typed_files, strict=True):
        scan.scan().select(list(_SCRATCH_SCHEMA)).sink_parquet(path, engine="streaming", **_SCRATCH)
    return _scan_all(typed_files, _SCRATCH_SCHEMA)


class _CallsWritten(NamedTuple):
    """What stage three wrote: the `calls` files, and the superseded rows compared."""

    paths: list[str]
    superseded: pl.DataFrame


def _write_calls(
    result: NormalizedExport,
    valid: pl.LazyFrame,
    calls_path: Path | pl.PartitionBy,
    scratch_dir: Path,
) -> _CallsWritten:
    """Stages two and three: the repeated ids, then `calls` and the superseded rows."""
    written: list[str] = []

    def remember(args: pl.io.partition.SinkedPathsCallbackArgs) -> None:
        written.extend(p.path for p in args.paths)

    calls, superseded = deduplicate(
        valid, repeated_ids(valid), source=result.source, privacy=result.privacy
    )
    superseded_path = scratch_dir / "superseded.parquet"
    sinks = [
        calls.sink_parquet(
            calls_path, **_PUBLISHED, mkdir=True, lazy=True, sinked_paths_callback=remember
        )
    ]
    if superseded is not None:
        sinks.append(superseded.sink_parquet(superseded_path, lazy=True, **_SCRATCH))
    pl.collect_all(sinks, engine="streaming", optimizations=_NO_SHARED_SCANS)
    if superseded is None:
        return _CallsWritten(written, pl.DataFrame(schema=SUPERSEDED_SCHEMA))
    return _CallsWritten(written, pl.read_parquet(superseded_path))


def _rejects(
    rows: pl.LazyFrame,
    reason: pl.Expr,
    *,
    partition_date: date,
    source: str,
    extra: Sequence[pl.Expr] = (),
) -> pl.LazyFrame:
    """Rows as `REJECT_SCHEMA` rejects, plus any `extra` columns after them."""
    columns = {
        "call_date": pl.lit(partition_date),
        "direction": pl.col(FILE_DIRECTION),
        "source_row": pl.col(ROW),
        "raw": pl.col(JSON),
        "reason": reason,
        "source": pl.lit(source),
    }
    return rows.select(
        *[columns[name].cast(dtype).alias(name) for name, dtype in REJECT_SCHEMA.items()], *extra
    )


def _write_rejects(
    result: NormalizedExport,
    rejected: pl.Series,
    differing: pl.DataFrame,
    rejects_path: Path,
    scratch_dir: Path,
) -> None:
    """Stage four: write the rejects, re-reading their rows from the raw files.

    Args:
        result: the plan.
        rejected: order keys of the rows stage one rejected.
        differing: order key and reason of the superseded rows that differ from their kept row.
        rejects_path: the Parquet file to write.
        scratch_dir: where to put one intermediate file per raw file with rejects.
    """
    extra = {REJECTED: pl.Boolean(), ORD: pl.Int64()}
    parts: list[Path] = []
    sinks: list[pl.LazyFrame] = []
    for scan in result.scans:
        low = scan.first_ord
        in_file = pl.col(ORD).is_between(low, low + ORD_FILE_SHIFT, closed="left")
        mine = pl.concat(
            [rejected.to_frame(ORD).filter(in_file), differing.select(ORD).filter(in_file)]
        ).get_column(ORD)
        if mine.is_empty():
            continue
        records = scan.scan(rows=mine - low).join(
            differing.lazy(), on=ORD, how="left", maintain_order="left"
        )
        reason = (
            pl.when(pl.col(REJECTED))
            .then(typing_reason(scan.naive_zone))
            .otherwise(pl.col(DUPLICATE_REASON))
        )
        part = scratch_dir / f"rejects-{scan.index}.parquet"
        rejects = _rejects(
            records,
            reason,
            partition_date=result.partition_date,
            source=result.source,
            extra=[pl.col(name) for name in extra],
        )
        sinks.append(rejects.sink_parquet(part, lazy=True, **_SCRATCH))
        parts.append(part)
    if sinks:
        pl.collect_all(sinks, engine="streaming")
    rows = _scan_all(parts, {**REJECT_SCHEMA, **extra})
    # Typing rejects first, then differing duplicates, each in (file, source row) order. Only
    # the duplicates need sorting: the joins of stage three do not keep row order.
    rejects = pl.concat(
        [rows.filter(pl.col(REJECTED)), rows.filter(~pl.col(REJECTED)).sort(ORD)]
    ).select(list(REJECT_SCHEMA))
    rejects.sink_parquet(
        rejects_path, **_PUBLISHED, engine="streaming", optimizations=_NO_SHARED_SCANS
    )


def write_normalized(
    result: NormalizedExport,
    calls_path: Path | pl.PartitionBy,
    rejects_path: Path,
    *,
    raw_rows: int | None = None,
) -> NormalizeStats:
    """Run the normalisation with the streaming engine and write zstd Parquet files.

    Four streaming stages (typing, repeated ids, dedup, rejects; docs/normalization.md,
    "Streaming") run one after the other, through a scratch directory next to `rejects_path`
    that is removed afterwards. The typed and rejected counts and the `started_at` range are
    read back from the written files, and `raw_rows` is counted from the raw files, so
    `NormalizeStats.reconciles` compares independent numbers.

    Args:
        result: the plan from `normalize_exports`.
        calls_path: where to write `calls`: a Parquet file, or a `pl.PartitionBy` (e.g. Hive
            style by `call_date`). The caller handles temp names and atomic renames.
        rejects_path: the Parquet file for the rejects.
        raw_rows: the data records of the raw files, if the caller counted them already (with
            `count_csv_rows`, as the fetch does); else they are counted here.

    Returns:
        The stats of the run.
    """
    # Counted first: polars memory-maps a file to count its records, and the mapped pages show
    # in the process's RSS on top of whatever the stages below still hold.
    if raw_rows is None:
        raw_rows = sum(count_csv_rows(f.path) for f in result.files)
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rejects_path.parent, prefix=".normalize-") as scratch:
        scratch_dir = Path(scratch)
        typed = _write_typed(result, scratch_dir)
        erased_rows = 0
        if result.privacy.erased:
            erased_rows = typed.filter(pl.col(ERASED)).select(pl.len()).collect().item()
            typed = typed.filter(~pl.col(ERASED))
        written = _write_calls(result, typed.filter(~pl.col(REJECTED)), calls_path, scratch_dir)
        rejected = (
            typed.filter(pl.col(REJECTED)).select(ORD).collect(engine="streaming").to_series()
        )
        differing = written.superseded.filter(~pl.col(IDENTICAL)).drop(IDENTICAL)
        _write_rejects(result, rejected, differing, rejects_path, scratch_dir)
    summary = calls_summary(written.paths)
    return NormalizeStats(
        raw_rows=raw_rows,
        typed_rows=summary.rows,
        rejected_rows=pl.scan_parquet(rejects_path).select(pl.len()).collect().item(),
        duplicate_rows=int(written.superseded.get_column(IDENTICAL).sum()),
        unknown_columns=result.unknown_columns,
        min_started_at=summary.min_started_at,
        max_started_at=summary.max_started_at,
        erased_rows=erased_rows,
    )


class NormalizedFrames(NamedTuple):
    """A normalisation read back into memory."""

    calls: pl.DataFrame
    rejects: pl.DataFrame
    stats: NormalizeStats


def normalize_frames(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
    naive_timezone: str | None = None,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> NormalizedFrames:
    """`write_normalized` into a temporary directory, read back: for tests and small inputs.

    There is one implementation of the rules: this runs the same streaming stages and returns
    exactly the rows `write_normalized` writes (arguments as for `normalize_exports`).
    """
    result = normalize_exports(
        files,
        partition_date=partition_date,
        timezone=timezone,
        source=source,
        required_fields=required_fields,
        naive_timezone=naive_timezone,
        privacy=privacy,
    )
    with tempfile.TemporaryDirectory(prefix="cdr-normalize-") as scratch:
        calls_path = Path(scratch) / "calls.parquet"
        rejects_path = Path(scratch) / "rejects.parquet"
        stats = write_normalized(result, calls_path, rejects_path)
        return NormalizedFrames(pl.read_parquet(calls_path), pl.read_parquet(rejects_path), stats)
