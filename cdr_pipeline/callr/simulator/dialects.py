"""How an export file is spelled: header style, column order, BOM, line ending, booleans,
quoting, extra unknown columns.

The dialect is picked per window day and direction when `variety=True`; with `variety=False`
every file looks like the contract's sample (`CANONICAL_DIALECT`). The values are the same
whatever the dialect.
"""

import datetime as dt
import io
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from cdr_pipeline.callr.simulator.calls import window_day
from cdr_pipeline.callr.simulator.draws import seed_of
from cdr_pipeline.schema import SOURCE_FIELDS

BOOLEAN_STYLES: tuple[str, ...] = (
    "true/false", "True/False", "TRUE/FALSE", "1/0", "yes/no", "Yes/No", "YES/NO", "mixed",
)  # fmt: skip
HEADER_STYLES: tuple[str, ...] = ("camel", "snake", "lower", "upper_snake")
EXTRA_COLUMNS: tuple[str, ...] = ("customData", "recordingUrl")


@dataclass(frozen=True)
class Dialect:
    """How one export file is spelled; the values are the same whatever the dialect.

    Attributes:
        header_style: `camel` (billingCredit), `snake` (billing_credit), `lower`
            (billingcredit) or `upper_snake` (BILLING_CREDIT).
        columns: Canonical field names (plus extras) in file order.
        bom: File starts with a UTF-8 byte order mark.
        crlf: Records end with CRLF instead of LF.
        booleans: How callerRestricted is spelled, one of BOOLEAN_STYLES (`mixed` = per row).
        quote_all: Every field is quoted (empty ones as `""`), not only those that need it.
        extra_columns: Unknown columns the reader must ignore (canonical camelCase names).
    """

    header_style: str = "camel"
    columns: tuple[str, ...] = SOURCE_FIELDS
    bom: bool = False
    crlf: bool = False
    booleans: str = "true/false"
    quote_all: bool = False
    extra_columns: tuple[str, ...] = ()

    def header(self, field: str) -> str:
        """The header text for canonical `field` in this dialect."""
        snake = re.sub(r"([A-Z])", r"_\1", field).lower()
        return {
            "camel": field,
            "snake": snake,
            "lower": field.lower(),
            "upper_snake": snake.upper(),
        }[self.header_style]


CANONICAL_DIALECT = Dialect()


def dialect_for(
    window_start: dt.datetime, direction: str, *, variety: bool = True, seed: int = 0
) -> Dialect:
    """The dialect of the export whose window starts at `window_start`.

    The choice is keyed by the UTC date of `window_start + 12 h`, which is the local day of a
    daily window in any time zone within ±12 h of UTC, and by the direction.
    """
    if not variety:
        return CANONICAL_DIALECT
    day = window_day(window_start)
    rng = random.Random(seed_of(seed, "dialect", day.isoformat(), direction))
    header_style = rng.choices(HEADER_STYLES, weights=(5, 3, 1, 1))[0]
    shuffled = rng.random() < 0.3
    bom = rng.random() < 0.25
    crlf = rng.random() < 0.3
    booleans = rng.choices(BOOLEAN_STYLES, weights=(4, 1, 1, 2, 1, 1, 1, 2))[0]
    quote_all = rng.random() < 0.15
    extras: tuple[str, ...] = ()
    if rng.random() < 0.3:
        extras = tuple(sorted(rng.sample(EXTRA_COLUMNS, rng.randint(1, len(EXTRA_COLUMNS)))))
    columns = [*SOURCE_FIELDS, *extras]
    if shuffled:
        rng.shuffle(columns)
    return Dialect(header_style, tuple(columns), bom, crlf, booleans, quote_all, extras)


def extra_column_values(extras: Sequence[str]) -> list[pl.Expr]:
    """Values of the unknown extra columns, derived from each call so reruns agree."""
    number = pl.col("callid").str.slice(-5).cast(pl.Int64, strict=False)
    values = {
        "customData": pl.when(number % 5 == 0)
        .then(pl.format('{{"crm_id": "C-{}", "tags": ["vip", "fr"]}}', number))
        .otherwise(pl.lit("")),
        "recordingUrl": pl.when(pl.col("status") == "answered")
        .then(pl.format("https://media.callr.example/recordings/{}.mp3", pl.col("callid")))
        .otherwise(pl.lit("")),
    }
    return [values[name].alias(name) for name in extras]


def write_csv(table: pl.DataFrame, dialect: Dialect) -> bytes:
    """The table (canonical text) written in `dialect`."""
    table = table.with_columns(callerRestricted=_spelled_booleans(dialect.booleans))
    out = table.select(
        pl.when(pl.col(name) != "").then(pl.col(name)).alias(dialect.header(name))
        for name in dialect.columns
    )
    buffer = io.BytesIO()
    if dialect.bom:
        buffer.write(b"\xef\xbb\xbf")
    out.write_csv(
        buffer,
        line_terminator="\r\n" if dialect.crlf else "\n",
        quote_style="always" if dialect.quote_all else "necessary",
    )
    return buffer.getvalue()


def _spelled_booleans(booleans: str) -> pl.Expr:
    """callerRestricted (canonical `true`/`false`) spelled in the style `booleans`."""
    restricted = pl.col("callerRestricted") == "true"
    if booleans != "mixed":
        yes, no = booleans.split("/")
        return pl.when(restricted).then(pl.lit(yes)).otherwise(pl.lit(no))
    # Spelled by callid, not by position, so exact duplicates stay exact.
    styles = [s for s in BOOLEAN_STYLES if s != "mixed"]
    digits = pl.col("callid").str.slice(-4).cast(pl.Int64, strict=False).fill_null(0)
    which = digits % len(styles)
    spelled = pl.lit(None, pl.String)
    for index, style in enumerate(styles):
        yes, no = style.split("/")
        spelled = (
            pl.when(which == index)
            .then(pl.when(restricted).then(pl.lit(yes)).otherwise(pl.lit(no)))
            .otherwise(spelled)
        )
    return spelled
