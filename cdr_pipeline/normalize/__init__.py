"""Raw Callr CSV exports -> typed `calls` rows and `call_rejects` rows, with polars.

The normaliser is made of polars *lazy* queries that the streaming engine runs:
`scan_csv` -> typed/validated columns -> dedup -> `sink_parquet`. No Python code runs per row
(no `map_elements`, no loops over rows), and memory stays bounded on 5M-row days (see
"Streaming" below). `normalize_exports` plans, `write_normalized` runs and writes Parquet,
`normalize_frames` runs `write_normalized` and reads its files back (tests, small inputs).

Reading (contract section 1):

- every column is read as text (`infer_schema=False`), so phone numbers, SIDs and int64 ids
  survive exactly; UTF-8 with or without BOM; CRLF or LF; RFC 4180 quoting;
- invalid UTF-8 bytes are replaced by U+FFFD (the raw file keeps the original bytes);
- a 0-byte file, or one holding only a BOM/whitespace, and a header-only file are valid days
  without calls;
- header names match the Callr fields by lower-casing and dropping `_`, `-` and whitespace, so
  `callerNumber`, `caller_number` and `CALLER-NUMBER` are the same field; two columns that map
  to the same field raise `DuplicateColumnsError`; unknown columns are reported, never typed;
- a missing required field raises `MissingColumnsError` naming it and the file. Exports must
  carry all 24 fields; callers with partial payloads pass `required_fields=ROW_KEY_FIELDS`
  and the other fields become null;
- a record with fewer fields than the header has empty trailing fields; a record with more
  fields than the header, or an unterminated quote, is not valid CSV and makes the run fail
  with polars' error (it cannot be attributed to one row safely).

Typing (contract section 4). Empty string is null everywhere. Text fields are kept verbatim;
typed fields (ids, numbers, timestamps, booleans, enums) are stripped of surrounding whitespace
first. A row is rejected when any rule below fails; its reason names every failing field with
its value, `; `-joined (values longer than 60 characters are shortened with `…`):

- `callid`: optional sign and digits only, within int64 (`12.0`, `1e5`, `abc`, overflow are
  rejected); missing -> rejected.
- `started`, `answered`, `ended`: `YYYY-MM-DD(T| )hh:mm:ss[.fraction][offset]`, read as
  `cdr_pipeline.timestamps` says: offset `Z`, `+hh:mm`, `+hhmm` or `+hh`; no offset means the
  naive zone (`CDR_NAIVE_TIMEZONE`, default UTC); fractions beyond microseconds truncated; second
  60 only at 23:59:60 UTC (a leap second, stored as 23:59:59.999999); years 0001-9999 in UTC, and
  for `started` in the partition zone too. `started` missing -> rejected; `answered`/`ended`
  empty -> null; any present timestamp that breaks a rule -> rejected, the reason says which.
- durations: digits only (optional `+`), 0..2^31-1; negative, non-integer (`1.5`, `12.0`) or
  overflowing -> rejected; empty -> null.
- money (`billingDebit`, `billingCredit`, in cents): a plain decimal number (optional sign, no
  exponent, no thousands separator) with at most 4 fractional digits; converted to currency
  units = cents / 100 by exact decimal arithmetic (the text parsed as a scaled integer, times
  the decimal 0.01; never through a float) into DECIMAL(18,6): `12.75` -> 0.127500,
  `0.0001` -> 0.000001. More than 4 fractional digits, not a number, or beyond DECIMAL(18,6)
  -> rejected; empty -> null.
- `callerRestricted`: true/false/1/0/yes/no in any case; any other value is rejected (the
  contract lists no other spelling, and guessing would silently mislabel CLIR calls).
- `direction`: lower-cased; not inbound/outbound (or missing) -> rejected. The row's own
  direction is kept even when it differs from the direction the file was requested for.
- `status`, `billingPaymentType`, `hangupSource`: lower-cased; unknown values are kept.
- `hangupCause`: an integer within SMALLINT (-32768..32767); unknown codes are kept and named
  from `q850` (class `unknown` outside 0..127); not an integer or outside SMALLINT -> rejected,
  because the warehouse column cannot hold it.
- a record whose every field is empty (e.g. a blank line) is rejected as `empty row`.
- `call_date` is the date of `started_at` in the partition time zone; it may differ from the
  partition date (the loader decides what to do with such rows).

Rejects carry `call_date` = the partition date, `direction` = the direction the file was
requested for, `source_row` = the 1-based data record number in that file (quoted newlines do
not start a record), `raw` = a JSON object of original header -> original text (a repeated
header name gets polars' `_duplicated_<n>` suffix), `source` = the `source` argument. They
come typing rejects first, then differing duplicates, each in (file, source row) order.

Duplicates, among *valid* rows only, across all files of the partition (both directions); the
order of occurrence is (file order, source row):

- for each `call_id` the last occurrence is kept in `calls`;
- every other row with that `call_id` that is identical to the kept row after typing (same value
  in every `calls` column) is an exact duplicate: collapsed, counted in `duplicate_rows`;
- every other row that differs goes to rejects: `duplicate callid <id>: differs from source row
  <n> (<direction>), which is kept`, naming the kept row's source row and its file's direction.

Invalid rows are never deduplicated: the same broken row twice gives two rejects.

So every data record ends in exactly one of `calls`, rejects or the duplicate count, and
`raw_rows = typed_rows + rejected_rows + duplicate_rows` (`NormalizeStats.reconciles`), where
`raw_rows` is `count_csv_rows`: polars' quote-aware record count of each raw file, a separate
query that shares nothing with the typing, reject and dedup logic.

Streaming (polars 2.1, measured on a 2-core machine with 24-field rows, ~250 bytes each):

- no window function: the dedup is a `group_by(call_id)` (last order key, count) that keeps
  the repeated ids, then membership filters on those ids and their kept order keys, and joins
  restricted to the repeated ids; all run natively in the streaming engine
  (`show_graph(engine="streaming")` shows no in-memory fallback). `replace_strict` did fall
  back to the in-memory engine, so Q.850 names are a join, made once per kept row.
- one query for everything is *not* bounded: a plan that groups and joins the same rows, or
  that sinks one scan to two outputs, makes the engine buffer the rows for the slower branch
  (2.4 GB at 1M rows; 7.8 GB at 5M). So `write_normalized` runs four streaming stages through
  scratch Parquet files, each with one consumer per scan.
- no raw text in the typed stage: JSON-encoding every row's raw text, for the few rows that
  become rejects, was ~40 % of the typing. Stage four re-reads the rejected and differing
  duplicate rows from the raw file by source row instead, and types them again with the same
  expressions, so flags and reasons cannot drift. It reads slices of the file (polars finds a
  record by a quote-aware scan, ~50 ms for 600 MB) while the rows form at most
  `_MAX_ROW_RUNS` runs, and one filtered parse of the file beyond that.
- result: 5M rows (1.2 GB of CSV) in ~8 s on a quiet 2-core machine, peak anonymous memory
  ~0.5-0.8 GB (polars' in-flight batches and Parquet prefetch, plus the dedup state of ~30
  bytes per `call_id`); docs/performance.md has the whole pipeline's figures. Repeated ids cost
  their kept row in memory: a day where every one of 5M rows is an exact duplicate pair peaked
  at ~3 GB (measured before the re-read change).
"""

import csv
import functools
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from cdr_pipeline import privacy as privacy_rules
from cdr_pipeline import timestamps
from cdr_pipeline.config import check_timezone, naive_timezone
from cdr_pipeline.q850 import with_cause_columns
from cdr_pipeline.schema import (
    CALL_COLUMNS,
    CALL_SCHEMA,
    DIRECTIONS,
    MONEY_PRECISION,
    MONEY_SCALE,
    REJECT_SCHEMA,
    ROW_KEY_FIELDS,
    SOURCE_FIELDS,
)

# Internal column names; the prefixes keep raw text apart from typed columns of the same name
# (`direction`, `status` and `callee` are both a Callr field and a `calls` column).
_RAW = "__raw__"
_EXTRA = "__extra__"
_ROW = "__source_row"
_ORD = "__ord"
_FILE_DIRECTION = "__file_direction"
_JSON = "__raw_json"
_REJECTED = "__rejected"
_ERASED = "__erased"  # a number of the row is on the erasure list
_EMPTY_ROW = "__empty_row"
_KEPT = "__kept"
_COUNT = "__count"
_IDENTICAL = "__identical"
_DUPLICATE_REASON = "__duplicate_reason"

_LOWER_CASED: frozenset[str] = frozenset(
    {"direction", "status", "billing_payment_type", "hangup_source"}
)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_INT_RE = r"^[+-]?[0-9]+$"
_MONEY_NUMBER_RE = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_MAX_CENT_DECIMALS = 4
_TOO_PRECISE_RE = rf"\.[0-9]{{{_MAX_CENT_DECIMALS + 1},}}$"
_ORD_FILE_SHIFT = 1 << 40  # order key = file index * 2^40 + source row
_SHOWN_VALUE_CHARS = 60
# Stage four re-reads its few rows by slices of the raw file: polars finds a record by a fast
# quote-aware scan (~50 ms for a 600 MB file, against ~0.7 s to parse it all); beyond this many
# runs of consecutive rows, one filtered parse of the file is cheaper.
_MAX_ROW_RUNS = 8
_INT_RANGES: dict[type[pl.DataType], tuple[int, int, str]] = {
    pl.Int16: (-(2**15), 2**15 - 1, "SMALLINT"),
    pl.Int32: (-(2**31), 2**31 - 1, "INTEGER"),
}


class ExportHeaderError(ValueError):
    """The header of an export file cannot be mapped onto the Callr CDR fields."""


class MissingColumnsError(ExportHeaderError):
    """A required Callr field has no column in an export file; the message names both."""


class DuplicateColumnsError(ExportHeaderError):
    """Two columns of an export file map to the same Callr field (e.g. `callId` and `call_id`)."""


@dataclass(frozen=True)
class ExportFile:
    """One raw export file and the direction it was requested for."""

    path: Path
    direction: str


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


def _header_key(name: str) -> str:
    return re.sub(r"[\s_\-\ufeff]", "", name).lower()


_FIELD_BY_KEY: dict[str, str] = {_header_key(f): f for f in SOURCE_FIELDS}


def header_mapping(
    header: Sequence[str], *, file: Path | None = None
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Map the header names of an export onto the Callr CDR fields.

    Names are compared after lower-casing and dropping `_`, `-` and whitespace, so camelCase,
    snake_case and any letter case match.

    Args:
        header: the header row, as written in the file.
        file: the file it comes from, named in errors.

    Returns:
        (raw header name -> canonical field, unknown header names in file order).

    Raises:
        DuplicateColumnsError: two columns map to the same field.
    """
    mapping: dict[str, str] = {}
    header_of_field: dict[str, str] = {}
    unknown: list[str] = []
    for name in header:
        field = _FIELD_BY_KEY.get(_header_key(name))
        if field is None:
            unknown.append(name)
        elif field in header_of_field:
            where = f"{file}: " if file else ""
            raise DuplicateColumnsError(
                f"{where}columns {header_of_field[field]!r} and {name!r} both map to the "
                f"Callr field {field!r}; keep one of them"
            )
        else:
            header_of_field[field] = name
            mapping[name] = field
    return mapping, tuple(unknown)


def _is_blank(path: Path) -> bool:
    """True when the file holds nothing but an optional BOM and whitespace."""
    with path.open("rb") as f:
        chunk = f.read(1 << 16)
        if chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
        while chunk:
            if not chunk.isspace():
                return False
            chunk = f.read(1 << 16)
    return True


def _read_header(path: Path) -> list[str] | None:
    """The header record of an export, or None when the file is blank (a day without calls)."""
    if _is_blank(path):
        return None
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def count_csv_rows(path: Path) -> int:
    """Count the data records of a raw CSV export, independently of the normalisation query.

    Uses polars' quote-aware row counter: a newline inside a quoted field does not end a
    record, a blank line is a record (an empty row, which the normaliser rejects), the header
    is not counted.

    Args:
        path: the raw CSV file.

    Returns:
        The number of data records; 0 for a 0-byte, blank or header-only file.
    """
    if _is_blank(path):
        return 0
    return (
        pl.scan_csv(path, has_header=True, infer_schema=False, encoding="utf8-lossy")
        .select(pl.len())
        .collect()
        .item()
    )


def _shown(value: pl.Expr) -> pl.Expr:
    """A raw value as it appears in a reject reason: quoted, one line, at most 60 chars."""
    one_line = value.str.replace_all("\r", "\\r", literal=True).str.replace_all(
        "\n", "\\n", literal=True
    )
    short = (
        pl.when(one_line.str.len_chars() > _SHOWN_VALUE_CHARS)
        .then(one_line.str.slice(0, _SHOWN_VALUE_CHARS) + pl.lit("…"))
        .otherwise(one_line)
    )
    return pl.lit("'") + short + pl.lit("'")


def _message(field: str, what: str | pl.Expr, raw: pl.Expr | None = None) -> pl.Expr:
    """`<field>: <what>[: '<raw value>']`, for reject reasons."""
    what_ = pl.lit(what) if isinstance(what, str) else what
    message = pl.lit(f"{field}: ") + what_
    return message if raw is None else message + pl.lit(": ") + _shown(raw)


@dataclass(frozen=True)
class _Rule:
    """One reject rule of a field: a cheap condition, and the message built only on rejects.

    `failed` is evaluated during typing (it may use the helper and typed columns); `message`
    is evaluated later on the rejected rows, from the raw text column alone.
    """

    failed: pl.Expr
    message: pl.Expr


@dataclass(frozen=True)
class _FieldTyping:
    """How one Callr field is typed, in stages that only reference earlier stages by name.

    Staging makes the streaming engine compute each parse once per row (an expression tree
    that repeats a parse evaluates it again for every reference).

    Attributes:
        stages: helper columns computed from the stripped text, stage by stage.
        value: the typed `calls` column, from the stripped text and the helper columns.
        rules: the reject rules, which reference the typed column (and `call_date`) by name.
    """

    stages: tuple[dict[str, pl.Expr], ...]
    value: pl.Expr
    rules: tuple[_Rule, ...]


def _stripped_name(field: str) -> str:
    return f"__stripped__{field}"


def _part_name(field: str) -> str:
    return f"__part__{field}"


def _field_typing(field: str, column: str, dtype: pl.DataType, naive_zone: str) -> _FieldTyping:
    """The typing of one Callr field, and the reject rules it can fail."""
    raw = pl.col(_RAW + field)
    stripped = pl.col(_stripped_name(field))
    part = pl.col(_part_name(field))
    # Messages are built later from the raw text alone (see `_Rule`), so they re-derive what
    # they need from it; they run on rejected rows only.
    raw_stripped = raw.str.strip_chars()
    typed = pl.col(column)
    present = (stripped.str.len_bytes() > 0).fill_null(False)
    invalid = present & typed.is_null()
    missing = (_Rule(~present, _message(field, "missing")),) if field in ROW_KEY_FIELDS else ()

    # `str.to_integer` accepts exactly `_INT_RE` (an optional sign, then ASCII digits) and gives
    # null for anything else or an overflow, so no regex test is needed before it.
    if dtype == pl.Int64:  # callid
        value = stripped.str.to_integer(dtype=pl.Int64, strict=False)
        return _FieldTyping(
            (), value, (*missing, _Rule(invalid, _message(field, "not an int64", raw)))
        )

    if isinstance(dtype, (pl.Int16, pl.Int32)):
        low, high, sql = _INT_RANGES[type(dtype)]
        if dtype == pl.Int32:  # durations
            low = 0
        parsed = {_part_name(field): stripped.str.to_integer(dtype=pl.Int64, strict=False)}
        value = pl.when(part.is_between(low, high)).then(part)
        what = pl.when(~raw_stripped.str.contains(_INT_RE)).then(pl.lit("not an integer"))
        if low == 0:
            what = what.when(raw_stripped.str.starts_with("-")).then(pl.lit("negative"))
        what = what.otherwise(pl.lit(f"out of {sql} range"))
        return _FieldTyping((parsed,), value, (_Rule(invalid, _message(field, what, raw)),))

    if isinstance(dtype, pl.Datetime):
        ts = timestamps.timestamp_typing(stripped, _part_name(field) + "_", naive_zone)
        out_of_range = ts.out_of_range
        if field == "started":  # its call date must exist too
            out_of_range = out_of_range | (
                typed.is_not_null() & ~timestamps.date_in_range(pl.col("call_date"))
            )
        unparsable = timestamps.unparsable_message(raw_stripped, naive_zone)
        return _FieldTyping(
            ts.stages,
            ts.value,
            (
                *missing,
                _Rule(ts.unparsable, _message(field, unparsable, raw)),
                _Rule(
                    ts.bad_leap_second,
                    _message(field, "second 60 is only valid as a leap second (23:59:60 UTC)", raw),
                ),
                _Rule(out_of_range, _message(field, "outside years 0001-9999", raw)),
            ),
        )

    if isinstance(dtype, pl.Decimal):  # money, in cents
        # cents -> units, exactly: the text is read as a decimal with the 4 fractional digits
        # a cent may have, then multiplied by the decimal 0.01 (integer arithmetic on the
        # scaled values: 4 + 2 fractional digits fit scale 6, so nothing is rounded). The
        # regexes decide what is a number: `str.to_decimal` alone would also take forms the
        # contract rejects, and rounds extra fractional digits.
        is_number = stripped.str.contains(_MONEY_NUMBER_RE)
        too_precise = stripped.str.contains(_TOO_PRECISE_RE)
        cents = stripped.str.to_decimal(scale=_MAX_CENT_DECIMALS).cast(
            pl.Decimal(MONEY_PRECISION + 2, MONEY_SCALE), strict=False
        )
        value = pl.when(is_number & ~too_precise).then(
            (cents * pl.lit(Decimal("0.01"), pl.Decimal(3, 2))).cast(dtype, strict=False)
        )
        what = (
            pl.when(~raw_stripped.str.contains(_MONEY_NUMBER_RE))
            .then(pl.lit("not a decimal number"))
            .when(raw_stripped.str.contains(_TOO_PRECISE_RE))
            .then(pl.lit(f"more than {_MAX_CENT_DECIMALS} fractional digits of a cent"))
            .otherwise(pl.lit(f"out of DECIMAL({MONEY_PRECISION},{MONEY_SCALE}) range"))
        )
        return _FieldTyping((), value, (_Rule(invalid, _message(field, what, raw)),))

    if dtype == pl.Boolean:
        lowered = stripped.str.to_lowercase()
        value = (
            pl.when(lowered.is_in(_TRUE))
            .then(pl.lit(True))
            .when(lowered.is_in(_FALSE))
            .then(pl.lit(False))
        )
        message = _message(field, "not a boolean (true/false/1/0/yes/no)", raw)
        return _FieldTyping((), value, (_Rule(invalid, message),))

    if column in _LOWER_CASED:
        value = pl.when(present).then(stripped.str.to_lowercase())
        if column != "direction":
            return _FieldTyping((), value, ())
        bad = _Rule(
            present & ~typed.is_in(DIRECTIONS), _message(field, "not inbound/outbound", raw)
        )
        return _FieldTyping((), value, (*missing, bad))

    # Plain text: verbatim, empty -> null.
    return _FieldTyping((), pl.when(raw != "").then(raw), ())


@functools.cache
def _typings(naive_zone: str) -> dict[str, _FieldTyping]:
    """Every Callr field's typing, for timestamps without an offset read in `naive_zone`."""
    return {
        c.source_field: _field_typing(c.source_field, c.name, c.polars_type, naive_zone)
        for c in CALL_COLUMNS
        if c.source_field is not None
    }


def _rules(naive_zone: str) -> tuple[_Rule, ...]:
    return tuple(r for t in _typings(naive_zone).values() for r in t.rules)


def _flag_name(index: int) -> str:
    return f"__failed__{index}"


def _typed(rows: pl.LazyFrame, timezone: str, naive_zone: str) -> pl.LazyFrame:
    """Add the typed `calls` columns (no Q.850 names yet) and one flag per reject rule."""
    typings = _typings(naive_zone)
    typed = rows.with_columns(
        pl.col(_RAW + f).str.strip_chars().alias(_stripped_name(f)) for f in typings
    )
    for stage in range(max(len(t.stages) for t in typings.values())):
        typed = typed.with_columns(
            e.alias(n)
            for t in typings.values()
            if stage < len(t.stages)
            for n, e in t.stages[stage].items()
        )
    return (
        typed.with_columns(
            typings[c.source_field].value.cast(c.polars_type).alias(c.name)
            for c in CALL_COLUMNS
            if c.source_field is not None
        )
        .with_columns(timestamps.local_date(pl.col("started_at"), timezone).alias("call_date"))
        .with_columns(
            rule.failed.fill_null(False).alias(_flag_name(i))
            for i, rule in enumerate(_rules(naive_zone))
        )
    )


def _json_keys(header: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for name in header:
        n = seen.get(name, 0)
        keys.append(name if n == 0 else f"{name}_duplicated_{n - 1}")
        seen[name] = n + 1
    return keys


_FLAGS: tuple[str, ...] = tuple(_flag_name(i) for i in range(len(_rules("UTC"))))

# `calls` columns that follow from others; added once per kept row, after the dedup.
_DERIVED: tuple[str, ...] = (
    "hangup_cause_name",
    "hangup_cause_class",
    "source",
    *(name for names in privacy_rules.NUMBER_COLUMNS.values() for name in names),
)

# Stage one's scratch file: only what the dedup and `calls` need. The rejects re-read their
# few rows from the raw file (stage four) instead of carrying raw text for every row.
_SCRATCH_SCHEMA: dict[str, pl.DataType] = {
    **{name: dtype for name, dtype in CALL_SCHEMA.items() if name not in _DERIVED},
    _ROW: pl.Int64(),
    _ORD: pl.Int64(),
    _FILE_DIRECTION: pl.String(),
    _REJECTED: pl.Boolean(),
    _ERASED: pl.Boolean(),
}

# Stage three's scratch file: one row per superseded row.
_SUPERSEDED_SCHEMA: dict[str, pl.DataType] = {
    _ORD: pl.Int64(),
    _DUPLICATE_REASON: pl.String(),
    _IDENTICAL: pl.Boolean(),
}


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
        "direction": pl.col(_FILE_DIRECTION),
        "source_row": pl.col(_ROW),
        "raw": pl.col(_JSON),
        "reason": reason,
        "source": pl.lit(source),
    }
    return rows.select(
        *[columns[name].cast(dtype).alias(name) for name, dtype in REJECT_SCHEMA.items()], *extra
    )


def _row_runs(rows: pl.Series) -> list[tuple[int, int]] | None:
    """1-based source rows as (first row, length) runs of consecutive rows, in order.

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
    return list(zip(runs["first"].to_list(), runs["length"].to_list(), strict=True))


@dataclass(frozen=True)
class _FileScan:
    """How to read and type one non-blank export file.

    Attributes:
        index: the file's position among the partition's files (the high part of `_ORD`).
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

    def scan(self, rows: pl.Series | None = None) -> pl.LazyFrame:
        """The file's data records typed and flagged, with their raw text and raw JSON.

        Args:
            rows: only these 1-based source rows (stage four re-reads its rejects' rows).
        """
        internal = [
            _RAW + self.mapping[name] if name in self.mapping else f"{_EXTRA}{position}"
            for position, name in enumerate(self.header)
        ]
        absent = [f for f in SOURCE_FIELDS if f not in self.mapping.values()]
        shown = [
            privacy_rules.raw_field(
                pl.col(c), c.removeprefix(_RAW) if c.startswith(_RAW) else None, self.privacy
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
        if rows is None:
            records = csv.with_row_index(_ROW, offset=1)
        elif (runs := _row_runs(rows)) is not None:
            records = pl.concat(
                [
                    csv.slice(first - 1, length).with_row_index(_ROW, offset=first)
                    for first, length in runs
                ]
            )
        else:
            records = csv.with_row_index(_ROW, offset=1).filter(
                pl.col(_ROW).is_in(rows.cast(pl.Int64).implode())
            )
        records = records.with_columns(pl.col(_ROW).cast(pl.Int64))
        return _typed(
            records.with_columns(pl.lit(None, pl.String).alias(_RAW + f) for f in absent),
            self.timezone,
            self.naive_zone,
        ).with_columns(
            (pl.col(_ROW) + self.index * _ORD_FILE_SHIFT).alias(_ORD),
            pl.lit(self.export.direction, pl.String).alias(_FILE_DIRECTION),
            raw_json.alias(_JSON),
            pl.all_horizontal([pl.col(c).fill_null("") == "" for c in internal]).alias(_EMPTY_ROW),
            # An empty row fails the `callid missing` rule, so no separate test is needed here.
            pl.any_horizontal(_FLAGS).alias(_REJECTED),
            self.privacy.is_erased(
                pl.col(_RAW + f) for f in privacy_rules.NUMBER_FIELDS.values()
            ).alias(_ERASED),
        )


def _with_derived(
    rows: pl.LazyFrame, source: str, privacy: privacy_rules.Privacy = privacy_rules.CLEAR
) -> pl.LazyFrame:
    """Add the Q.850 name and class of `hangup_cause` and the `source` column; in pseudonymise
    mode, the numbers' country codes and types, and tokens for the numbers
    (`privacy.with_number_columns`)."""
    with_causes = with_cause_columns(
        rows, "hangup_cause", "hangup_cause_name", "hangup_cause_class"
    ).with_columns(pl.lit(source, pl.String).alias("source"))
    return privacy_rules.with_number_columns(with_causes, privacy)


def _typing_reason(naive_zone: str) -> pl.Expr:
    """The reason of a row stage one rejected, from its flags and raw text.

    Built in stage four, on the rejected rows only: formatting a message for every row during
    typing would cost as much as the typing itself.
    """
    return (
        pl.when(pl.col(_EMPTY_ROW))
        .then(pl.lit("empty row: every field is empty"))
        .otherwise(
            pl.concat_str(
                [
                    pl.when(pl.col(f)).then(r.message)
                    for f, r in zip(_FLAGS, _rules(naive_zone), strict=True)
                ],
                separator="; ",
                ignore_nulls=True,
            )
        )
    )


def _repeated_ids(valid: pl.LazyFrame) -> pl.DataFrame:
    """Stage two: `call_id` and kept order key (the last) of the ids carried by several rows."""
    return (
        valid.group_by("call_id")
        .agg(pl.col(_ORD).max().alias(_KEPT + _ORD), pl.len().alias(_COUNT))
        .filter(pl.col(_COUNT) > 1)
        .drop(_COUNT)
        .collect(engine="streaming")
    )


def _deduplicate(
    valid: pl.LazyFrame,
    repeated: pl.DataFrame,
    *,
    source: str,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """Stage three: `calls`, and the superseded rows (None when no `call_id` repeats).

    A superseded row is a valid row whose `call_id` is kept from another row; it is an exact
    duplicate (`_IDENTICAL`) when every `calls` column equals the kept row's, otherwise it
    becomes a reject with `_DUPLICATE_REASON`.
    """
    call_names = [c.name for c in CALL_COLUMNS]
    if repeated.is_empty():
        return _with_derived(valid, source, privacy).select(call_names), None
    # Membership tests on the few repeated ids and their kept rows: the rows of other ids pass
    # untouched, and no join touches them.
    is_repeated = pl.col("call_id").is_in(repeated.get_column("call_id").implode())
    is_kept = pl.col(_ORD).is_in(repeated.get_column(_KEPT + _ORD).implode())
    calls = _with_derived(valid.filter(~is_repeated | is_kept), source, privacy).select(call_names)

    compared = [c for c in call_names if c not in ("call_id", *_DERIVED)]
    repeated_rows = valid.filter(is_repeated)
    kept = repeated_rows.filter(is_kept).select(
        "call_id",
        *[pl.col(c).alias(_KEPT + c) for c in compared],
        pl.col(_ROW).alias(_KEPT + _ROW),
        pl.col(_FILE_DIRECTION).alias(_KEPT + _FILE_DIRECTION),
    )
    superseded = repeated_rows.filter(~is_kept).join(
        kept, on="call_id", how="inner", build_side="force_right"
    )
    identical = pl.all_horizontal([pl.col(c).eq_missing(pl.col(_KEPT + c)) for c in compared])
    reason = pl.format(
        "duplicate callid {}: differs from source row {} ({}), which is kept",
        pl.col("call_id"),
        pl.col(_KEPT + _ROW),
        pl.col(_KEPT + _FILE_DIRECTION),
    )
    return calls, superseded.select(
        pl.col(_ORD), reason.alias(_DUPLICATE_REASON), identical.alias(_IDENTICAL)
    )


@dataclass(frozen=True)
class NormalizedExport:
    """The planned normalisation of one partition's export files.

    `write_normalized` runs it in four streaming stages (see there); `normalize_frames` is the
    same run, read back into memory.

    Attributes:
        scans: how to read and type each non-blank file, in file order.
        unknown_columns: header names that are no Callr field, in order of first appearance.
        files: the export files, for counting their raw records.
        partition_date: the partition; the `call_date` of rejects.
        source: the `source` column value.
        privacy: the pseudonymisation key and the erasure list applied.
    """

    scans: tuple[_FileScan, ...]
    unknown_columns: tuple[str, ...]
    files: tuple[ExportFile, ...]
    partition_date: date
    source: str
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR


def normalize_exports(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
    naive_timezone: str | None = None,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> NormalizedExport:
    """Plan the normalisation of one partition's export files (nothing is computed yet).

    Reads only each file's header, to map its columns and fail fast on a bad header.

    Args:
        files: the raw export files, in order; later files win duplicate `callid`s.
        partition_date: the day being normalised; the `call_date` of rejects.
        timezone: IANA time zone of `call_date` (CDR_TIMEZONE).
        source: the `source` column value (`export`, `webhook`, `push`).
        required_fields: Callr fields every file must have a column for.
        naive_timezone: IANA time zone of timestamps without an offset; None reads
            CDR_NAIVE_TIMEZONE (default UTC).
        privacy: pseudonymise the numbers (and rejects' raw JSON) with its key, drop the rows
            of numbers on its erasure list (see `cdr_pipeline.privacy`).

    Returns:
        The plan; run it with `write_normalized` or `normalize_frames`.

    Raises:
        MissingColumnsError: a file lacks a required column.
        DuplicateColumnsError: two columns of a file map to the same field.
        ConfigError: `timezone` or `naive_timezone` is not an IANA time zone.
    """
    check_timezone(timezone)
    naive_zone = resolve_naive_timezone(naive_timezone)
    required = tuple(required_fields)
    unknown: dict[str, None] = {}
    scans: list[_FileScan] = []
    for index, export in enumerate(files):
        header = _read_header(export.path)
        if header is None:  # blank file: a day without calls
            continue
        mapping, extra = header_mapping(header, file=export.path)
        missing = [f for f in required if f not in mapping.values()]
        if missing:
            raise MissingColumnsError(
                f"{export.path}: missing required column(s) {', '.join(missing)} "
                f"(header: {', '.join(header) or 'empty'})"
            )
        unknown.update(dict.fromkeys(extra))
        scans.append(
            _FileScan(index, export, tuple(header), mapping, timezone, naive_zone, privacy)
        )
    return NormalizedExport(
        scans=tuple(scans),
        unknown_columns=tuple(unknown),
        files=tuple(files),
        partition_date=partition_date,
        source=source,
        privacy=privacy,
    )


def resolve_naive_timezone(name: str | None) -> str:
    """`name` checked, or CDR_NAIVE_TIMEZONE when None (callers that cannot pass settings)."""
    return naive_timezone() if name is None else naive_timezone({"CDR_NAIVE_TIMEZONE": name})


def _scan_all(paths: Sequence[Path], schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """The Parquet files in order, or an empty frame of `schema` when there are none."""
    return pl.scan_parquet(list(paths)) if paths else pl.LazyFrame(schema=schema)


# Published files: zstd level 1 makes CDR Parquet as small as polars' default level 3 (97 against
# 98 MB for a 5M-row day) and writes it ~10 % faster.
_PUBLISHED = {"compression": "zstd", "compression_level": 1}

# Scratch files are read once, by this process: fast compression, no column statistics, and
# small row groups, because the Parquet reader prefetches whole row groups: 64k-row groups cut
# the dedup stage's peak memory at 5M rows from ~0.9-1.0 GB to ~0.7-0.8 GB, at the same speed.
_SCRATCH = {"compression": "lz4", "statistics": False, "row_group_size": 65_536}

# Stages three and four read each scratch file once per branch instead of sharing one read:
# a shared read lets one branch race ahead while the engine buffers the rows for the other.
_NO_SHARED_SCANS = pl.QueryOptFlags(comm_subplan_elim=False)


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
    extra = {_REJECTED: pl.Boolean(), _ORD: pl.Int64()}
    parts: list[Path] = []
    sinks: list[pl.LazyFrame] = []
    for scan in result.scans:
        low = scan.index * _ORD_FILE_SHIFT
        in_file = pl.col(_ORD).is_between(low, low + _ORD_FILE_SHIFT, closed="left")
        mine = pl.concat(
            [rejected.to_frame(_ORD).filter(in_file), differing.select(_ORD).filter(in_file)]
        ).get_column(_ORD)
        if mine.is_empty():
            continue
        records = scan.scan(rows=mine - low).join(
            differing.lazy(), on=_ORD, how="left", maintain_order="left"
        )
        reason = (
            pl.when(pl.col(_REJECTED))
            .then(_typing_reason(scan.naive_zone))
            .otherwise(pl.col(_DUPLICATE_REASON))
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
        [rows.filter(pl.col(_REJECTED)), rows.filter(~pl.col(_REJECTED)).sort(_ORD)]
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

    Four streaming stages, one after the other, through a scratch directory next to
    `rejects_path` that is removed afterwards:

    1. typing: each raw file is scanned and typed once, into a scratch Parquet file of typed
       columns, order key and reject flag (one sink each; no raw text, no JSON);
    2. repeated ids: a group-by of the valid rows by `call_id`, keeping the ids carried by more
       than one row with their last order key (collected: a few numbers per repeated id);
    3. dedup: `calls` (every valid row but the superseded ones, with the Q.850 names) is sunk
       to `calls_path`; when some id repeats, the superseded rows are compared with their kept
       row into a scratch file (exact duplicate or not, and the reason);
    4. rejects: the rows stage one rejected and the superseded rows that differ are re-read
       from the raw files by source row, typed again (same code, so same flags) with their raw
       JSON and reason, and sunk to `rejects_path`.

    Why not one query: the dedup needs every row before it can emit one, and a query that
    both groups and joins the same typed rows makes the streaming engine buffer all of them
    (measured: 2.4 GB for 1M rows); so does one that sinks the same scan to two places when
    the sinks progress at different speeds (7.8 GB for 5M rows). Staged, each query has one
    scan per source and memory is bounded by the in-flight batches plus the dedup state, which
    grows with the number of distinct `call_id`s (~30 bytes each), not with the rows. Why the
    re-read: JSON-encoding every row's raw text for the few that become rejects cost ~40 % of
    the typing (measured at 1M rows); re-reading a few rows by slices of the raw file costs
    a quote-aware record scan per run of rows (at most one parse of the file), and only when
    it holds a reject. The typed and rejected counts and the `started_at` range are
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
    written: list[str] = []

    def remember(args: pl.io.partition.SinkedPathsCallbackArgs) -> None:
        written.extend(p.path for p in args.paths)

    # Counted first: polars memory-maps a file to count its records, and the mapped pages show
    # in the process's RSS on top of whatever the stages below still hold.
    if raw_rows is None:
        raw_rows = sum(count_csv_rows(f.path) for f in result.files)
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rejects_path.parent, prefix=".normalize-") as scratch:
        scratch_dir = Path(scratch)
        typed_files = [scratch_dir / f"typed-{scan.index}.parquet" for scan in result.scans]
        for scan, path in zip(result.scans, typed_files, strict=True):
            scan.scan().select(list(_SCRATCH_SCHEMA)).sink_parquet(
                path, engine="streaming", **_SCRATCH
            )
        typed = _scan_all(typed_files, _SCRATCH_SCHEMA)
        erased_rows = 0
        if result.privacy.erased:
            erased_rows = typed.filter(pl.col(_ERASED)).select(pl.len()).collect().item()
            typed = typed.filter(~pl.col(_ERASED))
        valid = typed.filter(~pl.col(_REJECTED))
        calls, superseded = _deduplicate(
            valid, _repeated_ids(valid), source=result.source, privacy=result.privacy
        )
        superseded_path = scratch_dir / "superseded.parquet"
        sinks = [
            calls.sink_parquet(
                calls_path,
                **_PUBLISHED,
                mkdir=True,
                lazy=True,
                sinked_paths_callback=remember,
            )
        ]
        if superseded is not None:
            sinks.append(superseded.sink_parquet(superseded_path, lazy=True, **_SCRATCH))
        pl.collect_all(sinks, engine="streaming", optimizations=_NO_SHARED_SCANS)
        compared = (
            pl.read_parquet(superseded_path)
            if superseded is not None
            else pl.DataFrame(schema=_SUPERSEDED_SCHEMA)
        )
        rejected = (
            typed.filter(pl.col(_REJECTED)).select(_ORD).collect(engine="streaming").to_series()
        )
        differing = compared.filter(~pl.col(_IDENTICAL)).drop(_IDENTICAL)
        _write_rejects(result, rejected, differing, rejects_path, scratch_dir)
    typed_rows, first, last = _calls_summary(written)
    return NormalizeStats(
        raw_rows=raw_rows,
        typed_rows=typed_rows,
        rejected_rows=pl.scan_parquet(rejects_path).select(pl.len()).collect().item(),
        duplicate_rows=compared.get_column(_IDENTICAL).sum(),
        unknown_columns=result.unknown_columns,
        min_started_at=first,
        max_started_at=last,
        erased_rows=erased_rows,
    )


def _calls_summary(paths: Sequence[str]) -> tuple[int, datetime | None, datetime | None]:
    """Rows and `started_at` range of written `calls` files, read from their Parquet footers.

    The footers hold the row counts and each row group's exact min/max (`started_at` is a
    non-null INT64 microsecond timestamp); scanning the column instead would stream the whole
    day back through memory (measured: +0.4 GB at 5M rows).
    """
    rows, low, high = 0, None, None
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        column = meta.schema.names.index("started_at")
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            stats = chunk.column(column).statistics
            if chunk.num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:  # not written by polars: scan it
                return _scanned_summary(paths)
            low = stats.min_raw if low is None else min(low, stats.min_raw)
            high = stats.max_raw if high is None else max(high, stats.max_raw)
    instants = pl.Series([low, high], dtype=pl.Int64).cast(CALL_SCHEMA["started_at"])
    return rows, instants[0], instants[1]


def _scanned_summary(paths: Sequence[str]) -> tuple[int, datetime | None, datetime | None]:
    summary = (
        pl.scan_parquet(list(paths))
        .select(pl.len(), pl.col("started_at").min().alias("min"), pl.col("started_at").max())
        .collect()
    )
    return summary.item(0, 0), summary.item(0, 1), summary.item(0, 2)


def normalize_frames(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
    naive_timezone: str | None = None,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> tuple[pl.DataFrame, pl.DataFrame, NormalizeStats]:
    """`write_normalized` into a temporary directory, read back: for tests and small inputs.

    There is one implementation of the rules: this runs the same streaming stages and returns
    exactly the rows `write_normalized` writes.

    Returns:
        (calls, rejects, stats).
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
        return pl.read_parquet(calls_path), pl.read_parquet(rejects_path), stats
