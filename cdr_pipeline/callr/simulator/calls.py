"""The synthetic calls: who called whom, when, how it ended and what it cost, as CDR text.

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
- `callid` values are above 2**53 (close to the int64 limit, so a float would change them) and
  unique across days and directions.
"""

import datetime as dt
import random
from dataclasses import dataclass

import polars as pl

from cdr_pipeline.callr.simulator import catalog
from cdr_pipeline.callr.simulator.catalog import DESTINATIONS, OFFSETS, OUTCOMES, STATUSES
from cdr_pipeline.callr.simulator.draws import (
    cents_text,
    choice,
    floor,
    pick,
    seed_of,
    uniforms,
)
from cdr_pipeline.schema import DIRECTIONS

# callid = CALLID_BASE + (day index << 30) + (kind << 29) + (direction << 28) + sequence.
# The base sits above 2**53 and near the int64 limit: any float on the way changes the ids.
CALLID_BASE = 9_007_199_254_740_993_000
MAX_CALLS_PER_DAY = 1 << 28
EPOCH = dt.date(1970, 1, 1)
_MAX_DAY_INDEX = (1 << 16) - 1  # days after 1970-01-01 the id layout can number (until 2149)
_KIND_CALL, _KIND_EXTRA = 0, 1
_DAY_US = 86_400 * 1_000_000

_UNIFORM_COLUMNS = (
    "u_hour", "u_sec", "u_frac_kind", "u_frac", "u_status", "u_outcome", "u_ring", "u_talk",
    "u_incr", "u_dest", "u_digits", "u_format", "u_scenario", "u_name", "u_clir", "u_offset",
    "u_bill",
)  # fmt: skip


@dataclass(frozen=True)
class SimulationOptions:
    """The knobs of the synthetic data (see the `cdr_pipeline.callr.simulator` docstring).

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


def call_id(day: dt.date, direction: str, sequence: int, *, extra: bool = False) -> int:
    """The callid of the `sequence`-th call of `day` and `direction` (0-based, start order).

    `extra=True` numbers the defect rows of the export whose window day is `day`.
    """
    index = (day - EPOCH).days
    if not 0 <= index <= _MAX_DAY_INDEX:
        raise ValueError(f"the simulator numbers calls from 1970-01-01 to 2149-06-05, not {day}")
    kind = _KIND_EXTRA if extra else _KIND_CALL
    return (
        CALLID_BASE + (index << 30) + (kind << 29) + (DIRECTIONS.index(direction) << 28) + sequence
    )


def window_us(start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    """The window's bounds in epoch microseconds, or ValueError if naive or empty."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    if not start < end:
        raise ValueError(f"window start {start.isoformat()} is not before {end.isoformat()}")
    return _epoch_us(start), _epoch_us(end)


def _epoch_us(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def window_day(window_start: dt.datetime) -> dt.date:
    """The UTC date of `window_start + 12 h`: the local day of a daily window within ±12 h."""
    return (window_start.astimezone(dt.UTC) + dt.timedelta(hours=12)).date()


def window_calls(
    start_us: int, end_us: int, direction: str, options: SimulationOptions
) -> pl.DataFrame:
    """The valid calls a window's export holds, in start order."""
    # Calls last at most a few hours, so the day before the window holds every carried-over call.
    first = EPOCH + dt.timedelta(days=start_us // _DAY_US - (1 if options.overlap else 0))
    last = EPOCH + dt.timedelta(days=(end_us - 1) // _DAY_US)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return pl.concat([_day_calls(d, direction, options, start_us, end_us) for d in days])


def _default_volume(day: dt.date, direction: str, rng: random.Random) -> int:
    mean = catalog.WEEKDAY_VOLUME[direction][day.weekday()]
    return round(mean * (0.9 + 0.2 * rng.random()))


def _day_calls(
    day: dt.date, direction: str, options: SimulationOptions, start_us: int, end_us: int
) -> pl.DataFrame:
    """The calls of one UTC day and direction that the window's export holds.

    Every call of the day is drawn (so ids and values never depend on the window), but only
    those the window keeps are formatted as canonical text; `_started_us` and `_ended_us`
    (epoch microseconds) come along for the caller.
    """
    rng = random.Random(seed_of(options.seed, "calls", day.isoformat(), direction))
    n = options.calls_per_day
    if n is None:
        n = _default_volume(day, direction, rng)
    first_id = call_id(day, direction, 0)
    frame = pl.DataFrame({name: uniforms(rng, n) for name in _UNIFORM_COLUMNS})
    frame = _when_started(frame, (day - EPOCH).days * _DAY_US, n)
    frame = _how_it_ended(frame, direction)
    started, ended = pl.col("_started_us"), pl.col("_ended_us")
    if options.overlap:
        frame = frame.filter((started < end_us) & (ended >= start_us))
    else:
        frame = frame.filter((started >= start_us) & (started < end_us))
    return _calls_text(frame, direction, first_id)


def _when_started(frame: pl.DataFrame, day_us: int, n: int) -> pl.DataFrame:
    """Start times, sorted, with a `seq` number: an hour from the profile, a second within it,
    sometimes a sub-second part.

    A few "night owl" calls (on-call support, conferences) start after 23:40 and run past
    midnight, so every day's export carries some calls over from the day before.
    """
    night_owls = min(n // 4, max(2, n // 250))
    night = pl.int_range(pl.len()) < night_owls
    daytime = choice(pl.col("u_hour"), catalog.HOURLY_WEIGHTS) * 3600 + floor(pl.col("u_sec"), 3600)
    late = 23 * 3600 + 2400 + floor(pl.col("u_sec"), 1200)
    frac_kind = choice(pl.col("u_frac_kind"), catalog.FRACTION_WEIGHTS)
    frac_us = (
        pl.when(frac_kind == 1)
        .then(floor(pl.col("u_frac"), 1000) * 1000)
        .when(frac_kind == 2)
        .then(floor(pl.col("u_frac"), 1_000_000))
        .otherwise(0)
    )
    frame = frame.with_columns(
        night=night,
        frac_kind=frac_kind,
        frac_us=frac_us,
        _started_us=day_us + pl.when(night).then(late).otherwise(daytime) * 1_000_000 + frac_us,
    )
    return frame.sort("_started_us", maintain_order=True).with_row_index("seq")


def _how_it_ended(frame: pl.DataFrame, direction: str) -> pl.DataFrame:
    """The status, then a Q.850 outcome among that status's, then durations and `_ended_us`."""
    status = (
        pl.when("night")
        .then(catalog.ANSWERED)
        .otherwise(choice(pl.col("u_status"), catalog.STATUS_WEIGHTS[direction]))
    )
    frame = frame.with_columns(status_i=status)
    outcome = pl.lit(0, dtype=pl.Int64)
    ring = pl.lit(0, dtype=pl.Int64)
    for index, name in enumerate(STATUSES):
        rows = [i for i, o in enumerate(OUTCOMES) if o.status == name]
        picked = rows[0] + choice(pl.col("u_outcome"), [OUTCOMES[i].weight for i in rows])
        is_status = pl.col("status_i") == index
        outcome = pl.when(is_status).then(picked).otherwise(outcome)
        ringing = catalog.RING_S[name]
        ring_s = ringing.minimum + floor(pl.col("u_ring"), ringing.span)
        ring = pl.when(is_status).then(ring_s).otherwise(ring)
    answered = pl.col("status_i") == catalog.ANSWERED
    mean_talk_s = catalog.MEAN_TALK_S[direction]
    usual = 1 + (-(1 - pl.col("u_talk")).log() * mean_talk_s).floor().cast(pl.Int64)
    talk = (
        pl.when("night")
        .then(1500 + floor(pl.col("u_talk"), 3600))
        .otherwise(pl.min_horizontal(usual, catalog.MAX_TALK_S))
    )
    increments = catalog.BILLING_INCREMENTS
    increment = pick(
        choice(pl.col("u_incr"), [i.weight for i in increments]),
        [i.seconds for i in increments],
        pl.Int64(),
    )
    frame = frame.with_columns(
        outcome=outcome,
        ring_s=ring,
        talk_s=pl.when(answered).then(talk).otherwise(0),
        increment=increment,
    ).with_columns(total_s=pl.col("ring_s") + pl.col("talk_s"))
    return frame.with_columns(_ended_us=pl.col("_started_us") + pl.col("total_s") * 1_000_000)


def _calls_text(frame: pl.DataFrame, direction: str, first_id: int) -> pl.DataFrame:
    """Drawn calls (uniforms and numbers) as canonical CDR text, one column per source field."""
    outbound = direction == "outbound"
    scenarios = catalog.OUTBOUND_SCENARIOS if outbound else catalog.INBOUND_SCENARIOS
    answered = pl.col("status_i") == catalog.ANSWERED
    frame = frame.with_columns(
        billed_s=(pl.col("talk_s") + pl.col("increment") - 1)
        // pl.col("increment")
        * pl.col("increment"),
        dest=choice(pl.col("u_dest"), [d.weight for d in DESTINATIONS]),
        scenario=choice(pl.col("u_scenario"), [s.weight for s in scenarios]),
        offset=choice(pl.col("u_offset"), [o.weight for o in OFFSETS]),
        clir=pl.col("u_clir") < catalog.CLIR_RATE[direction],
    )
    frame = frame.with_columns(remote=_remote_number())
    parties = _outbound_parties(answered) if outbound else _inbound_parties(answered)
    frame = frame.with_columns(_tail=_timestamp_tail())
    scenario = pl.col("scenario")
    started = pl.col("_started_us")
    clir = pl.col("clir")
    return frame.select(
        billingCredit=cents_text(parties.credit_e4),
        billingDebit=cents_text(parties.debit_e4),
        billingDestinationLabel=parties.label,
        billingPaymentType=pick(scenario, [s.payment_type for s in scenarios], pl.String()),
        callee=parties.callee,
        callerName=pl.when(clir).then(pl.lit("")).otherwise(parties.caller_name),
        callerNumber=pl.when(clir).then(pl.lit("")).otherwise(parties.caller_number),
        callerRestricted=pl.when(clir).then(pl.lit("true")).otherwise(pl.lit("false")),
        callid=(pl.col("seq").cast(pl.Int64) + first_id).cast(pl.String),
        direction=pl.lit(direction),
        durationAnswered=pl.col("talk_s").cast(pl.String),
        durationBilled=pl.when(answered).then(pl.col("billed_s")).otherwise(0).cast(pl.String),
        durationTotal=pl.col("total_s").cast(pl.String),
        started=_stamp(started),
        answered=pl.when(answered)
        .then(_stamp(started + pl.col("ring_s") * 1_000_000))
        .otherwise(pl.lit("")),
        ended=_stamp(pl.col("_ended_us")),
        hangupCause=pick(pl.col("outcome"), [str(o.hangup_cause) for o in OUTCOMES], pl.String()),
        hangupSource=pick(pl.col("outcome"), [o.hangup_source for o in OUTCOMES], pl.String()),
        hangupTech=pick(pl.col("outcome"), [o.hangup_tech for o in OUTCOMES], pl.String()),
        scenarioName=pick(scenario, [s.name for s in scenarios], pl.String()),
        scenarioSid=pick(scenario, [s.sid for s in scenarios], pl.String()),
        scenarioTypeName=pick(scenario, [s.type_name for s in scenarios], pl.String()),
        scenarioTypeVersion=pick(scenario, [s.type_version for s in scenarios], pl.String()),
        status=pick(pl.col("status_i"), STATUSES, pl.String()),
        _started_us=started,
        _ended_us=pl.col("_ended_us"),
    )


def _remote_number() -> pl.Expr:
    """The remote party's number, in international or (sometimes) national format."""
    digits = pl.col("u_digits").mul(1e10).floor().cast(pl.Int64).cast(pl.String).str.zfill(10)
    destination = pl.col("dest")
    international = pl.concat_str(
        [
            pick(destination, [d.prefix for d in DESTINATIONS], pl.String()),
            digits.str.head(pick(destination, [d.digits for d in DESTINATIONS], pl.Int64())),
        ]
    )
    national = (
        pl.when(international.str.starts_with("+33"))
        .then(pl.concat_str([pl.lit("0"), international.str.slice(3)]))
        .otherwise(pl.concat_str([pl.lit("00"), international.str.slice(1)]))
    )
    remote = pl.when(pl.col("u_format") < catalog.NATIONAL_FORMAT_RATE).then(national)
    return remote.otherwise(international)


@dataclass(frozen=True)
class _Parties:
    """Who called whom and the money, as expressions (they differ by direction)."""

    debit_e4: pl.Expr
    credit_e4: pl.Expr
    label: pl.Expr
    callee: pl.Expr
    caller_number: pl.Expr
    caller_name: pl.Expr


def _outbound_parties(answered: pl.Expr) -> _Parties:
    scenarios = catalog.OUTBOUND_SCENARIOS
    destination, scenario = pl.col("dest"), pl.col("scenario")
    rate = pick(destination, [d.rate_e4 for d in DESTINATIONS], pl.Int64())
    return _Parties(
        debit_e4=pl.when(answered).then(pl.col("billed_s") * rate // 60).otherwise(0),
        credit_e4=pl.lit(0, dtype=pl.Int64),
        label=pick(destination, [d.label for d in DESTINATIONS], pl.String()),
        callee=pl.col("remote"),
        caller_number=pick(scenario, [s.caller_number for s in scenarios], pl.String()),
        caller_name=pick(scenario, [s.caller_name for s in scenarios], pl.String()),
    )


def _inbound_parties(answered: pl.Expr) -> _Parties:
    scenarios = catalog.INBOUND_SCENARIOS
    scenario, bill = pl.col("scenario"), pl.col("u_bill")
    rate = pick(scenario, [s.rate_e4 for s in scenarios], pl.Int64())
    names = catalog.CALLER_NAMES
    return _Parties(
        debit_e4=pl.when(answered & (bill < 0.3))
        .then(pl.col("billed_s") * rate // 60)
        .otherwise(0),
        credit_e4=pl.when(answered & (bill >= 0.3) & (bill < 0.4))
        .then(pl.col("billed_s") * catalog.INBOUND_CREDIT_RATE_E4 // 60)
        .otherwise(0),
        label=pick(scenario, [s.label for s in scenarios], pl.String()),
        callee=pick(scenario, [s.number for s in scenarios], pl.String()),
        caller_number=pl.col("remote"),
        caller_name=pick(
            choice(pl.col("u_name"), [n.weight for n in names]),
            [n.name for n in names],
            pl.String(),
        ),
    )


def _timestamp_tail() -> pl.Expr:
    """The sub-second part and UTC offset all three timestamps of a call end with."""
    millis = (pl.col("frac_us") // 1000).cast(pl.String).str.zfill(3)
    micros = pl.col("frac_us").cast(pl.String).str.zfill(6)
    fraction = (
        pl.when(pl.col("frac_kind") == 1)
        .then(pl.concat_str([pl.lit("."), millis]))
        .when(pl.col("frac_kind") == 2)
        .then(pl.concat_str([pl.lit("."), micros]))
        .otherwise(pl.lit(""))
    )
    suffix = pick(pl.col("offset"), [o.suffix for o in OFFSETS], pl.String())
    return pl.concat_str([fraction, suffix])


def _stamp(us: pl.Expr) -> pl.Expr:
    """Epoch microseconds as local time in the call's offset, with the call's tail."""
    offset_min = pick(pl.col("offset"), [o.minutes for o in OFFSETS], pl.Int64())
    local = pl.from_epoch(us + offset_min * 60_000_000, time_unit="us")
    return pl.concat_str([local.dt.strftime("%Y-%m-%dT%H:%M:%S"), pl.col("_tail")])
