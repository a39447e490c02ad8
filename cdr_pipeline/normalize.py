"""Raw Callr CSV exports -> typed `calls` rows and `call_rejects` rows, with polars.

The normaliser is made of polars *lazy* queries that the streaming engine runs:
`scan_csv` -> typed/validated columns -> dedup -> `sink_parquet`. No Python code runs per row
(no `map_elements`, no loops over rows), and memory stays bounded on 5M-row days (see
"Streaming" below). `normalize_exports` plans, `write_normalized` runs and writes Parquet,
`normalize_frames` runs the same stages in memory (tests, small inputs).

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
- `started`, `answered`, `ended`: `YYYY-MM-DD(T| )hh:mm:ss[.fraction][offset]`; offset `Z`,
  `+hh:mm`, `+hhmm` or `+hh`; no offset means UTC; fractions beyond microseconds are truncated
  (the warehouse stores microseconds). `started` missing -> rejected; `answered`/`ended` empty
  -> null; any present but unparsable timestamp -> rejected.
- durations: digits only (optional `+`), 0..2^31-1; negative, non-integer (`1.5`, `12.0`) or
  overflowing -> rejected; empty -> null.
- money (`billingDebit`, `billingCredit`, in cents): a plain decimal number (optional sign, no
  exponent, no thousands separator) with at most 4 fractional digits; converted to currency
  units = cents / 100 by moving the decimal point in the *text* (never through a float), then
  parsed as DECIMAL(18,6): `12.75` -> 0.127500, `0.0001` -> 0.000001. More than 4 fractional
  digits, not a number, or beyond DECIMAL(18,6) -> rejected; empty -> null.
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

- no window function: the dedup is a `group_by(call_id)` (last order key, count), then a
  membership filter on the kept order keys, and joins restricted to the repeated ids; all run
  natively in the streaming engine (`show_graph(engine="streaming")` shows no in-memory
  fallback). `replace_strict` did fall back to the in-memory engine, so Q.850 names are a join.
- one query for everything is *not* bounded: a plan that groups and joins the same rows, or
  that sinks one scan to two outputs, makes the engine buffer the rows for the slower branch
  (2.4 GB at 1M rows; 7.8 GB at 5M). So `write_normalized` runs four streaming stages through
  scratch Parquet files, each with one consumer per scan.
- result: 5M rows in ~11 s with a peak of ~0.75 GB anonymous memory, 10M rows ~0.8 GB (the
  dedup state is ~30 bytes per `call_id`). Repeated ids cost their kept row in memory: a day
  where every one of 5M rows is an exact duplicate pair peaks at ~3 GB.
"""

import csv
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from cdr_pipeline.config import check_timezone
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
_EMPTY_ROW = "__empty_row"
_KEPT = "__kept"
_COUNT = "__count"
_IDENTICAL = "__identical"
_DUPLICATES = "duplicate_rows"

_LOWER_CASED: frozenset[str] = frozenset(
    {"direction", "status", "billing_payment_type", "hangup_source"}
)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_INT_RE = r"^[+-]?[0-9]+$"
_MONEY_RE = r"^(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?$"
_MONEY_NUMBER_RE = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_TS_RE = (
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:[.,](?P<frac>[0-9]{1,9}))?"
    r"(?:[Zz]|(?P<off_h>[+-][0-9]{2})(?::?(?P<off_m>[0-9]{2}))?)?$"
)
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"
_MAX_CENT_DECIMALS = 4
_TOO_PRECISE_RE = rf"\.[0-9]{{{_MAX_CENT_DECIMALS + 1},}}$"
_ORD_FILE_SHIFT = 1 << 40  # order key = file index * 2^40 + source row
_SHOWN_VALUE_CHARS = 60
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
    """

    raw_rows: int
    typed_rows: int
    rejected_rows: int
    duplicate_rows: int
    unknown_columns: tuple[str, ...]
    min_started_at: datetime | None
    max_started_at: datetime | None

    @property
    def reconciles(self) -> bool:
        """Whether every raw record is accounted for: raw = typed + rejected + duplicates."""
        return self.raw_rows == self.typed_rows + self.rejected_rows + self.duplicate_rows


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
        parts: helper columns computed from the stripped text (e.g. regex groups).
        value: the typed `calls` column, from the stripped text and the parts.
        rules: the reject rules, which reference the typed column by name.
    """

    parts: dict[str, pl.Expr]
    value: pl.Expr
    rules: tuple[_Rule, ...]


def _stripped_name(field: str) -> str:
    return f"__stripped__{field}"


def _part_name(field: str) -> str:
    return f"__part__{field}"


def _field_typing(field: str, column: str, dtype: pl.DataType) -> _FieldTyping:
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

    if dtype == pl.Int64:  # callid
        value = pl.when(stripped.str.contains(_INT_RE)).then(
            stripped.str.to_integer(dtype=pl.Int64, strict=False)
        )
        return _FieldTyping(
            {}, value, (*missing, _Rule(invalid, _message(field, "not an int64", raw)))
        )

    if isinstance(dtype, (pl.Int16, pl.Int32)):
        low, high, sql = _INT_RANGES[type(dtype)]
        if dtype == pl.Int32:  # durations
            low = 0
        parsed = {
            _part_name(field): pl.when(stripped.str.contains(_INT_RE)).then(
                stripped.str.to_integer(dtype=pl.Int64, strict=False)
            )
        }
        value = pl.when(part.is_between(low, high)).then(part)
        what = pl.when(~raw_stripped.str.contains(_INT_RE)).then(pl.lit("not an integer"))
        if low == 0:
            what = what.when(raw_stripped.str.starts_with("-")).then(pl.lit("negative"))
        what = what.otherwise(pl.lit(f"out of {sql} range"))
        return _FieldTyping(parsed, value, (_Rule(invalid, _message(field, what, raw)),))

    if isinstance(dtype, pl.Datetime):
        groups = part.struct
        offset = (
            pl.when(groups.field("off_h").is_null())
            .then(pl.lit("+00:00"))
            .otherwise(
                pl.concat_str(
                    groups.field("off_h"), pl.lit(":"), groups.field("off_m").fill_null("00")
                )
            )
        )
        canonical = pl.concat_str(
            groups.field("date"),
            pl.lit("T"),
            groups.field("time"),
            pl.lit("."),
            groups.field("frac").fill_null("0"),
            offset,
        )
        value = canonical.str.strptime(dtype, _TS_FORMAT, strict=False)
        return _FieldTyping(
            {_part_name(field): stripped.str.extract_groups(_TS_RE)},
            value,
            (*missing, _Rule(invalid, _message(field, "not an ISO8601 timestamp", raw))),
        )

    if isinstance(dtype, pl.Decimal):  # money, in cents
        groups = part.struct
        fraction = groups.field("frac").fill_null("")
        whole = groups.field("int").str.zfill(3)
        # cents -> units: move the decimal point two places left, in the text.
        units = pl.concat_str(
            groups.field("sign"),
            whole.str.head(-2),
            pl.lit("."),
            whole.str.tail(2),
            fraction.str.pad_end(_MAX_CENT_DECIMALS, "0"),
        )
        is_number = stripped.str.contains(_MONEY_NUMBER_RE)
        too_precise = fraction.str.len_chars() > _MAX_CENT_DECIMALS
        value = pl.when(is_number & ~too_precise).then(
            units.str.to_decimal(scale=MONEY_SCALE).cast(dtype, strict=False)
        )
        what = (
            pl.when(~raw_stripped.str.contains(_MONEY_NUMBER_RE))
            .then(pl.lit("not a decimal number"))
            .when(raw_stripped.str.contains(_TOO_PRECISE_RE))
            .then(pl.lit(f"more than {_MAX_CENT_DECIMALS} fractional digits of a cent"))
            .otherwise(pl.lit(f"out of DECIMAL({MONEY_PRECISION},{MONEY_SCALE}) range"))
        )
        return _FieldTyping(
            {_part_name(field): stripped.str.extract_groups(_MONEY_RE)},
            value,
            (_Rule(invalid, _message(field, what, raw)),),
        )

    if dtype == pl.Boolean:
        lowered = stripped.str.to_lowercase()
        value = (
            pl.when(lowered.is_in(_TRUE))
            .then(pl.lit(True))
            .when(lowered.is_in(_FALSE))
            .then(pl.lit(False))
        )
        message = _message(field, "not a boolean (true/false/1/0/yes/no)", raw)
        return _FieldTyping({}, value, (_Rule(invalid, message),))

    if column in _LOWER_CASED:
        value = pl.when(present).then(stripped.str.to_lowercase())
        if column != "direction":
            return _FieldTyping({}, value, ())
        bad = _Rule(
            present & ~typed.is_in(DIRECTIONS), _message(field, "not inbound/outbound", raw)
        )
        return _FieldTyping({}, value, (*missing, bad))

    # Plain text: verbatim, empty -> null.
    return _FieldTyping({}, pl.when(raw != "").then(raw), ())


_TYPINGS: dict[str, _FieldTyping] = {
    c.source_field: _field_typing(c.source_field, c.name, c.polars_type)
    for c in CALL_COLUMNS
    if c.source_field is not None
}
_RULES: tuple[_Rule, ...] = tuple(r for t in _TYPINGS.values() for r in t.rules)


def _flag_name(index: int) -> str:
    return f"__failed__{index}"


def _typed(rows: pl.LazyFrame, timezone: str) -> pl.LazyFrame:
    """Add the typed `calls` columns (no Q.850 names yet) and one flag per reject rule."""
    return (
        rows.with_columns(
            pl.col(_RAW + f).str.strip_chars().alias(_stripped_name(f)) for f in _TYPINGS
        )
        .with_columns(e.alias(n) for t in _TYPINGS.values() for n, e in t.parts.items())
        .with_columns(
            _TYPINGS[c.source_field].value.cast(c.polars_type).alias(c.name)
            for c in CALL_COLUMNS
            if c.source_field is not None
        )
        .with_columns(
            pl.col("started_at").dt.convert_time_zone(timezone).dt.date().alias("call_date"),
            *[rule.failed.fill_null(False).alias(_flag_name(i)) for i, rule in enumerate(_RULES)],
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


_FLAGS: tuple[str, ...] = tuple(_flag_name(i) for i in range(len(_RULES)))

# Stage one's output: one row per data record, typed, flagged, with what a reject needs.
_TYPED_SCHEMA: dict[str, pl.DataType] = {
    **CALL_SCHEMA,
    _ROW: pl.Int64(),
    _ORD: pl.Int64(),
    _FILE_DIRECTION: pl.String(),
    _JSON: pl.String(),
    _REJECTED: pl.Boolean(),
    _EMPTY_ROW: pl.Boolean(),
    **{_RAW + f: pl.String() for f in SOURCE_FIELDS},  # rejected rows only, for the reason
    **{flag: pl.Boolean() for flag in _FLAGS},
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


def _scan_export(
    index: int,
    export: ExportFile,
    header: list[str],
    mapping: dict[str, str],
    *,
    timezone: str,
    source: str,
) -> pl.LazyFrame:
    """Stage one for one export file: every data record typed and flagged (`_TYPED_SCHEMA`)."""
    internal = [
        _RAW + mapping[name] if name in mapping else f"{_EXTRA}{position}"
        for position, name in enumerate(header)
    ]
    absent = [f for f in SOURCE_FIELDS if f not in mapping.values()]
    raw_json = pl.struct(
        [pl.col(c).alias(key) for c, key in zip(internal, _json_keys(header), strict=True)]
    ).struct.json_encode()
    rows = _typed(
        pl.scan_csv(
            export.path,
            has_header=True,
            new_columns=internal,
            infer_schema=False,
            empty_string_is_null=False,
            encoding="utf8-lossy",
            quote_char='"',
            separator=",",
        )
        .with_row_index(_ROW, offset=1)
        .with_columns(pl.lit(None, pl.String).alias(_RAW + f) for f in absent),
        timezone,
    ).with_columns(
        pl.col(_ROW).cast(pl.Int64),
        (pl.col(_ROW).cast(pl.Int64) + index * _ORD_FILE_SHIFT).alias(_ORD),
        pl.lit(export.direction, pl.String).alias(_FILE_DIRECTION),
        raw_json.alias(_JSON),
        pl.all_horizontal([pl.col(c).fill_null("") == "" for c in internal]).alias(_EMPTY_ROW),
    )
    return (
        with_cause_columns(rows, "hangup_cause", "hangup_cause_name", "hangup_cause_class")
        .with_columns(
            pl.lit(source, pl.String).alias("source"),
            (pl.col(_EMPTY_ROW) | pl.any_horizontal(_FLAGS)).alias(_REJECTED),
        )
        # The raw text is kept for rejected rows only; valid rows have it in the raw JSON.
        .with_columns(
            pl.when(pl.col(_REJECTED)).then(pl.col(_RAW + f)).alias(_RAW + f) for f in SOURCE_FIELDS
        )
        .select(list(_TYPED_SCHEMA))
    )


def _typing_rejects(typed: pl.LazyFrame, *, partition_date: date, source: str) -> pl.LazyFrame:
    """The rows stage one rejected, as rejects with their reasons.

    The reasons are built here, on the rejected rows only: formatting a message for every row
    during typing would cost as much as the typing itself.
    """
    reason = (
        pl.when(pl.col(_EMPTY_ROW))
        .then(pl.lit("empty row: every field is empty"))
        .otherwise(
            pl.concat_str(
                [pl.when(pl.col(f)).then(r.message) for f, r in zip(_FLAGS, _RULES, strict=True)],
                separator="; ",
                ignore_nulls=True,
            )
        )
    )
    return _rejects(
        typed.filter(pl.col(_REJECTED)), reason, partition_date=partition_date, source=source
    )


@dataclass(frozen=True)
class _LastOccurrences:
    """Stage two: which valid row each `call_id` keeps.

    Attributes:
        kept: the order keys of the kept rows (the last occurrence of each `call_id`).
        repeated: `call_id` and kept order key of the ids carried by more than one row.
    """

    kept: pl.Series
    repeated: pl.DataFrame


def _last_occurrences(valid: pl.LazyFrame) -> _LastOccurrences:
    per_call = (
        valid.group_by("call_id")
        .agg(pl.col(_ORD).max().alias(_KEPT + _ORD), pl.len().alias(_COUNT))
        .collect(engine="streaming")
    )
    return _LastOccurrences(
        kept=per_call.get_column(_KEPT + _ORD),
        repeated=per_call.filter(pl.col(_COUNT) > 1).drop(_COUNT),
    )


def _deduplicate(
    valid: pl.LazyFrame, last: _LastOccurrences, *, partition_date: date, source: str
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Stage three: `calls`, and the superseded rows as rejects plus `identical` and order key.

    A superseded row is a valid row whose `call_id` is kept from another row; it is an exact
    duplicate when every `calls` column equals the kept row's.
    """
    call_names = [c.name for c in CALL_COLUMNS]
    compared = [c for c in call_names if c != "call_id"]
    # The order key is unique per row. A membership test on the kept keys costs a third of the
    # memory of a streaming semi join against them (measured with 10M keys).
    calls = valid.filter(pl.col(_ORD).is_in(last.kept.implode())).select(call_names)

    # Only ids seen more than once need comparing with their kept row, value by value (so the
    # join holds the kept version of each repeated id: memory ~ repeated ids, few in practice).
    repeated = valid.join(
        last.repeated.lazy(),
        on="call_id",
        how="inner",
        build_side="force_right",
    )
    kept = repeated.filter(pl.col(_ORD) == pl.col(_KEPT + _ORD)).select(
        "call_id",
        *[pl.col(c).alias(_KEPT + c) for c in compared],
        pl.col(_ROW).alias(_KEPT + _ROW),
        pl.col(_FILE_DIRECTION).alias(_KEPT + _FILE_DIRECTION),
    )
    superseded = repeated.filter(pl.col(_ORD) != pl.col(_KEPT + _ORD)).join(
        kept, on="call_id", how="inner", build_side="force_right"
    )
    identical = pl.all_horizontal([pl.col(c).eq_missing(pl.col(_KEPT + c)) for c in compared])
    reason = pl.format(
        "duplicate callid {}: differs from source row {} ({}), which is kept",
        pl.col("call_id"),
        pl.col(_KEPT + _ROW),
        pl.col(_KEPT + _FILE_DIRECTION),
    )
    return calls, _rejects(
        superseded,
        reason,
        partition_date=partition_date,
        source=source,
        extra=[identical.alias(_IDENTICAL), pl.col(_ORD)],
    )


def _all_rejects(
    typing_rejects: pl.LazyFrame, superseded: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Stage four: (all rejects, duplicate count) from typing rejects and superseded rows."""
    # Sorted so that the rejects come out in the same order on every run; the joins before do
    # not keep row order (keeping it there costs ~1 GB more on a day of 5M duplicated rows).
    differing = superseded.filter(~pl.col(_IDENTICAL)).sort(_ORD).drop(_IDENTICAL, _ORD)
    duplicate_count = superseded.filter(pl.col(_IDENTICAL)).select(pl.len().alias(_DUPLICATES))
    return pl.concat([typing_rejects, differing], how="vertical"), duplicate_count


@dataclass(frozen=True)
class NormalizedExport:
    """The planned normalisation of one partition's export files.

    The work runs in four stages; `write_normalized` (streaming, through scratch Parquet
    files) and `normalize_frames` (in memory) run the same stages with the same code:

    1. typing: per raw file, one lazy scan (`file_typed`) that types and flags every record;
    2. last occurrence per `call_id`: a group-by over the valid rows (kept order keys, and
       the ids carried by more than one row);
    3. dedup: `calls` (the kept rows), and the superseded rows compared with their kept row;
    4. rejects: typing rejects (reasons built now) plus the superseded rows that differ from
       their kept row, and the count of those identical to it (the collapsed duplicates).

    Attributes:
        file_typed: stage one per non-blank file: every data record with the `calls`
            columns, order key, source row, the file's direction, raw JSON, reject flags.
        unknown_columns: header names that are no Callr field, in order of first appearance.
        files: the export files, for counting their raw records.
        partition_date: the partition; the `call_date` of rejects.
        source: the `source` column value.
    """

    file_typed: tuple[pl.LazyFrame, ...]
    unknown_columns: tuple[str, ...]
    files: tuple[ExportFile, ...]
    partition_date: date
    source: str

    @property
    def typed(self) -> pl.LazyFrame:
        """Stage one of all files, in file order."""
        return pl.concat([pl.LazyFrame(schema=_TYPED_SCHEMA), *self.file_typed])


def normalize_exports(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
) -> NormalizedExport:
    """Plan the normalisation of one partition's export files (nothing is computed yet).

    Reads only each file's header, to map its columns and fail fast on a bad header.

    Args:
        files: the raw export files, in order; later files win duplicate `callid`s.
        partition_date: the day being normalised; the `call_date` of rejects.
        timezone: IANA time zone of `call_date` (CDR_TIMEZONE).
        source: the `source` column value (`export`, `webhook`, `push`).
        required_fields: Callr fields every file must have a column for.

    Returns:
        The plan; run it with `write_normalized` or `normalize_frames`.

    Raises:
        MissingColumnsError: a file lacks a required column.
        DuplicateColumnsError: two columns of a file map to the same field.
        ConfigError: `timezone` is not an IANA time zone.
    """
    check_timezone(timezone)
    required = tuple(required_fields)
    unknown: dict[str, None] = {}
    typed: list[pl.LazyFrame] = []
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
        typed.append(_scan_export(index, export, header, mapping, timezone=timezone, source=source))
    return NormalizedExport(
        file_typed=tuple(typed),
        unknown_columns=tuple(unknown),
        files=tuple(files),
        partition_date=partition_date,
        source=source,
    )


def _after_typing(
    result: NormalizedExport, typed: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """Stage two (run now) and the lazy stage three, over a materialised stage one.

    Returns:
        (calls, superseded rows, typing rejects).
    """
    valid = typed.filter(~pl.col(_REJECTED))
    kw = {"partition_date": result.partition_date, "source": result.source}
    calls, superseded = _deduplicate(valid, _last_occurrences(valid), **kw)
    return calls, superseded, _typing_rejects(typed, **kw)


def _stats(
    result: NormalizedExport, calls: pl.LazyFrame, rejects: pl.LazyFrame, duplicate_rows: int
) -> NormalizeStats:
    summary = calls.select(
        pl.len().alias("n"),
        pl.col("started_at").min().alias("min"),
        pl.col("started_at").max().alias("max"),
    ).collect()
    return NormalizeStats(
        raw_rows=sum(count_csv_rows(f.path) for f in result.files),
        typed_rows=summary.item(0, "n"),
        rejected_rows=rejects.select(pl.len()).collect().item(),
        duplicate_rows=duplicate_rows,
        unknown_columns=result.unknown_columns,
        min_started_at=summary.item(0, "min"),
        max_started_at=summary.item(0, "max"),
    )


def _scan_all(paths: Sequence[Path], schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """The Parquet files in order, or an empty frame of `schema` when there are none."""
    return pl.scan_parquet(list(paths)) if paths else pl.LazyFrame(schema=schema)


# Stages three and four read each scratch file once per branch instead of sharing one read:
# a shared read lets one branch race ahead while the engine buffers the rows for the other.
_NO_SHARED_SCANS = pl.QueryOptFlags(comm_subplan_elim=False)


def write_normalized(
    result: NormalizedExport, calls_path: Path | pl.PartitionBy, rejects_path: Path
) -> NormalizeStats:
    """Run the normalisation with the streaming engine and write zstd Parquet files.

    The stages of `NormalizedExport` run one after the other with the streaming engine,
    through a scratch directory next to `rejects_path` that is removed afterwards:

    1. each raw file is scanned and typed once, into a scratch Parquet file (one sink each);
    2. a group-by of the valid scratch rows by `call_id` (collected: a few numbers per id);
    3. `calls` is sunk to `calls_path` and the superseded rows to a scratch file;
    4. the rejects are sunk to `rejects_path` and the exact duplicates counted.

    Why not one query: the dedup needs every row before it can emit one, and a query that
    both groups and joins the same typed rows makes the streaming engine buffer all of them
    (measured: 2.4 GB for 1M rows); so does one that sinks the same scan to two places when
    the sinks progress at different speeds (7.8 GB for 5M rows). Staged, each query has one
    scan per source and memory is bounded by the in-flight batches plus the dedup state, which
    grows with the number of distinct `call_id`s (~30 bytes each), not with the rows (see the
    module docstring for measurements). The typed and rejected counts and the `started_at`
    range are read back from the written files, and `raw_rows` is counted from the raw files,
    so `NormalizeStats.reconciles` compares independent numbers.

    Args:
        result: the plan from `normalize_exports`.
        calls_path: where to write `calls`: a Parquet file, or a `pl.PartitionBy` (e.g. Hive
            style by `call_date`). The caller handles temp names and atomic renames.
        rejects_path: the Parquet file for the rejects.

    Returns:
        The stats of the run.
    """
    written: list[str] = []

    def remember(args: pl.io.partition.SinkedPathsCallbackArgs) -> None:
        written.extend(p.path for p in args.paths)

    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rejects_path.parent, prefix=".normalize-") as scratch:
        scratch_dir = Path(scratch)
        typed_files = [scratch_dir / f"typed-{i}.parquet" for i in range(len(result.file_typed))]
        for typed, path in zip(result.file_typed, typed_files, strict=True):
            typed.sink_parquet(path, compression="lz4", engine="streaming")
        calls, superseded, typing_rejects = _after_typing(
            result, _scan_all(typed_files, _TYPED_SCHEMA)
        )
        superseded_path = scratch_dir / "superseded.parquet"
        pl.collect_all(
            [
                calls.sink_parquet(
                    calls_path,
                    compression="zstd",
                    mkdir=True,
                    lazy=True,
                    sinked_paths_callback=remember,
                ),
                superseded.sink_parquet(superseded_path, compression="lz4", lazy=True),
            ],
            engine="streaming",
            optimizations=_NO_SHARED_SCANS,
        )
        rejects, duplicates = _all_rejects(typing_rejects, pl.scan_parquet(superseded_path))
        _, duplicate_count = pl.collect_all(
            [rejects.sink_parquet(rejects_path, compression="zstd", lazy=True), duplicates],
            engine="streaming",
            optimizations=_NO_SHARED_SCANS,
        )
    written_calls = pl.scan_parquet(written) if written else pl.LazyFrame(schema=CALL_SCHEMA)
    return _stats(result, written_calls, pl.scan_parquet(rejects_path), duplicate_count.item())


def normalize_frames(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
) -> tuple[pl.DataFrame, pl.DataFrame, NormalizeStats]:
    """Eager convenience: the same stages as `write_normalized`, in memory.

    For tests and small inputs; production runs use `write_normalized`.

    Returns:
        (calls, rejects, stats).
    """
    result = normalize_exports(
        files,
        partition_date=partition_date,
        timezone=timezone,
        source=source,
        required_fields=required_fields,
    )
    typed = result.typed.collect(engine="streaming")
    calls_lf, superseded_lf, typing_rejects = _after_typing(result, typed.lazy())
    calls, superseded = pl.collect_all([calls_lf, superseded_lf], engine="streaming")
    rejects, duplicates = pl.collect_all(
        _all_rejects(typing_rejects, superseded.lazy()), engine="streaming"
    )
    return calls, rejects, _stats(result, calls.lazy(), rejects.lazy(), duplicates.item())
