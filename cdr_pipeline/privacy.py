"""Personal data in CDRs: pseudonymised numbers, what a number tells in clear, the erasure list.

Phone numbers (`caller_number`, `callee`) and `caller_name` are personal data. README "Privacy"
says what each mode stores where; this module holds the rules, as plain functions and polars
expressions the normaliser applies to every row (no Dagster here):

- `number_key`: the form a number is compared and hashed in: spaces, dots, dashes and
  parentheses removed, a leading international `00` written `+` (`0033 6 12…` = `+33612…`).
- `with_number_columns`, in pseudonymise mode: what analytics needs in clear, derived from the
  number before it is pseudonymised: the E.164 country calling code and the number type
  (`mobile`, `fixed`, `toll_free`, `premium`, `fixed_or_mobile` in the NANP, `unknown` for
  countries outside `_NUMBER_TYPES`; `national` for a number written without its country code,
  `short_code`, `not_a_number` for anything else, e.g. `anonymous`). In clear mode the four
  columns are null: the numbers are there, and `with_number_classes` derives them.
- `Privacy.key` set (`CDR_PRIVACY=pseudonymise`): each number becomes `pn_` + the first 32 hex
  digits of HMAC-SHA256(`CDR_PRIVACY_KEY`, number key): the same number, the same token, so
  counts by number still work; `caller_name` becomes null.
- `Privacy.erased`: the erasure list, as HMAC-SHA256 of the number key under the installation's
  erasure salt (`privacy/erasure-salt` under CDR_DATA_DIR), never the number. A row whose caller
  or callee is on it is dropped by the normaliser and counted as erased. The salt, not the
  privacy key, keys the list, so rotating CDR_PRIVACY_KEY never lets an erased number back.

Why a prefix table rather than `phonenumbers`: the country code follows from the structure of
ITU-T E.164 itself (codes are prefix-free: 1 and 7 are the one-digit codes, the two-digit ones
are listed below, every other code has three digits), and the type needs a few prefixes per
country, run as vectorised polars expressions; `phonenumbers` parses one number at a time in
Python (tens of microseconds each: seconds per million-row day) for detail we do not store.
"""

import functools
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from cdr_pipeline import durable

MODES = ("clear", "pseudonymise")
DEFAULT_MODE = "clear"
TOKEN_PREFIX = "pn_"
PERSONAL_COLUMNS = ("caller_number", "caller_name", "callee")
NUMBER_FIELDS = {"caller_number": "callerNumber", "callee": "callee"}  # column -> Callr field
# number column -> (its country code column, its type column), in `calls` (schema.py)
NUMBER_COLUMNS = {
    "caller_number": ("caller_country_code", "caller_number_type"),
    "callee": ("callee_country_code", "callee_number_type"),
}
NAME_FIELD = "callerName"

_SEPARATOR_CHARS = (" ", "\t", "(", ")", ".", "-")
_WITHOUT_SEPARATORS = str.maketrans("", "", "".join(_SEPARATOR_CHARS))
_TWO_DIGIT_CODES = [
    *("20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46"),
    *("47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63"),
    *("64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98"),
]
# (country code, national number prefix, type); the longest matching prefix wins.
_NUMBER_TYPES: tuple[tuple[str, str, str], ...] = (
    *[("1", p, "toll_free") for p in ("800", "833", "844", "855", "866", "877", "888")],
    ("1", "900", "premium"),
    ("1", "", "fixed_or_mobile"),  # the NANP does not tell mobiles by their prefix
    ("33", "80", "toll_free"),
    *[("33", p, "premium") for p in ("81", "82", "89")],
    *[("33", p, "mobile") for p in ("6", "7")],
    *[("33", p, "fixed") for p in ("1", "2", "3", "4", "5", "9")],
    *[("44", p, "toll_free") for p in ("800", "808")],
    ("44", "7", "mobile"),
    ("44", "9", "premium"),
    *[("44", p, "fixed") for p in ("1", "2", "3")],
    ("49", "800", "toll_free"),
    ("49", "900", "premium"),
    *[("49", p, "mobile") for p in ("15", "16", "17")],
    ("49", "", "fixed"),
    *[("34", p, "toll_free") for p in ("800", "900")],
    *[("34", p, "premium") for p in ("803", "806", "807", "905")],
    *[("34", p, "mobile") for p in ("6", "7")],
    *[("34", p, "fixed") for p in ("8", "9")],
    ("39", "800", "toll_free"),
    ("39", "89", "premium"),
    ("39", "3", "mobile"),
    ("39", "0", "fixed"),
    *[(cc, "800", "toll_free") for cc in ("31", "32", "41")],
    *[(cc, "90", "premium") for cc in ("31", "32", "41")],
    ("31", "6", "mobile"),
    ("32", "4", "mobile"),
    ("41", "7", "mobile"),
    *[(cc, "", "fixed") for cc in ("31", "32", "41")],
)


class ErasureError(ValueError):
    """An erasure request that cannot be carried out as given (the message says why)."""


def number_key(text: str) -> str:
    """The form a number is hashed and compared in (see the module docstring)."""
    key = text.translate(_WITHOUT_SEPARATORS)
    return "+" + key[2:] if key.startswith("00") else key


def number_key_expr(column: pl.Expr) -> pl.Expr:
    """`number_key` as a polars expression."""
    key = column.str.replace_many(list(_SEPARATOR_CHARS), [""] * len(_SEPARATOR_CHARS))
    return pl.when(key.str.starts_with("00")).then(pl.lit("+") + key.str.slice(2)).otherwise(key)


@functools.cache
def _codes_by_head() -> dict[str, str]:
    """The first three digits of an E.164 number -> its country code (codes are prefix-free)."""
    codes = {}
    for head in (f"{n:03d}" for n in range(100, 1000)):
        if head[0] in "17":
            codes[head] = head[0]
        else:
            codes[head] = head[:2] if head[:2] in _TWO_DIGIT_CODES else head
    return codes


@functools.cache
def _types_by_head() -> dict[str, str]:
    """Country code + the first three digits of the national number -> type, by the longest
    prefix of `_NUMBER_TYPES` (one hash lookup per number instead of a test per prefix)."""
    table: dict[str, str] = {}
    for cc in dict.fromkeys(cc for cc, _, _ in _NUMBER_TYPES):
        rules = sorted(
            ((p, kind) for code, p, kind in _NUMBER_TYPES if code == cc), key=lambda r: -len(r[0])
        )
        for head in (f"{n:03d}" for n in range(1000)):
            kind = next((k for p, k in rules if head.startswith(p)), None)
            if kind is not None:
                table[cc + head] = kind
    return table


def with_number_classes(rows: pl.LazyFrame, number: str, code: str, kind: str) -> pl.LazyFrame:
    """`rows` with the country code (`code`) and type (`kind`) of the `number` column.

    Two left joins on small lookup tables (900 and ~9,000 rows), which the streaming engine
    runs natively (`replace_strict` would fall back to the in-memory engine and hold the whole
    column, see `q850.with_cause_columns`). Row order is kept."""
    key, head, type_key, listed = (f"__{name}_{number}" for name in ("key", "head", "tk", "ls"))
    digits = pl.col(key).str.slice(1)
    e164 = (
        pl.col(key).str.starts_with("+")
        & digits.str.len_chars().is_between(7, 15)
        & digits.str.to_integer(strict=False).is_not_null()  # digits only (15 fit an int64)
    )
    codes = pl.LazyFrame(
        {head: list(_codes_by_head()), code: list(_codes_by_head().values())},
        schema={head: pl.String, code: pl.String},
    )
    types = pl.LazyFrame(
        {type_key: list(_types_by_head()), listed: list(_types_by_head().values())},
        schema={type_key: pl.String, listed: pl.String},
    )
    with_codes = (
        rows.with_columns(number_key_expr(pl.col(number)).alias(key))
        .with_columns(pl.when(e164).then(digits.str.slice(0, 3)).alias(head))
        .join(codes, on=head, how="left", maintain_order="left")
    )
    national = pl.col(key).str.slice(pl.col(code).str.len_chars() + 1, 3)
    with_types = with_codes.with_columns(
        pl.concat_str([pl.col(code), national]).alias(type_key)
    ).join(types, on=type_key, how="left", maintain_order="left")
    unsigned = pl.col(key).str.to_integer(strict=False).is_not_null() & ~pl.col(
        key
    ).str.starts_with("+")
    length = pl.col(key).str.len_chars()
    classified = (
        pl.when(pl.col(key).is_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col(listed).is_not_null())
        .then(pl.col(listed))
        .when(pl.col(code).is_not_null())
        .then(pl.lit("unknown"))
        .when(unsigned & pl.col(key).str.starts_with("0") & length.is_between(7, 15))
        .then(pl.lit("national"))
        .when(unsigned & length.is_between(2, 6))
        .then(pl.lit("short_code"))
        .otherwise(pl.lit("not_a_number"))
    )
    return with_types.with_columns(classified.alias(kind)).drop(key, head, type_key, listed)


def token(key: bytes, number: str) -> str:
    """The pseudonym of `number` under `key` (`pn_` + 32 hex digits of HMAC-SHA256)."""
    # hmac.digest: OpenSSL's one-shot HMAC, faster than hmac.new(...).hexdigest().
    return TOKEN_PREFIX + hmac.digest(key, number_key(number).encode(), "sha256").hex()[:32]


def _per_distinct(function: Callable[[str], object], dtype: pl.DataType) -> Callable:
    """`function` applied once per distinct non-null value of a batch (numbers repeat a lot)."""

    def apply(values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique().to_list()
        if not distinct:
            return pl.Series(values.name, [None] * len(values), dtype=dtype)
        return values.replace_strict(
            distinct, [function(v) for v in distinct], default=None, return_dtype=dtype
        )

    return apply


def tokens(column: pl.Expr, key: bytes) -> pl.Expr:
    """`column`'s numbers as tokens (null and empty stay as they are)."""
    return column.map_batches(
        _per_distinct(lambda v: token(key, v) if v.strip() else v, pl.String()),
        return_dtype=pl.String,
        is_elementwise=True,
    )


@dataclass(frozen=True)
class Privacy:
    """What the normaliser applies: the pseudonymisation key (None: clear mode) and the
    erasure list. The key is never shown (`repr`) and never written anywhere."""

    key: bytes | None = field(default=None, repr=False)
    erased: frozenset[str] = frozenset()
    erasure_salt: bytes | None = field(default=None, repr=False)

    @property
    def pseudonymise(self) -> bool:
        return self.key is not None

    def erasure_hash(self, number: str) -> str:
        if self.erasure_salt is None:
            raise ErasureError("no erasure salt: load the privacy settings with `load_privacy`")
        return hmac.new(self.erasure_salt, number_key(number).encode(), "sha256").hexdigest()

    def is_erased_number(self, number: str) -> bool:
        return bool(self.erased) and self.erasure_hash(number) in self.erased

    def is_erased(self, columns: Iterable[pl.Expr]) -> pl.Expr:
        """Whether any of `columns` (raw number text) holds an erased number."""
        if not self.erased:
            return pl.lit(False)
        hit = _per_distinct(self.is_erased_number, pl.Boolean())
        return pl.any_horizontal(
            c.map_batches(hit, return_dtype=pl.Boolean, is_elementwise=True).fill_null(False)
            for c in columns
        )


CLEAR = Privacy()


def with_number_columns(rows: pl.LazyFrame, privacy: Privacy) -> pl.LazyFrame:
    """In pseudonymise mode, add the country code and type of both numbers, then replace the
    numbers by their tokens and drop the caller's name. In clear mode the rows are returned as
    they are (the four columns null): the numbers are there to derive them from, and deriving
    them has a cost clear mode does not pay (docs/performance.md, "Privacy")."""
    if privacy.key is None:
        return rows.with_columns(
            pl.lit(None, pl.String).alias(name)
            for names in NUMBER_COLUMNS.values()
            for name in names
        )
    derived = rows
    for number, (code, kind) in NUMBER_COLUMNS.items():
        derived = with_number_classes(derived, number, code, kind)
    return derived.with_columns(
        *(tokens(pl.col(column), privacy.key) for column in NUMBER_FIELDS),
        pl.lit(None, pl.String).alias("caller_name"),
    )


def raw_field(column: pl.Expr, field_name: str | None, privacy: Privacy) -> pl.Expr:
    """A raw text field as a reject's `raw` JSON may show it in this mode. `field_name` None
    is a column that is no Callr field: its value is withheld in pseudonymise mode (nobody
    knows what it holds)."""
    if privacy.key is None:
        return column
    if field_name is None or field_name == NAME_FIELD:
        return pl.lit(None, pl.String)
    if field_name in NUMBER_FIELDS.values():
        return tokens(column, privacy.key)
    return column


def privacy_dir(data_dir: Path) -> Path:
    return data_dir / "privacy"


def erasure_list_path(data_dir: Path) -> Path:
    return privacy_dir(data_dir) / "erasure-list.txt"


def write_private(path: Path, content: bytes) -> None:
    """Write `content` to `path` (mode 0600), atomically."""
    durable.write_bytes(path, content, mode=0o600)


def erasure_salt(data_dir: Path, *, create: bool = False) -> bytes | None:
    """The installation's erasure salt (32 random bytes), made on the first erasure."""
    path = privacy_dir(data_dir) / "erasure-salt"
    if not path.exists():
        if not create:
            return None
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def load_privacy(data_dir: Path, key: str | None) -> Privacy:
    """The privacy settings a load applies: `key` (None or empty: clear mode) and the erasure
    list under `data_dir`."""
    listed = erasure_list_path(data_dir)
    erased = frozenset(listed.read_text().split()) if listed.exists() else frozenset()
    return Privacy(
        key=key.encode() if key else None,
        erased=erased,
        erasure_salt=erasure_salt(data_dir),
    )


def add_to_erasure_list(data_dir: Path, number: str) -> str:
    """Put `number` on the erasure list (its salted hash); the hash, for the audit."""
    salt = erasure_salt(data_dir, create=True)
    digest = Privacy(erasure_salt=salt).erasure_hash(number)
    listed = erasure_list_path(data_dir)
    known = listed.read_text().split() if listed.exists() else []
    if digest not in known:
        write_private(listed, "".join(f"{h}\n" for h in [*known, digest]).encode())
    return digest


def erasure_audit_path(data_dir: Path) -> Path:
    """The erasure audit: one JSON line per erasure."""
    return privacy_dir(data_dir) / "erasure-audit.jsonl"


def append_audit(data_dir: Path, entry: dict[str, object]) -> Path:
    """Append one JSON line to the erasure audit (`privacy/erasure-audit.jsonl`)."""
    path = erasure_audit_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path
