"""The typing rules: one function per kind of Callr field, giving its typed `calls` column and
the reject rules it can fail (docs/normalization.md, "Fields" and "Rejects")."""

import functools
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from cdr_pipeline import timestamps
from cdr_pipeline.normalize.columns import EMPTY_ROW, RAW
from cdr_pipeline.schema import (
    CALL_COLUMNS,
    DIRECTIONS,
    MONEY_PRECISION,
    MONEY_SCALE,
    ROW_KEY_FIELDS,
)

_LOWER_CASED: frozenset[str] = frozenset({"status", "billing_payment_type", "hangup_source"})
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_INT_RE = r"^[+-]?[0-9]+$"
_MONEY_NUMBER_RE = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_MAX_CENT_DECIMALS = 4
_TOO_PRECISE_RE = rf"\.[0-9]{{{_MAX_CENT_DECIMALS + 1},}}$"
_SHOWN_VALUE_CHARS = 60


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
class Rule:
    """One reject rule of a field: a cheap condition, and the message built only on rejects.

    `failed` is evaluated during typing (it may use the helper and typed columns); `message`
    is evaluated later on the rejected rows, from the raw text column alone.
    """

    failed: pl.Expr
    message: pl.Expr


@dataclass(frozen=True)
class FieldTyping:
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
    rules: tuple[Rule, ...]


def _stripped_name(field: str) -> str:
    return f"__stripped__{field}"


@dataclass(frozen=True)
class _Field:
    """The columns a typing rule starts from: one Callr field and its `calls` column."""

    name: str
    column: str

    @property
    def raw(self) -> pl.Expr:
        return pl.col(RAW + self.name)

    @property
    def raw_stripped(self) -> pl.Expr:
        """The stripped text, re-derived from the raw text: messages see only the raw column."""
        return self.raw.str.strip_chars()

    @property
    def stripped(self) -> pl.Expr:
        return pl.col(_stripped_name(self.name))

    @property
    def part_name(self) -> str:
        """The name of a helper column (or a prefix of several)."""
        return f"__part__{self.name}"

    @property
    def present(self) -> pl.Expr:
        return (self.stripped.str.len_bytes() > 0).fill_null(False)

    @property
    def invalid(self) -> pl.Expr:
        """Present, yet not typed."""
        return self.present & pl.col(self.column).is_null()

    def rule(self, failed: pl.Expr, what: str | pl.Expr) -> Rule:
        """A rule whose message names the field, what is wrong and the raw value."""
        return Rule(failed, _message(self.name, what, self.raw))

    def missing(self) -> tuple[Rule, ...]:
        """The `missing` rule of the fields every row needs (`ROW_KEY_FIELDS`)."""
        if self.name not in ROW_KEY_FIELDS:
            return ()
        return (Rule(~self.present, _message(self.name, "missing")),)


def _call_id_typing(f: _Field) -> FieldTyping:
    """`callid`: an exact int64. `str.to_integer` accepts exactly `_INT_RE` (an optional sign,
    then ASCII digits) and gives null for anything else or an overflow."""
    value = f.stripped.str.to_integer(dtype=pl.Int64, strict=False)
    return FieldTyping((), value, (*f.missing(), f.rule(f.invalid, "not an int64")))


def _bounded_integer_typing(f: _Field, low: int, high: int, sql: str) -> FieldTyping:
    """An integer within `low`..`high`, the range of the warehouse's `sql` column type."""
    part = pl.col(f.part_name)
    parsed = {f.part_name: f.stripped.str.to_integer(dtype=pl.Int64, strict=False)}
    value = pl.when(part.is_between(low, high)).then(part)
    checks = [(~f.raw_stripped.str.contains(_INT_RE), "not an integer")]
    if low == 0:
        checks.append((f.raw_stripped.str.starts_with("-"), "negative"))
    what = pl.lit(f"out of {sql} range")
    for failed, reason in reversed(checks):  # the first failed check names the reason
        what = pl.when(failed).then(pl.lit(reason)).otherwise(what)
    return FieldTyping((parsed,), value, (f.rule(f.invalid, what),))


def _duration_typing(f: _Field) -> FieldTyping:
    """A duration in seconds: an INTEGER, never negative."""
    return _bounded_integer_typing(f, 0, 2**31 - 1, "INTEGER")


def _cause_code_typing(f: _Field) -> FieldTyping:
    """`hangupCause`: a Q.850 code; any SMALLINT is kept (unknown codes are named later)."""
    return _bounded_integer_typing(f, -(2**15), 2**15 - 1, "SMALLINT")


def _timestamp_typing(f: _Field, naive_zone: str) -> FieldTyping:
    """An ISO 8601 timestamp (`cdr_pipeline.timestamps`); `started`'s call date must exist too."""
    ts = timestamps.timestamp_typing(f.stripped, f.part_name + "_", naive_zone)
    out_of_range = ts.out_of_range
    if f.name == "started":
        out_of_range = out_of_range | (
            pl.col(f.column).is_not_null() & ~timestamps.date_in_range(pl.col("call_date"))
        )
    unparsable = timestamps.unparsable_message(f.raw_stripped, naive_zone)
    return FieldTyping(
        ts.stages,
        ts.value,
        (
            *f.missing(),
            f.rule(ts.unparsable, unparsable),
            f.rule(ts.bad_leap_second, "second 60 is only valid as a leap second (23:59:60 UTC)"),
            f.rule(out_of_range, "outside years 0001-9999"),
        ),
    )


def _money_typing(f: _Field, dtype: pl.DataType) -> FieldTyping:
    """Money in cents -> currency units, exactly.

    The text is read as a decimal with the 4 fractional digits a cent may have, then multiplied
    by the decimal 0.01 (integer arithmetic on the scaled values: 4 + 2 fractional digits fit
    scale 6, so nothing is rounded). The regexes decide what is a number: `str.to_decimal`
    alone would also take forms the contract rejects, and rounds extra fractional digits.
    """
    is_number = f.stripped.str.contains(_MONEY_NUMBER_RE)
    too_precise = f.stripped.str.contains(_TOO_PRECISE_RE)
    cents = f.stripped.str.to_decimal(scale=_MAX_CENT_DECIMALS).cast(
        pl.Decimal(MONEY_PRECISION + 2, MONEY_SCALE), strict=False
    )
    value = pl.when(is_number & ~too_precise).then(
        (cents * pl.lit(Decimal("0.01"), pl.Decimal(3, 2))).cast(dtype, strict=False)
    )
    what = (
        pl.when(~f.raw_stripped.str.contains(_MONEY_NUMBER_RE))
        .then(pl.lit("not a decimal number"))
        .when(f.raw_stripped.str.contains(_TOO_PRECISE_RE))
        .then(pl.lit(f"more than {_MAX_CENT_DECIMALS} fractional digits of a cent"))
        .otherwise(pl.lit(f"out of DECIMAL({MONEY_PRECISION},{MONEY_SCALE}) range"))
    )
    return FieldTyping((), value, (f.rule(f.invalid, what),))


def _boolean_typing(f: _Field) -> FieldTyping:
    """`callerRestricted`: true/false/1/0/yes/no in any case, nothing else."""
    lowered = f.stripped.str.to_lowercase()
    value = (
        pl.when(lowered.is_in(_TRUE))
        .then(pl.lit(True))
        .when(lowered.is_in(_FALSE))
        .then(pl.lit(False))
    )
    return FieldTyping((), value, (f.rule(f.invalid, "not a boolean (true/false/1/0/yes/no)"),))


def _lower_cased(f: _Field) -> pl.Expr:
    return pl.when(f.present).then(f.stripped.str.to_lowercase())


def _direction_typing(f: _Field) -> FieldTyping:
    """`direction`: lower-cased, inbound or outbound."""
    bad = f.rule(f.present & ~pl.col(f.column).is_in(DIRECTIONS), "not inbound/outbound")
    return FieldTyping((), _lower_cased(f), (*f.missing(), bad))


def _enum_typing(f: _Field) -> FieldTyping:
    """`status`, `billingPaymentType`, `hangupSource`: lower-cased; unknown values are kept."""
    return FieldTyping((), _lower_cased(f), ())


def _text_typing(f: _Field) -> FieldTyping:
    """Plain text: verbatim, empty -> null."""
    return FieldTyping((), pl.when(f.raw != "").then(f.raw), ())


def _field_typing(field: str, column: str, dtype: pl.DataType, naive_zone: str) -> FieldTyping:
    """The typing of one Callr field, chosen by its `calls` column and type."""
    f = _Field(field, column)
    if dtype == pl.Int64:
        return _call_id_typing(f)
    if dtype == pl.Int32:
        return _duration_typing(f)
    if dtype == pl.Int16:
        return _cause_code_typing(f)
    if isinstance(dtype, pl.Datetime):
        return _timestamp_typing(f, naive_zone)
    if isinstance(dtype, pl.Decimal):
        return _money_typing(f, dtype)
    if dtype == pl.Boolean:
        return _boolean_typing(f)
    if column == "direction":
        return _direction_typing(f)
    if column in _LOWER_CASED:
        return _enum_typing(f)
    return _text_typing(f)


@functools.cache
def typings(naive_zone: str) -> dict[str, FieldTyping]:
    """Every Callr field's typing, for timestamps without an offset read in `naive_zone`."""
    return {
        c.source_field: _field_typing(c.source_field, c.name, c.polars_type, naive_zone)
        for c in CALL_COLUMNS
        if c.source_field is not None
    }


def rules(naive_zone: str) -> tuple[Rule, ...]:
    """Every reject rule, in field order; rule i sets the flag column `FLAGS[i]`."""
    return tuple(r for t in typings(naive_zone).values() for r in t.rules)


def _flag_name(index: int) -> str:
    return f"__failed__{index}"


FLAGS: tuple[str, ...] = tuple(_flag_name(i) for i in range(len(rules("UTC"))))


def typed(rows: pl.LazyFrame, timezone: str, naive_zone: str) -> pl.LazyFrame:
    """Add the typed `calls` columns (no Q.850 names yet) and one flag per reject rule."""
    by_field = typings(naive_zone)
    frame = rows.with_columns(
        pl.col(RAW + f).str.strip_chars().alias(_stripped_name(f)) for f in by_field
    )
    for stage in range(max(len(t.stages) for t in by_field.values())):
        frame = frame.with_columns(
            e.alias(n)
            for t in by_field.values()
            if stage < len(t.stages)
            for n, e in t.stages[stage].items()
        )
    return (
        frame.with_columns(
            by_field[c.source_field].value.cast(c.polars_type).alias(c.name)
            for c in CALL_COLUMNS
            if c.source_field is not None
        )
        .with_columns(timestamps.local_date(pl.col("started_at"), timezone).alias("call_date"))
        .with_columns(
            rule.failed.fill_null(False).alias(_flag_name(i))
            for i, rule in enumerate(rules(naive_zone))
        )
    )


def typing_reason(naive_zone: str) -> pl.Expr:
    """The reason of a row the typing rejected, from its flags and raw text.

    Built on the rejected rows only: formatting a message for every row during typing would
    cost as much as the typing itself.
    """
    return (
        pl.when(pl.col(EMPTY_ROW))
        .then(pl.lit("empty row: every field is empty"))
        .otherwise(
            pl.concat_str(
                [
                    pl.when(pl.col(f)).then(r.message)
                    for f, r in zip(FLAGS, rules(naive_zone), strict=True)
                ],
                separator="; ",
                ignore_nulls=True,
            )
        )
    )
