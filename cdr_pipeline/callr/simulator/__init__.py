"""A fake Callr CDR export API: deterministic synthetic CDRs over real HTTP, with fault injection.

Two halves:

- **Generation** (pure functions, no I/O, no wall clock, no global random state):
  `simulate_export` builds the exact CSV body the fake API returns for a window and a direction,
  together with its ground truth (`SimulatedExport`): which calls are valid and should reach the
  warehouse, and how many rows are defects, exact duplicates or conflicting versions.
  `generate_export` and `expected_call_ids` are shortcuts to its two most used parts.
- **Serving**: `SimulatorServer` answers `POST /v2.0/calls/export` like Callr does (key check,
  parameter validation, gzip when asked), on loopback, in a daemon thread; `inject` queues
  faults (429, 5xx, slow answers, truncated bodies, dropped connections, a rejected key) that
  are consumed one per request. `serve` runs one until interrupted, for
  `cdr-pipeline simulator --port N`. With a `cache_dir`, each export body is generated once,
  kept as a file (`cached_export`) and streamed from disk afterwards, so a benchmark can time
  the transfer of a multi-million-row export without timing its generation.

How the synthetic data is made:

- Every UTC day and direction has its own calls, drawn from `random.Random` seeded with
  `(seed, day, direction)`, with vectorised polars expressions (a million rows take seconds).
  Volume varies by weekday (roughly 300-900 calls per direction and day) unless `calls_per_day`
  fixes it; start times follow a business-hours profile.
- A window's export holds the calls whose `[started, ended]` overlaps `[from, to)` (with
  `overlap=True`, the default): a call still in progress at `from` is exported again, so a call
  crossing midnight appears in two days' exports, exactly as the warehouse's dedup must expect.
  (A few "night owl" calls a day start after 23:40 UTC and last 25-85 minutes, so every daily
  UTC export has some.) With `overlap=False` an export holds only the calls started inside
  the window.
- The file's *dialect* (header style, column order, BOM, line ending, boolean spelling, quoting,
  extra unknown columns) is picked per window day and direction when `variety=True`; with
  `variety=False` every file looks like the contract's sample.
- With `defects=True` (the default) each non-empty export also carries a few rows the contract
  rejects (one each: unparsable `started`, negative `durationTotal`, a debit with five fractional
  cent digits, a `callid` mangled to scientific notation), two exact duplicates of valid rows and
  one stale version of a valid call placed before its final version (same `callid`, different
  content: the final version, being the last occurrence, wins). An export without calls stays
  a header-only file.
- `callid` values are above 2**53 (close to the int64 limit, so a float would change them) and
  unique across days and directions.
"""

import base64
import binascii
import dataclasses
import datetime as dt
import gzip
import hashlib
import hmac
import io
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pyarrow as pa

from cdr_pipeline.schema import DIRECTIONS, SOURCE_FIELDS

logger = logging.getLogger(__name__)

EXPORT_PATH = "/v2.0/calls/export"
DEFAULT_API_KEY = "sim-key"

# callid = CALLID_BASE + (day index << 30) + (kind << 29) + (direction << 28) + sequence.
# The base sits above 2**53 and near the int64 limit: any float on the way changes the ids.
CALLID_BASE = 9_007_199_254_740_993_000
MAX_CALLS_PER_DAY = 1 << 28
_EPOCH = dt.date(1970, 1, 1)
_MAX_DAY_INDEX = (1 << 16) - 1  # days after 1970-01-01 the id layout can number (until 2149)
_KIND_CALL, _KIND_EXTRA = 0, 1

STATUSES: tuple[str, ...] = ("answered", "busy", "failed", "canceled", "unallocated")
_STATUS_WEIGHTS = {
    "outbound": (0.58, 0.10, 0.14, 0.12, 0.06),
    "inbound": (0.64, 0.05, 0.09, 0.20, 0.02),
}
_ANSWERED = 0

# (status, Q.850 hangupCause, hangupTech, hangupSource, weight within the status)
_OUTCOMES: tuple[tuple[str, int, str, str, float], ...] = (
    ("answered", 16, "SIP 200", "caller", 0.50),
    ("answered", 16, "SIP 200", "callee", 0.45),
    ("answered", 16, "SIP 200", "system", 0.05),
    ("busy", 17, "SIP 486", "callee", 0.93),
    ("busy", 17, "SIP 600", "callee", 0.07),
    ("failed", 18, "SIP 408", "system", 0.30),
    ("failed", 19, "SIP 480", "system", 0.35),
    ("failed", 31, "SIP 480", "system", 0.15),
    ("failed", 34, "SIP 503", "system", 0.10),
    ("failed", 38, "SIP 502", "system", 0.05),
    ("failed", 102, "SIP 504", "system", 0.05),
    ("canceled", 16, "SIP 487", "caller", 0.90),
    ("canceled", 127, "SIP 487", "caller", 0.07),
    ("canceled", 31, "SIP 487", "caller", 0.03),
    ("unallocated", 1, "SIP 404", "system", 0.90),
    ("unallocated", 3, "SIP 404", "system", 0.10),
)

# Seconds of ringing before the answer or the hang-up: (minimum, span) per status.
_RING_S = {
    "answered": (2, 23),
    "busy": (0, 7),
    "failed": (15, 46),
    "canceled": (1, 40),
    "unallocated": (0, 3),
}
_MEAN_TALK_S = {"outbound": 140.0, "inbound": 210.0}
_MAX_TALK_S = 4 * 3600
_BILLING_INCREMENTS = ((1, 0.45), (30, 0.20), (60, 0.35))

# (label, number prefix, random digits after it, outbound rate in 1/10000 cent per minute, weight)
_DESTINATIONS: tuple[tuple[str, str, int, int, float], ...] = (
    ("France - Mobile", "+336", 8, 18_500, 0.28),
    ("France - Fixed", "+331", 8, 7_500, 0.20),
    ("United Kingdom - Mobile", "+447", 9, 22_333, 0.10),
    ("United Kingdom - Fixed", "+4420", 8, 9_875, 0.07),
    ("Germany - Mobile", "+4915", 9, 31_250, 0.07),
    ("Spain - Fixed", "+349", 8, 11_111, 0.06),
    ("Belgium - Mobile", "+324", 8, 28_900, 0.06),
    ("Switzerland - Mobile", "+417", 8, 45_000, 0.05),
    ("United States - Fixed", "+1212", 7, 12_345, 0.05),
    ("Côte d'Ivoire - Mobile", "+22507", 8, 123_457, 0.04),
    ("Réunion - Mobile", "+262692", 6, 60_000, 0.02),
)

# The customer's scenarios. Outbound: (name, sid, type, version, payment, caller number,
# caller name, weight). Inbound: (name, sid, type, version, payment, called number, its label,
# cost of an answered minute in 1/10000 cent, weight).
_OUTBOUND_SCENARIOS: tuple[tuple[str, str, str, str, str, str, str, float], ...] = (
    ("Outbound campaign", "q7r2k9", "Actions", "1.0", "postpaid", "+33184880001", "Front desk",
     0.45),
    ("Rappels de rendez-vous", "m4n8p2", "Actions", "2.0", "prepaid", "+33972100200",
     "Cabinet Dr. Lefèvre", 0.30),
    ("Sales, EMEA", "s9d3f1", "Actions", "1.0", "postpaid", "+442079460000", "Sales, London",
     0.20),
    ("Legacy dialer", "l0g4c7", "Legacy", "0.9", "prepaid", "0184880002", "", 0.05),
)  # fmt: skip
_INBOUND_SCENARIOS: tuple[tuple[str, str, str, str, str, str, str, int, float], ...] = (
    ("Support, level 1", "z1x8c3", "Actions", "1.0", "postpaid", "+33184880001",
     "France - Fixed", 7_500, 0.45),
    ('Standard "Accueil"', "a5b6c7", "Actions", "2.0", "postpaid", "+33184880010",
     "France - Fixed", 7_500, 0.25),
    ("UK hotline", "u2k9h4", "Actions", "1.0", "prepaid", "+447700900123",
     "United Kingdom - Mobile", 22_333, 0.20),
    ("Numéro vert", "n0v3r7", "Actions", "1.1", "postpaid", "0800123456",
     "France - Toll-free", 27_500, 0.10),
)  # fmt: skip
_INBOUND_CREDIT_RATE_E4 = 12_750  # revenue share on an answered inbound minute

_CALLER_NAMES: tuple[tuple[str, float], ...] = (
    ("", 0.40),
    ("Zoë Ørsted", 0.06),
    ("株式会社 東京商事", 0.05),
    ('O\'Neil, "Pat"', 0.05),
    ("Dupont, Jean-Pierre", 0.06),
    ("María José Núñez", 0.05),
    ("Ľubomír Šťastný", 0.04),
    ("Björk Guðmundsdóttir", 0.04),
    ('ACME "Paris" SARL', 0.05),
    ("Nguyễn Văn An", 0.04),
    ("Séverine L'Hôte", 0.05),
    ("Müller & Söhne GmbH", 0.05),
    ("محمد علي", 0.03),
    ("0033 Reception", 0.02),
    ("Accueil\nSiège", 0.01),  # a newline inside a quoted field
)
_CLIR_RATE = {"inbound": 0.06, "outbound": 0.01}
_NATIONAL_FORMAT_RATE = 0.12  # numbers written 06… / 0044… instead of +336… / +44…

# Timestamp suffixes: (text, offset in minutes, weight). All three timestamps of a call share one.
_OFFSETS: tuple[tuple[str, int, float], ...] = (
    ("Z", 0, 0.60),
    ("+01:00", 60, 0.20),
    ("+02:00", 120, 0.10),
    ("-05:00", -300, 0.05),
    ("+00:00", 0, 0.05),
)
_FRACTION_WEIGHTS = (0.85, 0.10, 0.05)  # whole seconds, milliseconds, microseconds

# Mean calls per direction on Monday..Sunday (before a ±10 % daily jitter).
_WEEKDAY_VOLUME = {
    "outbound": (820, 880, 860, 840, 760, 380, 300),
    "inbound": (700, 760, 740, 720, 650, 420, 320),
}
# Share of the day's calls starting in each UTC hour: business hours, a lunch dip.
_HOURLY_WEIGHTS = (
    1, 1, 1, 1, 1, 2, 4, 12, 38, 62, 70, 66,
    40, 46, 64, 66, 60, 48, 26, 12, 7, 4, 2, 1,
)  # fmt: skip

_UNIFORM_COLUMNS = (
    "u_hour", "u_sec", "u_frac_kind", "u_frac", "u_status", "u_outcome", "u_ring", "u_talk",
    "u_incr", "u_dest", "u_digits", "u_format", "u_scenario", "u_name", "u_clir", "u_offset",
    "u_bill",
)  # fmt: skip

BOOLEAN_STYLES: tuple[str, ...] = (
    "true/false", "True/False", "TRUE/FALSE", "1/0", "yes/no", "Yes/No", "YES/NO", "mixed",
)  # fmt: skip
HEADER_STYLES: tuple[str, ...] = ("camel", "snake", "lower", "upper_snake")
EXTRA_COLUMNS: tuple[str, ...] = ("customData", "recordingUrl")
DEFECT_KINDS: tuple[str, ...] = ("started", "durationTotal", "billingDebit", "callid")
_DUPLICATES_PER_EXPORT = 2


@dataclass(frozen=True)
class SimulationOptions:
    """The knobs of the synthetic data (see the module docstring for the whole story).

    Attributes:
        calls_per_day: Calls per UTC day and direction; None = the weekday profile (~300-900).
        variety: Vary the file dialect per day (header case/style, column order, BOM, CRLF,
            boolean spelling, quoting, extra columns). False = always the sample's format.
        overlap: Export calls whose [started, ended] overlaps the window (calls in progress at
            its start included). False = only calls started inside the window.
        defects: Add a few contract-rejected rows, exact duplicates and a conflicting version.
        seed: Picks another, equally deterministic, universe of calls.
    """

    calls_per_day: int | None = None
    variety: bool = True
    overlap: bool = True
    defects: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calls_per_day is not None and not 0 <= self.calls_per_day <= MAX_CALLS_PER_DAY:
            raise ValueError(f"calls_per_day must be in 0..{MAX_CALLS_PER_DAY}")


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


@dataclass(frozen=True)
class SimulatedExport:
    """One export body and its ground truth.

    Attributes:
        body: The exact CSV bytes the fake API sends (before any gzip transfer encoding).
        dialect: How the file is spelled.
        calls: The valid calls, one row each, as canonical text (SOURCE_FIELDS columns,
            booleans as true/false, empty strings for blanks), in start order.
        rows: Data rows in the file (header excluded).
        defect_rows: Rows the contract rejects for a bad value (their callids are not calls).
        duplicate_rows: Extra copies of valid rows (exact duplicates: they collapse).
        conflict_rows: Stale versions of valid calls, same callid, different content, placed
            before the final version (they go to call_rejects; the final version wins).
        call_ids: callids of `calls`: what the warehouse holds after loading this export.
        carried_over_ids: The subset of `call_ids` started before the window (overlap).
    """

    body: bytes
    dialect: Dialect
    calls: pl.DataFrame
    rows: int
    defect_rows: int
    duplicate_rows: int
    conflict_rows: int
    call_ids: frozenset[int]
    carried_over_ids: frozenset[int]

    @property
    def rejected_rows(self) -> int:
        """Rows that end in call_rejects: defects and conflicting versions."""
        return self.defect_rows + self.conflict_rows


def simulate_export(
    window_start: dt.datetime,
    window_end: dt.datetime,
    direction: str,
    *,
    calls_per_day: int | None = None,
    variety: bool = True,
    overlap: bool = True,
    defects: bool = True,
    seed: int = 0,
) -> SimulatedExport:
    """The export of `direction` calls for the half-open window [window_start, window_end).

    Args:
        window_start: Tz-aware start of the window (the API's `from`).
        window_end: Tz-aware end of the window, excluded (the API's `to`).
        direction: `inbound` or `outbound`.
        calls_per_day: See SimulationOptions.
        variety: See SimulationOptions.
        overlap: See SimulationOptions.
        defects: See SimulationOptions.
        seed: See SimulationOptions.

    Returns:
        The body and its ground truth; the same arguments always give the same bytes.

    Raises:
        ValueError: A naive or empty window, an unknown direction, a day outside 1970-2149.
    """
    options = SimulationOptions(calls_per_day, variety, overlap, defects, seed)
    start_us, end_us = _window_us(window_start, window_end)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be inbound or outbound, got {direction!r}")
    window_day = _window_day(window_start)
    calls = _window_calls(start_us, end_us, direction, options)
    dialect = dialect_for(window_start, direction, variety=variety, seed=seed)
    table = calls.with_columns(_extra_column_values(dialect.extra_columns))
    inserts: list[tuple[int, int, pl.DataFrame]] = []
    counts = dict.fromkeys(("defect", "duplicate", "conflict"), 0)
    if defects and calls.height:
        rng = random.Random(_seed(seed, "defects", window_day.isoformat(), direction))
        inserts, counts = _defect_rows(table, start_us, end_us, window_day, direction, rng)
    # Splice the inserted rows in (slices, not a sort: a million-row export stays fast).
    pieces, previous = [], 0
    for before, _, row in sorted(inserts, key=lambda item: item[:2]):
        pieces += [table.slice(previous, before - previous), row]
        previous = before
    full = pl.concat([*pieces, table.slice(previous)], rechunk=False)
    body = _write_csv(full, dialect)
    ids = calls["callid"].cast(pl.Int64)
    carried = calls.filter(pl.col("_started_us") < start_us)["callid"].cast(pl.Int64)
    return SimulatedExport(
        body=body,
        dialect=dialect,
        calls=calls.select(SOURCE_FIELDS),
        rows=full.height,
        defect_rows=counts["defect"],
        duplicate_rows=counts["duplicate"],
        conflict_rows=counts["conflict"],
        call_ids=frozenset(ids.to_list()),
        carried_over_ids=frozenset(carried.to_list()),
    )


def generate_export(
    window_start: dt.datetime, window_end: dt.datetime, direction: str, **options: Any
) -> bytes:
    """The exact CSV body of an export (see `simulate_export` for the arguments)."""
    return simulate_export(window_start, window_end, direction, **options).body


def expected_call_ids(
    window_start: dt.datetime, window_end: dt.datetime, direction: str, **options: Any
) -> set[int]:
    """callids of the valid calls of an export: those that should end up in `calls`."""
    return set(simulate_export(window_start, window_end, direction, **options).call_ids)


def cached_export(
    cache_dir: Path,
    window_start: dt.datetime,
    window_end: dt.datetime,
    direction: str,
    *,
    gzip_encoded: bool = False,
    **options: Any,
) -> Path:
    """The export body as a file under `cache_dir`, generated on first use and reused after.

    The file name is derived from the window, the direction and every SimulationOptions field,
    so a cached body is exactly `generate_export(...)` for those arguments. Files are written
    under a temporary name and renamed, so concurrent users (threads or processes) never see
    half a file.

    Args:
        cache_dir: Where the bodies are kept (created if missing).
        window_start: See `simulate_export`.
        window_end: See `simulate_export`.
        direction: See `simulate_export`.
        gzip_encoded: Return the gzip-encoded body (level 1, as the server sends it) instead.
        **options: SimulationOptions fields.

    Returns:
        The path of the plain CSV body, or of its `.gz` encoding.
    """
    settings = SimulationOptions(**options)
    start_us, end_us = _window_us(window_start, window_end)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be inbound or outbound, got {direction!r}")
    key = _seed(start_us, end_us, direction, *dataclasses.astuple(settings))
    plain = Path(cache_dir) / f"export-{direction}-{key:016x}.csv"
    if not plain.exists():
        body = generate_export(window_start, window_end, direction, **dataclasses.asdict(settings))
        _write_replacing(plain, lambda out: out.write(body))
    if not gzip_encoded:
        return plain
    packed = plain.with_name(plain.name + ".gz")
    if not packed.exists():

        def compress(out: io.BufferedWriter) -> None:
            with (
                plain.open("rb") as source,
                gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=1, mtime=0) as z,
            ):
                while chunk := source.read(1 << 20):
                    z.write(chunk)

        _write_replacing(packed, compress)
    return packed


def _write_replacing(path: Path, write: Any) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with temporary.open("wb") as out:
            write(out)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def dialect_for(
    window_start: dt.datetime, direction: str, *, variety: bool = True, seed: int = 0
) -> Dialect:
    """The dialect of the export whose window starts at `window_start`.

    The choice is keyed by the UTC date of `window_start + 12 h`, which is the local day of a
    daily window in any time zone within ±12 h of UTC, and by the direction.
    """
    if not variety:
        return CANONICAL_DIALECT
    day = _window_day(window_start)
    rng = random.Random(_seed(seed, "dialect", day.isoformat(), direction))
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


def call_id(day: dt.date, direction: str, sequence: int, *, extra: bool = False) -> int:
    """The callid of the `sequence`-th call of `day` and `direction` (0-based, start order).

    `extra=True` numbers the defect rows of the export whose window day is `day`.
    """
    index = (day - _EPOCH).days
    if not 0 <= index <= _MAX_DAY_INDEX:
        raise ValueError(f"the simulator numbers calls from 1970-01-01 to 2149-06-05, not {day}")
    kind = _KIND_EXTRA if extra else _KIND_CALL
    return (
        CALLID_BASE + (index << 30) + (kind << 29) + (DIRECTIONS.index(direction) << 28) + sequence
    )


# --- generation internals -------------------------------------------------------------------


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _window_us(start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    if not start < end:
        raise ValueError(f"window start {start.isoformat()} is not before {end.isoformat()}")
    return _epoch_us(start), _epoch_us(end)


def _epoch_us(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _window_day(window_start: dt.datetime) -> dt.date:
    return (window_start.astimezone(dt.UTC) + dt.timedelta(hours=12)).date()


def _uniforms(rng: random.Random, n: int) -> pl.Series:
    """n floats uniform in [0, 1), drawn from rng's stream (53 bits each)."""
    if n == 0:
        return pl.Series(values=[], dtype=pl.Float64)
    raw = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(rng.randbytes(8 * n))])
    words = pl.Series(pl.from_arrow(raw))
    return (words // 2048).cast(pl.Float64) / float(1 << 53)


def _choice(u: pl.Expr, weights: Sequence[float]) -> pl.Expr:
    """Index drawn with `weights`, from a uniform column `u` (inverse CDF)."""
    total = float(sum(weights))
    index = pl.lit(0, dtype=pl.Int64)
    running = 0.0
    for weight in weights[:-1]:
        running += weight
        index = index + (u >= running / total).cast(pl.Int64)
    return index


def _pick(index: pl.Expr, values: Sequence[Any], dtype: pl.DataType) -> pl.Expr:
    """values[index], vectorised."""
    return index.replace_strict(list(range(len(values))), list(values), return_dtype=dtype)


def _floor(u: pl.Expr, span: int | pl.Expr) -> pl.Expr:
    """An integer uniform in [0, span) from a uniform column."""
    return (u * span).floor().cast(pl.Int64)


def _cents_text(e4: pl.Expr) -> pl.Expr:
    """An amount in 1/10000 cent, as cents text: `318`, `12.75`, `0.3333`."""
    whole = (e4 // 10_000).cast(pl.String)
    fraction = (e4 % 10_000).cast(pl.String).str.zfill(4).str.strip_chars_end("0")
    return (
        pl.when(e4 % 10_000 == 0)
        .then(whole)
        .otherwise(pl.concat_str([whole, pl.lit("."), fraction]))
    )


def _default_volume(day: dt.date, direction: str, rng: random.Random) -> int:
    mean = _WEEKDAY_VOLUME[direction][day.weekday()]
    return round(mean * (0.9 + 0.2 * rng.random()))


def _day_calls(
    day: dt.date, direction: str, options: SimulationOptions, start_us: int, end_us: int
) -> pl.DataFrame:
    """The calls of one UTC day and direction that the window's export holds.

    Every call of the day is drawn (so ids and values never depend on the window), but only
    those the window keeps are formatted as canonical text; `_started_us` and `_ended_us`
    (epoch microseconds) come along for the caller.
    """
    rng = random.Random(_seed(options.seed, "calls", day.isoformat(), direction))
    n = options.calls_per_day
    if n is None:
        n = _default_volume(day, direction, rng)
    first_id = call_id(day, direction, 0)
    frame = pl.DataFrame({name: _uniforms(rng, n) for name in _UNIFORM_COLUMNS})
    day_us = (day - _EPOCH).days * 86_400 * 1_000_000

    # When: an hour from the profile, a second within it, sometimes a sub-second part. A few
    # "night owl" calls (on-call support, conferences) start after 23:40 and run past midnight,
    # so every day's export carries some calls over from the day before.
    night_owls = min(n // 4, max(2, n // 250))
    night = pl.int_range(pl.len()) < night_owls
    daytime = _choice(pl.col("u_hour"), _HOURLY_WEIGHTS) * 3600 + _floor(pl.col("u_sec"), 3600)
    late = 23 * 3600 + 2400 + _floor(pl.col("u_sec"), 1200)
    frac_kind = _choice(pl.col("u_frac_kind"), _FRACTION_WEIGHTS)
    frac_us = (
        pl.when(frac_kind == 1)
        .then(_floor(pl.col("u_frac"), 1000) * 1000)
        .when(frac_kind == 2)
        .then(_floor(pl.col("u_frac"), 1_000_000))
        .otherwise(0)
    )
    frame = frame.with_columns(
        night=night,
        frac_kind=frac_kind,
        frac_us=frac_us,
        _started_us=day_us + pl.when(night).then(late).otherwise(daytime) * 1_000_000 + frac_us,
    )
    frame = frame.sort("_started_us", maintain_order=True).with_row_index("seq")

    # What happened: the status, then a Q.850 outcome among that status's, then durations.
    status = pl.when("night").then(_ANSWERED)
    status = status.otherwise(_choice(pl.col("u_status"), _STATUS_WEIGHTS[direction]))
    frame = frame.with_columns(status_i=status)
    outcome = pl.lit(0, dtype=pl.Int64)
    ring = pl.lit(0, dtype=pl.Int64)
    for index, name in enumerate(STATUSES):
        rows = [i for i, o in enumerate(_OUTCOMES) if o[0] == name]
        pick = rows[0] + _choice(pl.col("u_outcome"), [_OUTCOMES[i][4] for i in rows])
        is_status = pl.col("status_i") == index
        outcome = pl.when(is_status).then(pick).otherwise(outcome)
        low, span = _RING_S[name]
        ring = pl.when(is_status).then(low + _floor(pl.col("u_ring"), span)).otherwise(ring)
    answered = pl.col("status_i") == _ANSWERED
    usual = 1 + (-(1 - pl.col("u_talk")).log() * _MEAN_TALK_S[direction]).floor().cast(pl.Int64)
    talk = pl.when("night").then(1500 + _floor(pl.col("u_talk"), 3600))
    talk = talk.otherwise(pl.min_horizontal(usual, _MAX_TALK_S))
    increment = _pick(
        _choice(pl.col("u_incr"), [w for _, w in _BILLING_INCREMENTS]),
        [i for i, _ in _BILLING_INCREMENTS],
        pl.Int64(),
    )
    frame = frame.with_columns(
        outcome=outcome,
        ring_s=ring,
        talk_s=pl.when(answered).then(talk).otherwise(0),
        increment=increment,
    ).with_columns(total_s=pl.col("ring_s") + pl.col("talk_s"))
    frame = frame.with_columns(_ended_us=pl.col("_started_us") + pl.col("total_s") * 1_000_000)

    started, ended = pl.col("_started_us"), pl.col("_ended_us")
    if options.overlap:
        frame = frame.filter((started < end_us) & (ended >= start_us))
    else:
        frame = frame.filter((started >= start_us) & (started < end_us))
    return _calls_text(frame, direction, first_id)


def _calls_text(frame: pl.DataFrame, direction: str, first_id: int) -> pl.DataFrame:
    """Drawn calls (uniforms and numbers) as canonical CDR text, one column per source field."""
    outbound = direction == "outbound"
    scenarios = _OUTBOUND_SCENARIOS if outbound else _INBOUND_SCENARIOS
    answered = pl.col("status_i") == _ANSWERED
    frame = frame.with_columns(
        billed_s=(pl.col("talk_s") + pl.col("increment") - 1)
        // pl.col("increment")
        * pl.col("increment"),
        dest=_choice(pl.col("u_dest"), [d[4] for d in _DESTINATIONS]),
        scenario=_choice(pl.col("u_scenario"), [s[-1] for s in scenarios]),
        offset=_choice(pl.col("u_offset"), [o[2] for o in _OFFSETS]),
        clir=pl.col("u_clir") < _CLIR_RATE[direction],
    )

    # Who: the remote party's number (international or national format) and the scenario.
    digits = pl.col("u_digits").mul(1e10).floor().cast(pl.Int64).cast(pl.String).str.zfill(10)
    international = pl.concat_str(
        [
            _pick(pl.col("dest"), [d[1] for d in _DESTINATIONS], pl.String()),
            digits.str.head(_pick(pl.col("dest"), [d[2] for d in _DESTINATIONS], pl.Int64())),
        ]
    )
    national = (
        pl.when(international.str.starts_with("+33"))
        .then(pl.concat_str([pl.lit("0"), international.str.slice(3)]))
        .otherwise(pl.concat_str([pl.lit("00"), international.str.slice(1)]))
    )
    remote = pl.when(pl.col("u_format") < _NATIONAL_FORMAT_RATE).then(national)
    frame = frame.with_columns(remote=remote.otherwise(international))

    if outbound:
        rate = _pick(pl.col("dest"), [d[3] for d in _DESTINATIONS], pl.Int64())
        debit_e4 = pl.when(answered).then(pl.col("billed_s") * rate // 60).otherwise(0)
        credit_e4 = pl.lit(0, dtype=pl.Int64)
        label = _pick(pl.col("dest"), [d[0] for d in _DESTINATIONS], pl.String())
        callee = pl.col("remote")
        caller_number = _pick(pl.col("scenario"), [s[5] for s in scenarios], pl.String())
        caller_name = _pick(pl.col("scenario"), [s[6] for s in scenarios], pl.String())
    else:
        rate = _pick(pl.col("scenario"), [s[7] for s in scenarios], pl.Int64())
        debit_e4 = (
            pl.when(answered & (pl.col("u_bill") < 0.3))
            .then(pl.col("billed_s") * rate // 60)
            .otherwise(0)
        )
        credit_e4 = (
            pl.when(answered & (pl.col("u_bill") >= 0.3) & (pl.col("u_bill") < 0.4))
            .then(pl.col("billed_s") * _INBOUND_CREDIT_RATE_E4 // 60)
            .otherwise(0)
        )
        label = _pick(pl.col("scenario"), [s[6] for s in scenarios], pl.String())
        callee = _pick(pl.col("scenario"), [s[5] for s in scenarios], pl.String())
        caller_number = pl.col("remote")
        caller_name = _pick(
            _choice(pl.col("u_name"), [w for _, w in _CALLER_NAMES]),
            [n for n, _ in _CALLER_NAMES],
            pl.String(),
        )

    # Timestamps: the call's own offset and sub-second part on all three.
    offset_min = _pick(pl.col("offset"), [o[1] for o in _OFFSETS], pl.Int64())
    millis = (pl.col("frac_us") // 1000).cast(pl.String).str.zfill(3)
    micros = pl.col("frac_us").cast(pl.String).str.zfill(6)
    fraction = (
        pl.when(pl.col("frac_kind") == 1)
        .then(pl.concat_str([pl.lit("."), millis]))
        .when(pl.col("frac_kind") == 2)
        .then(pl.concat_str([pl.lit("."), micros]))
        .otherwise(pl.lit(""))
    )
    frame = frame.with_columns(
        _tail=pl.concat_str(
            [fraction, _pick(pl.col("offset"), [o[0] for o in _OFFSETS], pl.String())]
        )
    )

    def stamp(us: pl.Expr) -> pl.Expr:
        local = pl.from_epoch(us + offset_min * 60_000_000, time_unit="us")
        return pl.concat_str([local.dt.strftime("%Y-%m-%dT%H:%M:%S"), pl.col("_tail")])

    started = pl.col("_started_us")
    clir = pl.col("clir")
    return frame.select(
        billingCredit=_cents_text(credit_e4),
        billingDebit=_cents_text(debit_e4),
        billingDestinationLabel=label,
        billingPaymentType=_pick(pl.col("scenario"), [s[4] for s in scenarios], pl.String()),
        callee=callee,
        callerName=pl.when(clir).then(pl.lit("")).otherwise(caller_name),
        callerNumber=pl.when(clir).then(pl.lit("")).otherwise(caller_number),
        callerRestricted=pl.when(clir).then(pl.lit("true")).otherwise(pl.lit("false")),
        callid=(pl.col("seq").cast(pl.Int64) + first_id).cast(pl.String),
        direction=pl.lit(direction),
        durationAnswered=pl.col("talk_s").cast(pl.String),
        durationBilled=pl.when(answered).then(pl.col("billed_s")).otherwise(0).cast(pl.String),
        durationTotal=pl.col("total_s").cast(pl.String),
        started=stamp(started),
        answered=pl.when(answered)
        .then(stamp(started + pl.col("ring_s") * 1_000_000))
        .otherwise(pl.lit("")),
        ended=stamp(pl.col("_ended_us")),
        hangupCause=_pick(pl.col("outcome"), [str(o[1]) for o in _OUTCOMES], pl.String()),
        hangupSource=_pick(pl.col("outcome"), [o[3] for o in _OUTCOMES], pl.String()),
        hangupTech=_pick(pl.col("outcome"), [o[2] for o in _OUTCOMES], pl.String()),
        scenarioName=_pick(pl.col("scenario"), [s[0] for s in scenarios], pl.String()),
        scenarioSid=_pick(pl.col("scenario"), [s[1] for s in scenarios], pl.String()),
        scenarioTypeName=_pick(pl.col("scenario"), [s[2] for s in scenarios], pl.String()),
        scenarioTypeVersion=_pick(pl.col("scenario"), [s[3] for s in scenarios], pl.String()),
        status=_pick(pl.col("status_i"), STATUSES, pl.String()),
        _started_us=started,
        _ended_us=pl.col("_ended_us"),
    )


def _window_calls(
    start_us: int, end_us: int, direction: str, options: SimulationOptions
) -> pl.DataFrame:
    """The valid calls a window's export holds, in start order."""
    day_us = 86_400 * 1_000_000
    # Calls last at most a few hours, so the day before the window holds every carried-over call.
    first = _EPOCH + dt.timedelta(days=start_us // day_us - (1 if options.overlap else 0))
    last = _EPOCH + dt.timedelta(days=(end_us - 1) // day_us)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return pl.concat([_day_calls(d, direction, options, start_us, end_us) for d in days])


def _defect_rows(
    table: pl.DataFrame,
    start_us: int,
    end_us: int,
    window_day: dt.date,
    direction: str,
    rng: random.Random,
) -> tuple[list[tuple[int, int, pl.DataFrame]], dict[str, int]]:
    """Rows to insert as (before which valid row, tie order, row) and their counts by kind."""
    n = table.height
    rows: list[tuple[int, int, pl.DataFrame]] = []

    def at(index: int, before: int, **changes: str) -> tuple[int, int, pl.DataFrame]:
        row = table.slice(index, 1).with_columns(
            **{k: pl.lit(v, pl.String) for k, v in changes.items()}
        )
        return before, len(rows), row

    for sequence, kind in enumerate(DEFECT_KINDS):
        index = rng.randrange(n)
        template = table.row(index, named=True)
        bad_id = call_id(window_day, direction, sequence, extra=True)
        changes = {"callid": str(bad_id)}
        if kind == "started":
            text = template["started"]
            changes["started"] = f"{text[:11]}25{text[13:]}"  # hour 25
        elif kind == "durationTotal":
            changes["durationTotal"] = f"-{int(template['durationTotal']) + 3}"
        elif kind == "billingDebit":
            changes["billingDebit"] = rng.choice(("12.34567", "0.00001", "318.50005"))
        else:
            changes["callid"] = f"{bad_id:.6e}"  # what a spreadsheet makes of an int64
        rows.append(at(index, rng.randrange(n + 1), **changes))

    for _ in range(_DUPLICATES_PER_EXPORT):
        original = rng.randrange(n)
        rows.append(at(original, rng.randrange(original + 1, n + 1)))

    conflicts = 0
    inside = table.with_row_index("_i").filter(
        (pl.col("_started_us") >= start_us) & (pl.col("_ended_us") < end_us)
    )["_i"]
    if len(inside):
        final = int(inside[rng.randrange(len(inside))])
        stale = {f: "" for f in ("answered", "ended", "hangupCause", "hangupSource", "hangupTech")}
        stale |= {f: "0" for f in ("durationAnswered", "durationBilled", "durationTotal")}
        stale |= {"billingCredit": "0", "billingDebit": "0", "status": "ringing"}
        rows.append(at(final, rng.randrange(final + 1), **stale))
        conflicts = 1
    counts = {
        "defect": len(DEFECT_KINDS),
        "duplicate": _DUPLICATES_PER_EXPORT,
        "conflict": conflicts,
    }
    return rows, counts


def _extra_column_values(extras: Sequence[str]) -> list[pl.Expr]:
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


def _write_csv(table: pl.DataFrame, dialect: Dialect) -> bytes:
    """The table (canonical text) written in `dialect`."""
    restricted = pl.col("callerRestricted") == "true"
    if dialect.booleans == "mixed":
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
    else:
        yes, no = dialect.booleans.split("/")
        spelled = pl.when(restricted).then(pl.lit(yes)).otherwise(pl.lit(no))
    table = table.with_columns(callerRestricted=spelled)
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


# --- serving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by the next request (see SimulatorServer.inject).

    Build them with the class methods: `Fault.status(429, retry_after="1")`, `Fault.slow(2.0)`,
    `Fault.slow_body(1.0)`, `Fault.truncate(0.5)`, `Fault.corrupt()`, `Fault.drop()`,
    `Fault.bad_key()`.
    """

    kind: str
    code: int = 0
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 0.0
    fraction: float = 1.0

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: str | None = None,
        retry_after_http_date: dt.datetime | None = None,
        body: str | None = None,
    ) -> "Fault":
        """Answer with HTTP `code` (and a JSON error body unless `body` is given).

        Args:
            code: The HTTP status, e.g. 429 or 503.
            retry_after: A `Retry-After` header value as sent, e.g. `"1"`.
            retry_after_http_date: A `Retry-After` header in HTTP-date form, from this instant.
            body: The response body text instead of the default JSON error.
        """
        if retry_after_http_date is not None:
            retry_after = format_datetime(retry_after_http_date.astimezone(dt.UTC), usegmt=True)
        return cls("status", code=code, retry_after=retry_after, body=body)

    @classmethod
    def slow(cls, seconds: float) -> "Fault":
        """Wait `seconds` before answering normally (to exceed a client's read timeout)."""
        return cls("slow", seconds=seconds)

    @classmethod
    def slow_body(cls, seconds: float) -> "Fault":
        """Answer at once, but spread the body over `seconds` (a slow link)."""
        return cls("slow_body", seconds=seconds)

    @classmethod
    def corrupt(cls) -> "Fault":
        """Send the whole body with 16 bytes in its middle inverted (a broken gzip stream)."""
        return cls("corrupt")

    @classmethod
    def truncate(cls, fraction: float = 0.5) -> "Fault":
        """Announce the full Content-Length, send only `fraction` of the body, then close."""
        if not 0 <= fraction < 1:
            raise ValueError("fraction must be in [0, 1)")
        return cls("truncate", fraction=fraction)

    @classmethod
    def drop(cls) -> "Fault":
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def bad_key(cls) -> "Fault":
        """Answer 401 as if the key were wrong."""
        return cls("bad_key")


@dataclass
class ServedRequest:
    """What the simulator saw and did for one request (never the key).

    Attributes:
        method: HTTP method.
        path: URL path.
        query: Query parameters (last value of each).
        status: Status sent, None if the connection was dropped before answering.
        content_encoding: `gzip` when the body was gzip-encoded, else None.
        body_bytes: Body bytes written on the wire (may be fewer than announced).
        fault: The injected fault's kind that shaped this answer, if any.
        arrived_s: `time.monotonic()` when the request was read.
        finished_s: `time.monotonic()` just before the last bytes of the answer were written
            (set before the client can see the answer complete; None if never answered).
    """

    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    content_encoding: str | None = None
    body_bytes: int = 0
    fault: str | None = None
    arrived_s: float = dataclasses.field(default_factory=time.monotonic)
    finished_s: float | None = None


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up early (curl | head, a timed-out test client) is routine here."""

    def handle_error(self, request: object, client_address: tuple) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.debug("client %s hung up: %s", client_address, error)
            return
        super().handle_error(request, client_address)


class SimulatorServer:
    """The fake Callr export API on a loopback port, in a daemon thread.

    Use as a context manager (or `start()` / `stop()`):

        with SimulatorServer(api_key="sim-key", calls_per_day=500) as sim:
            client = CallrExportClient(sim.base_url, sim.api_key)

    Attributes:
        api_key: The key it accepts, as `x-api-key` or as the HTTP Basic password (with any
            non-empty user, the account SID).
        options: The SimulationOptions its exports are generated with.
        compress: Whether it gzip-encodes exports for clients that accept it.
        cache_dir: Where export bodies are cached as files (`cached_export`); None generates
            every answer afresh.
        requests: ServedRequest of every request, in arrival order.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        compress: bool = True,
        cache_dir: Path | None = None,
        **options: Any,
    ) -> None:
        """Prepare (not start) a simulator.

        Args:
            api_key: The key to accept.
            host: Interface to bind; keep loopback.
            port: TCP port; 0 picks a free one.
            compress: gzip-encode exports for clients that send `Accept-Encoding: gzip`.
            cache_dir: Generate each export body once into this folder and stream it from
                there afterwards (for large exports and benchmarks); None = generate per request.
            **options: SimulationOptions fields (calls_per_day, variety, overlap, defects, seed).
        """
        if not api_key:
            raise ValueError("the simulator needs a non-empty api_key")
        self.api_key = api_key
        self.options = SimulationOptions(**options)
        self.compress = compress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.requests: list[ServedRequest] = []
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._failing_days: dict[dt.date, int] = {}
        self._count = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._httpd else "not started"
        return f"SimulatorServer({where}, api_key='***', options={self.options})"

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server (what CALLR_BASE_URL should be)."""
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def request_count(self) -> int:
        """Requests received so far (any path, any outcome)."""
        with self._lock:
            return self._count

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each following request consumes one, in order."""
        with self._lock:
            self._faults.extend(faults)

    def fail_days(self, *days: dt.date, status: int = 503) -> None:
        """Answer `status` to every export request whose window starts on one of `days` (UTC),
        until `heal_days`: a day the API keeps failing, whatever the retries."""
        with self._lock:
            self._failing_days.update(dict.fromkeys(days, status))

    def heal_days(self) -> None:
        """Stop failing the days `fail_days` named."""
        with self._lock:
            self._failing_days.clear()

    @property
    def pending_faults(self) -> int:
        """Injected faults not consumed yet."""
        with self._lock:
            return len(self._faults)

    def start(self) -> "SimulatorServer":
        """Bind the port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        httpd = _QuietServer((self._host, self._port), _Handler)
        httpd.daemon_threads = True
        httpd.simulator = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"callr-simulator-{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # called by the handler threads
    def _arrive(self, record: ServedRequest) -> Fault | None:
        with self._lock:
            self._count += 1
            self.requests.append(record)
            if self._failing_days:
                try:
                    day = _export_params(record.query)[0].astimezone(dt.UTC).date()
                except ValueError:
                    day = None
                if day in self._failing_days:
                    return Fault.status(self._failing_days[day], body=f"{day} is unavailable")
            return self._faults.popleft() if self._faults else None

    def _authorized(self, headers: Any) -> bool:
        expected = self.api_key.encode()
        given = headers.get("x-api-key")
        if given is not None:
            return hmac.compare_digest(given.encode(), expected)
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(user) and hmac.compare_digest(password.encode(), expected)


class _Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the simulator."""

    protocol_version = "HTTP/1.1"
    server_version = "CallrSimulator/1.0"
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        self._handle()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator %s: %s", self.address_string(), format % args)

    def _handle(self) -> None:
        sim: SimulatorServer = self.server.simulator  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        query = {k: ("***" if v == sim.api_key else v) for k, v in query.items()}
        record = ServedRequest(self.command, url.path, query)
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length):
            self.rfile.read(int(length))
        if "transfer-encoding" in self.headers or not length.isdigit():
            self.close_connection = True  # a body we do not parse: do not reuse the connection
        fault = sim._arrive(record)
        record.fault = fault.kind if fault else None
        try:
            self._answer(sim, record, fault, url.path)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away (e.g. after its timeout)

    def _answer(
        self, sim: SimulatorServer, record: ServedRequest, fault: Fault | None, path: str
    ) -> None:
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.body is not None:
                self._send(record, fault.code, fault.body.encode(), "text/plain", headers)
            else:
                self._error(record, fault.code, HTTPStatus(fault.code).phrase, headers)
            return
        if path.rstrip("/") != EXPORT_PATH:
            self._error(record, 404, f"no such endpoint: {path}")
            return
        if self.command != "POST":
            self._error(record, 405, "use POST", {"Allow": "POST"})
            return
        if (fault is not None and fault.kind == "bad_key") or not sim._authorized(self.headers):
            self._error(record, 401, "invalid or missing API key", {"WWW-Authenticate": "Basic"})
            return
        gzip_encoded = sim.compress and _accepts_gzip(self.headers.get("accept-encoding", ""))
        options = dataclasses.asdict(sim.options)
        body: bytes | Path
        try:
            start, end, direction = _export_params(record.query)
            if sim.cache_dir is None:
                body = generate_export(start, end, direction, **options)
                if gzip_encoded:
                    body = gzip.compress(body, compresslevel=1, mtime=0)
            else:
                with sim._cache_lock:
                    body = cached_export(
                        sim.cache_dir, start, end, direction, gzip_encoded=gzip_encoded, **options
                    )
        except ValueError as exc:
            self._error(record, 400, str(exc))
            return
        headers = {"Content-Disposition": f'attachment; filename="calls-{direction}.csv"'}
        if gzip_encoded:
            headers["Content-Encoding"] = "gzip"
        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        sent = size
        if fault is not None and fault.kind == "truncate":
            sent = int(size * fault.fraction)
            self.close_connection = True
        if fault is not None and fault.kind == "corrupt":
            data = bytearray(body if isinstance(body, bytes) else body.read_bytes())
            middle = len(data) // 2
            data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
            body = bytes(data)
        pace_s = fault.seconds if fault is not None and fault.kind == "slow_body" else 0.0
        self._send(record, 200, body, "text/csv; charset=utf-8", headers, sent=sent, pace_s=pace_s)

    def _error(
        self, record: ServedRequest, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(record, code, body, "application/json", headers or {})

    def _send(
        self,
        record: ServedRequest,
        code: int,
        body: bytes | Path,
        content_type: str,
        headers: dict[str, str],
        sent: int | None = None,
        pace_s: float = 0.0,
    ) -> None:
        """Answer with `body` (bytes, or a file streamed from disk), sending `sent` bytes of it.

        With `pace_s`, the body goes in 20 pieces spread over that many seconds.
        """
        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        sent = size if sent is None else sent
        record.status = code
        record.content_encoding = headers.get("Content-Encoding")
        record.body_bytes = sent
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if pace_s > 0:
            data = body[:sent] if isinstance(body, bytes) else body.read_bytes()[:sent]
            piece = max(1, -(-len(data) // 20))
            for offset in range(0, len(data), piece):
                if offset:
                    time.sleep(pace_s / 20)
                if offset + piece >= len(data):
                    record.finished_s = time.monotonic()
                self.wfile.write(data[offset : offset + piece])
                self.wfile.flush()
        elif isinstance(body, bytes):
            record.finished_s = time.monotonic()
            self.wfile.write(body[:sent])
        else:
            self.wfile.flush()
            record.finished_s = time.monotonic()
            with body.open("rb") as source:
                self.connection.sendfile(source, 0, sent)
        self.wfile.flush()


def _export_params(query: dict[str, str]) -> tuple[dt.datetime, dt.datetime, str]:
    """direction, from and to of an export request, or ValueError saying what is wrong."""
    direction = query.get("direction", "")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be inbound or outbound, got {direction!r}")
    bounds = []
    for name in ("from", "to"):
        text = query.get(name, "")
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} must be an ISO8601 instant, got {text!r}") from None
        bounds.append(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
    if not bounds[0] < bounds[1]:
        raise ValueError(f"from ({query['from']}) must be before to ({query['to']})")
    return bounds[0], bounds[1], direction


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


def serve(host: str, port: int, api_key: str, **options: Any) -> None:
    """Serve the simulator until Ctrl-C or SIGTERM (for `cdr-pipeline simulator --port N`).

    Args:
        host: Interface to bind (keep loopback).
        port: TCP port; 0 picks a free one (logged).
        api_key: The key clients must send.
        **options: SimulationOptions fields.
    """
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimulatorServer(api_key, host, port, **options) as sim:
        logger.info(
            "Callr simulator serving %s%s; point CALLR_BASE_URL at %s (Ctrl-C to stop)",
            sim.base_url,
            EXPORT_PATH,
            sim.base_url,
        )
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    logger.info("Callr simulator stopped")
