"""ISO 8601 timestamps as the pipeline types them, as polars expressions (export and real time).

The rules (offsets, the naive zone, leap seconds, years 0001-9999) are specified in
docs/normalization.md, "Timestamps". `TimestampTyping` gives the helper columns (in stages, each
computed once per row), the typed value and the failure conditions; `call_dates` runs the same
expressions on a few values, so the real-time loader files a reject under the day the
normaliser would give its call.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from cdr_pipeline.config import check_timezone

TS_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:[.,][0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
_WITH_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%#z"
_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"
INSTANT = pl.Datetime("us", "UTC")
# The instants Python's datetime can hold, in microseconds since the epoch (UTC).
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_DAY_US = 86_400_000_000


def _canonical(stripped: pl.Expr) -> pl.Expr:
    """One `T`, a `.` before the fraction, `Z` in capitals: what chrono's formats expect."""
    return stripped.str.replace_many(["t", " ", ",", "z"], ["T", "T", ".", "Z"])


def _has_offset(canonical: pl.Expr) -> pl.Expr:
    return canonical.str.slice(19).str.contains("[Z+-]")


def _parse(canonical: pl.Expr, naive_timezone: str) -> pl.Expr:
    """The instant of a canonical timestamp text (null when chrono cannot read it)."""
    with_offset = canonical.str.strptime(INSTANT, _WITH_OFFSET, strict=False)
    if naive_timezone == "UTC":
        # Parsed once with `%#z` (`Z` appended when no offset is given): cheaper than extracting
        # the regex groups and rebuilding the text (docs/normalization.md, "Streaming").
        text = pl.when(_has_offset(canonical)).then(canonical).otherwise(canonical + pl.lit("Z"))
        return text.str.strptime(INSTANT, _WITH_OFFSET, strict=False)
    naive = (
        canonical.str.strptime(pl.Datetime("us"), _NAIVE, strict=False)
        .dt.replace_time_zone(naive_timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    return pl.when(_has_offset(canonical)).then(with_offset).otherwise(naive)


def _is_midnight(instant: pl.Expr) -> pl.Expr:
    """Whether an instant (UTC) lies in the first second of its day."""
    return instant.cast(pl.Int64) % _DAY_US < 1_000_000  # polars' `%` floors, like Python's


@dataclass(frozen=True)
class TimestampTyping:
    """How one field's text becomes an instant, from its stripped text `stripped`.

    Attributes:
        stages: helper columns by name, in the order they must be computed.
        value: the instant (UTC, microseconds); null when absent or rejected.
        unparsable: present but not a timestamp (or no such local time).
        bad_leap_second: second 60 anywhere but 23:59:60 UTC.
        out_of_range: read, but outside years 0001-9999 in UTC.
    """

    stages: tuple[dict[str, pl.Expr], ...]
    value: pl.Expr
    unparsable: pl.Expr
    bad_leap_second: pl.Expr
    out_of_range: pl.Expr


def timestamp_typing(stripped: pl.Expr, prefix: str, naive_timezone: str) -> TimestampTyping:
    """The typing of a timestamp field whose stripped text is `stripped`.

    Args:
        stripped: the field's text, surrounding whitespace removed.
        prefix: prefix of the helper column names (unique per field).
        naive_timezone: IANA zone of timestamps written without an offset.
    """
    parsed, leap, bad_leap = (pl.col(f"{prefix}{n}") for n in ("parsed", "leap", "bad_leap"))
    canonical = _canonical(stripped)
    stages = (
        {
            f"{prefix}parsed": pl.when(stripped.str.contains(TS_RE)).then(
                _parse(canonical, naive_timezone)
            ),
            f"{prefix}leap": stripped.str.slice(17, 2) == "60",
        },
        # chrono reads `hh:mm:60` as the next minute: a leap second lands on midnight UTC.
        {f"{prefix}bad_leap": leap & ~_is_midnight(parsed)},
    )
    instant = (
        pl.when(leap)
        .then((parsed.cast(pl.Int64) // 1_000_000 * 1_000_000 - 1).cast(INSTANT))
        .otherwise(parsed)
    )
    in_range = instant.cast(pl.Int64).is_between(MIN_US, MAX_US)
    read = parsed.is_not_null() & ~bad_leap
    return TimestampTyping(
        stages=stages,
        value=pl.when(read & in_range).then(instant),
        unparsable=(stripped.str.len_bytes() > 0) & parsed.is_null(),
        bad_leap_second=parsed.is_not_null() & bad_leap,
        out_of_range=read & ~in_range,
    )


def unparsable_message(raw_stripped: pl.Expr, naive_timezone: str) -> pl.Expr:
    """Why a present value is no timestamp: its shape, or (naive, in a zone with clock changes)
    a wall-clock time that does not exist there."""
    if naive_timezone == "UTC":
        return pl.lit("not an ISO8601 timestamp")
    canonical = _canonical(raw_stripped)
    gap = (
        raw_stripped.str.contains(TS_RE)
        & ~_has_offset(canonical)
        & canonical.str.strptime(pl.Datetime("us"), _NAIVE, strict=False).is_not_null()
    )
    return (
        pl.when(gap)
        .then(pl.lit(f"no such local time in {naive_timezone} (skipped by a clock change)"))
        .otherwise(pl.lit("not an ISO8601 timestamp"))
    )


def local_date(instant: pl.Expr, timezone: str) -> pl.Expr:
    """The date of an instant in `timezone` (CDR_TIMEZONE): a call's `call_date`."""
    return instant.dt.convert_time_zone(timezone).dt.date()


def date_in_range(date: pl.Expr) -> pl.Expr:
    """Whether a date lies in years 0001-9999 (Python's `date`)."""
    return date.dt.year().is_between(1, 9999)


def call_dates(
    values: Sequence[str | None], *, timezone: str, naive_timezone: str
) -> list[dt.date | None]:
    """The `call_date` each `started` text gets from the normaliser, None where it is no
    timestamp the normaliser would keep. For a few values (the real-time loader's rejects)."""
    check_timezone(timezone)
    typing = timestamp_typing(pl.col("text").str.strip_chars(), "__ts_", naive_timezone)
    frame = pl.LazyFrame({"text": list(values)}, schema={"text": pl.String})
    for stage in typing.stages:
        frame = frame.with_columns(**stage)
    dates = frame.select(local_date(typing.value, timezone).alias("date")).select(
        pl.when(date_in_range(pl.col("date"))).then(pl.col("date"))
    )
    return dates.collect().to_series().to_list()
