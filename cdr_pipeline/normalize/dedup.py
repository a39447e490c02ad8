"""De-duplication by `call_id` across a partition's files, and the `calls` columns derived once
per kept row (docs/normalization.md, "Duplicates")."""

from typing import NamedTuple

import polars as pl

from cdr_pipeline import privacy as privacy_rules
from cdr_pipeline.normalize.columns import (
    COUNT,
    DUPLICATE_REASON,
    FILE_DIRECTION,
    IDENTICAL,
    KEPT,
    ORD,
    ROW,
)
from cdr_pipeline.q850 import with_cause_columns
from cdr_pipeline.schema import CALL_COLUMNS

# `calls` columns that follow from others; added once per kept row, after the dedup.
DERIVED: tuple[str, ...] = (
    "hangup_cause_name",
    "hangup_cause_class",
    "source",
    *(name for names in privacy_rules.NUMBER_COLUMNS.values() for name in names),
)

# The superseded rows' scratch file: one row per superseded row.
SUPERSEDED_SCHEMA: dict[str, pl.DataType] = {
    ORD: pl.Int64(),
    DUPLICATE_REASON: pl.String(),
    IDENTICAL: pl.Boolean(),
}


def with_derived(
    rows: pl.LazyFrame, source: str, privacy: privacy_rules.Privacy = privacy_rules.CLEAR
) -> pl.LazyFrame:
    """Add the Q.850 name and class of `hangup_cause` and the `source` column; in pseudonymise
    mode, the numbers' country codes and types, and tokens for the numbers
    (`privacy.with_number_columns`)."""
    with_causes = with_cause_columns(
        rows, "hangup_cause", "hangup_cause_name", "hangup_cause_class"
    ).with_columns(pl.lit(source, pl.String).alias("source"))
    return privacy_rules.with_number_columns(with_causes, privacy)


def repeated_ids(valid: pl.LazyFrame) -> pl.DataFrame:
    """`call_id` and kept order key (the last) of the ids carried by several rows."""
    return (
        valid.group_by("call_id")
        .agg(pl.col(ORD).max().alias(KEPT + ORD), pl.len().alias(COUNT))
        .filter(pl.col(COUNT) > 1)
        .drop(COUNT)
        .collect(engine="streaming")
    )


class Deduplicated(NamedTuple):
    """The planned dedup of the valid rows.

    Attributes:
        calls: the `calls` rows, with the derived columns.
        superseded: the rows whose `call_id` is kept from another row (`ORD`, `IDENTICAL`:
            an exact duplicate of the kept row, `DUPLICATE_REASON` for the others); None when
            no `call_id` repeats.
    """

    calls: pl.LazyFrame
    superseded: pl.LazyFrame | None


def deduplicate(
    valid: pl.LazyFrame,
    repeated: pl.DataFrame,
    *,
    source: str,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> Deduplicated:
    """Plan `calls` and the superseded rows from the valid rows and their `repeated_ids`."""
    call_names = [c.name for c in CALL_COLUMNS]
    if repeated.is_empty():
        return Deduplicated(with_derived(valid, source, privacy).select(call_names), None)
    # Membership tests on the few repeated ids and their kept rows: the rows of other ids pass
    # untouched, and no join touches them.
    is_repeated = pl.col("call_id").is_in(repeated.get_column("call_id").implode())
    is_kept = pl.col(ORD).is_in(repeated.get_column(KEPT + ORD).implode())
    calls = with_derived(valid.filter(~is_repeated | is_kept), source, privacy).select(call_names)

    compared = [c for c in call_names if c not in ("call_id", *DERIVED)]
    repeated_rows = valid.filter(is_repeated)
    kept = repeated_rows.filter(is_kept).select(
        "call_id",
        *[pl.col(c).alias(KEPT + c) for c in compared],
        pl.col(ROW).alias(KEPT + ROW),
        pl.col(FILE_DIRECTION).alias(KEPT + FILE_DIRECTION),
    )
    superseded = repeated_rows.filter(~is_kept).join(
        kept, on="call_id", how="inner", build_side="force_right"
    )
    identical = pl.all_horizontal([pl.col(c).eq_missing(pl.col(KEPT + c)) for c in compared])
    reason = pl.format(
        "duplicate callid {}: differs from source row {} ({}), which is kept",
        pl.col("call_id"),
        pl.col(KEPT + ROW),
        pl.col(KEPT + FILE_DIRECTION),
    )
    return Deduplicated(
        calls,
        superseded.select(pl.col(ORD), reason.alias(DUPLICATE_REASON), identical.alias(IDENTICAL)),
    )
