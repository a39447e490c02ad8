"""Reading one export file as typed rows: the whole file, or only some records of it, by
slices of the file or one filtered pass (docs/normalization.md, "Streaming")."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from cdr_pipeline import privacy as privacy_rules
from cdr_pipeline.normalize.columns import (
    EMPTY_ROW,
    ERASED,
    EXTRA,
    FILE_DIRECTION,
    JSON,
    ORD,
    ORD_FILE_SHIFT,
    RAW,
    REJECTED,
    ROW,
)
from cdr_pipeline.normalize.rules import FLAGS, typed
from cdr_pipeline.schema import SOURCE_FIELDS

# Beyond this many runs of consecutive rows to re-read, one filtered parse of the file is
# cheaper than reading each run as a slice (docs/normalization.md, "Streaming").
_MAX_ROW_RUNS = 8


@dataclass(frozen=True)
class ExportFile:
    """One raw export file and the direction it was requested for."""

    path: Path
    direction: str


class RowRun(NamedTuple):
    """Consecutive 1-based source rows: the first one and how many."""

    first: int
    length: int


def row_runs(rows: pl.Series) -> list[RowRun] | None:
    """1-based source rows as runs of consecutive rows, in order.

    None when there are more than `_MAX_ROW_RUNS` runs: reading that many slices costs more
    than one filtered pass over the file.
    """
    ordered = rows.cast(pl.Int64).unique().sort()
    starts = (ordered.diff() != 1).fill_null(True)
    if starts.sum() > _MAX_ROW_RUNS:
        return None
    runs = (
        pl.DataFrame({"row": ordered, "run": starts.cum_sum()})
        .group_by("run", maintain_order=True)
        .agg(pl.col("row").first().alias("first"), pl.len().alias("length"))
    )
    return [
        RowRun(first, length)
        for first, length in zip(runs["first"].to_list(), runs["length"].to_list(), strict=True)
    ]


def _json_keys(header: Sequence[str]) -> list[str]:
    """The raw JSON's keys: the header names, a repeated one with polars' `_duplicated_<n>`."""
    seen: dict[str, int] = {}
    keys = []
    for name in header:
        n = seen.get(name, 0)
        keys.append(name if n == 0 else f"{name}_duplicated_{n - 1}")
        seen[name] = n + 1
    return keys


@dataclass(frozen=True)
class FileScan:
    """How to read and type one non-blank export file.

    Attributes:
        index: the file's position among the partition's files (the high part of `ORD`).
        export: the file and the direction it was requested for.
        header: its header record, as written.
        mapping: header name -> Callr field, for the names that are Callr fields.
        timezone: IANA time zone of `call_date`.
        naive_zone: IANA time zone of timestamps without an offset.
        privacy: the pseudonymisation key (rejects' raw JSON) and the erasure list.
    """

    index: int
    export: ExportFile
    header: tuple[str, ...]
    mapping: dict[str, str]
    timezone: str
    naive_zone: str = "UTC"
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR

    @property
    def first_ord(self) -> int:
        """The order key of the file's row 0: its rows' keys follow."""
        return self.index * ORD_FILE_SHIFT

    def _records(self, csv: pl.LazyFrame, rows: pl.Series | None) -> pl.LazyFrame:
        """The file's records (or only `rows`), numbered from 1 in `ROW`."""
        if rows is None:
            records = csv.with_row_index(ROW, offset=1)
        elif (runs := row_runs(rows)) is not None:
            records = pl.concat(
                [
                    csv.slice(run.first - 1, run.length).with_row_index(ROW, offset=run.first)
                    for run in runs
                ]
            )
        else:
            records = csv.with_row_index(ROW, offset=1).filter(
                pl.col(ROW).is_in(rows.cast(pl.Int64).implode())
            )
        return records.with_columns(pl.col(ROW).cast(pl.Int64))

    def scan(self, rows: pl.Series | None = None) -> pl.LazyFrame:
        """The file's data records typed and flagged, with their raw text and raw JSON.

        Args:
            rows: only these 1-based source rows (the rejects stage re-reads its rows).
        """
        internal = [
            RAW + self.mapping[name] if name in self.mapping else f"{EXTRA}{position}"
            for position, name in enumerate(self.header)
        ]
        absent = [f for f in SOURCE_FIELDS if f not in self.mapping.values()]
        shown = [
            privacy_rules.raw_field(
                pl.col(c), c.removeprefix(RAW) if c.startswith(RAW) else None, self.privacy
            )
            for c in internal
        ]
        raw_json = pl.struct(
            [c.alias(key) for c, key in zip(shown, _json_keys(self.header), strict=True)]
        ).struct.json_encode()
        csv = pl.scan_csv(
            self.export.path,
            has_header=True,
            new_columns=internal,
            infer_schema=False,
            empty_string_is_null=False,
            encoding="utf8-lossy",
            quote_char='"',
            separator=",",
        )
        records = self._records(csv, rows)
        return typed(
            records.with_columns(pl.lit(None, pl.String).alias(RAW + f) for f in absent),
            self.timezone,
            self.naive_zone,
        ).with_columns(
            (pl.col(ROW) + self.first_ord).alias(ORD),
            pl.lit(self.export.direction, pl.String).alias(FILE_DIRECTION),
            raw_json.alias(JSON),
            pl.all_horizontal([pl.col(c).fill_null("") == "" for c in internal]).alias(EMPTY_ROW),
            # An empty row fails the `callid missing` rule, so no separate test is needed here.
            pl.any_horizontal(FLAGS).alias(REJECTED),
            self.privacy.is_erased(
                pl.col(RAW + f) for f in privacy_rules.NUMBER_FIELDS.values()
            ).alias(ERASED),
        )
