"""Timestamps at the edges: poison years, leap seconds, times without an offset.

The export path (`normalize_frames`) and the real-time path (`realtime.prepare_batch` /
`write_batch`) must agree on every value: same instant, same `call_date`, same reject.
"""

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdr_pipeline import realtime
from cdr_pipeline.config import ConfigError, Settings
from cdr_pipeline.landing import LandedEvent
from cdr_pipeline.schema import SOURCE_FIELDS
from cdr_pipeline_tests.support.exports import (
    BASE,
    csv_text,
    export,
    normalize,
    one_reason,
    one_value,
    row,
)
from cdr_pipeline_tests.support.receiver import sample_cdr

UTC = dt.UTC
RECEIVED = dt.datetime(2030, 6, 15, 12, 0, tzinfo=UTC)  # a day no test timestamp falls on


def _realtime(tmp_path: Path, cdrs: list[dict], timezone: str = "UTC", **kw: str):
    """Type `cdrs` as landed webhook events: (calls, rejects) frames."""
    events = [
        LandedEvent(
            seq=i + 1,
            received_at=RECEIVED,
            source="webhook",
            event_type=f"v2.call.{cdr.get('direction', 'inbound')}.ended",
            event_id=f"e{i}",
            callid=str(cdr.get("callid")),
            started=cdr.get("started"),
            cdr_path="data",
            body=json.dumps({"type": "v2.call.inbound.ended", "data": cdr}),
        )
        for i, cdr in enumerate(cdrs)
    ]
    batch = realtime.prepare_batch(events, store_id="s", timezone=timezone, **kw)
    calls, rejects = realtime.write_batch(batch, tmp_path / "staging", timezone=timezone, **kw)
    return pl.concat([pl.read_parquet(p) for p in calls]), pl.concat(
        [pl.read_parquet(p) for p in rejects]
    )


# --- 7. a poison row failed the whole day -----------------------------------------------------


POISON = [
    "0001-01-01T00:00:00+01:00",  # year 0 in UTC
    "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
    "0000-01-01T00:00:00Z",
]


def test_a_timestamp_outside_years_1_to_9999_is_one_reject_and_the_day_loads(tmp_path: Path):
    rows = [row(callid=str(i), started=s) for i, s in enumerate(POISON, start=1)]
    rows.append(row(ended="0000-06-01T00:00:00Z", callid="7"))
    rows.append(row())  # the valid row beside them
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows))])
    assert calls["call_id"].to_list() == [int(BASE["callid"])]
    assert rejects["reason"].to_list() == [
        *[f"started: outside years 0001-9999: '{s}'" for s in POISON],
        "ended: outside years 0001-9999: '0000-06-01T00:00:00Z'",
    ]
    assert stats.max_started_at == calls.item(0, "started_at")


def test_a_call_date_outside_years_1_to_9999_in_the_partition_zone_is_a_reject(tmp_path: Path):
    # Valid in UTC, but on 10000-01-01 in Kiritimati (UTC+14): no such date in the warehouse.
    raw = "9999-12-31T23:00:00Z"
    files = [export(tmp_path, csv_text([row(started=raw), row(callid="2")]))]
    calls, rejects, _ = normalize(files, timezone="Pacific/Kiritimati")
    assert calls["call_id"].to_list() == [2]
    assert rejects["reason"].to_list() == [f"started: outside years 0001-9999: '{raw}'"]


def test_year_edges_are_kept_when_inside_the_range(tmp_path: Path):
    assert one_value(tmp_path, "started", "0001-01-01T00:00:00Z", "started_at") == dt.datetime(
        1, 1, 1, tzinfo=UTC
    )
    assert one_value(tmp_path, "ended", "9999-12-31T23:59:59.999999Z", "ended_at") == dt.datetime(
        9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC
    )


def test_realtime_poison_timestamps_are_rejects_and_the_batch_loads(tmp_path: Path):
    cdrs = [{"callid": i, "direction": "inbound", "started": s} for i, s in enumerate(POISON, 1)]
    cdrs.append({"callid": 99, "direction": "inbound", "started": "2026-11-02T08:00:00Z"})
    calls, rejects = _realtime(tmp_path, cdrs)
    assert calls["call_id"].to_list() == [99]
    assert sorted(rejects["reason"].to_list()) == sorted(
        f"started: outside years 0001-9999: '{s}'" for s in POISON
    )
    # A reject whose `started` has no day in the warehouse is filed under the day received.
    assert set(rejects["call_date"].to_list()) == {RECEIVED.date()}


# --- 8. any minute's second 60 became the next minute; only 23:59:60 UTC is a leap second ------


@pytest.mark.parametrize(
    "raw",
    [
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5Z",
        "2017-01-01T00:59:60+01:00",  # the same leap second, written in UTC+1
        "2016-12-31 23:59:60",  # no offset: UTC
    ],
)
def test_a_leap_second_is_the_last_microsecond_of_its_utc_day(tmp_path: Path, raw: str):
    calls, rejects, _ = normalize([export(tmp_path, csv_text([row(started=raw)]))])
    assert rejects.is_empty(), rejects["reason"].to_list()
    assert calls.item(0, "started_at") == dt.datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert calls.item(0, "call_date") == dt.date(2016, 12, 31)


@pytest.mark.parametrize(
    "raw",
    ["2026-11-02T08:14:60Z", "2026-11-02T23:59:60+01:00", "2026-11-02T12:00:60.9Z"],
)
def test_second_60_outside_a_leap_second_is_rejected(tmp_path: Path, raw: str):
    assert one_reason(tmp_path, started=raw) == (
        f"started: second 60 is only valid as a leap second (23:59:60 UTC): '{raw}'"
    )


def test_realtime_files_a_leap_second_reject_under_its_own_day(tmp_path: Path):
    # Before: Python could not read `:60`, so the reject was filed under the day received.
    cdr = {"callid": 5, "direction": "inbound", "started": "2016-12-31T23:59:60Z"}
    _, rejects = _realtime(tmp_path, [{**cdr, "durationTotal": -1}])
    assert rejects["call_date"].to_list() == [dt.date(2016, 12, 31)]
    calls, _ = _realtime(tmp_path / "ok", [cdr])
    assert calls["call_date"].to_list() == [dt.date(2016, 12, 31)]


# --- 9. a time without an offset was read as UTC, and only a docstring said so -----------------


def test_naive_times_are_utc_by_default(tmp_path: Path):
    assert one_value(tmp_path, "started", "2026-11-02T08:14:09", "started_at") == dt.datetime(
        2026, 11, 2, 8, 14, 9, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-02T08:14:09", dt.datetime(2026, 11, 2, 7, 14, 9, tzinfo=UTC)),  # CET
        ("2026-07-02 08:14:09.5", dt.datetime(2026, 7, 2, 6, 14, 9, 500000, tzinfo=UTC)),  # CEST
        # The hour repeated when clocks go back: its first occurrence (CEST).
        ("2026-10-25T02:30:00", dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # A time with an offset keeps it.
        ("2026-11-02T08:14:09Z", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
    ],
)
def test_naive_times_can_be_read_in_a_chosen_zone(tmp_path: Path, raw: str, expected: dt.datetime):
    files = [export(tmp_path, csv_text([row(started=raw)]))]
    calls, rejects, _ = normalize(files, timezone="Europe/Paris", naive_timezone="Europe/Paris")
    assert rejects.is_empty(), rejects["reason"].to_list()
    expected_date = expected.astimezone(ZoneInfo("Europe/Paris")).date()
    assert calls.select("started_at", "call_date").row(0) == (expected, expected_date)


def test_a_naive_time_skipped_by_a_dst_change_is_rejected(tmp_path: Path):
    files = [export(tmp_path, csv_text([row(started="2026-03-29T02:30:00")]))]
    calls, rejects, _ = normalize(files, naive_timezone="Europe/Paris")
    assert calls.is_empty()
    assert rejects["reason"].to_list() == [
        "started: no such local time in Europe/Paris (skipped by a clock change): "
        "'2026-03-29T02:30:00'"
    ]


def test_naive_timezone_setting(tmp_path: Path):
    assert Settings.from_env({}).naive_timezone == "UTC"
    assert Settings.from_env({"CDR_NAIVE_TIMEZONE": "Europe/Paris"}).naive_timezone == (
        "Europe/Paris"
    )
    with pytest.raises(ConfigError, match="CDR_NAIVE_TIMEZONE"):
        Settings.from_env({"CDR_NAIVE_TIMEZONE": "Mars/Olympus"})


def test_realtime_reads_naive_times_like_the_export(tmp_path: Path):
    cdr = {"callid": 8, "direction": "inbound", "started": "2026-11-02T23:30:00"}
    calls, _ = _realtime(
        tmp_path, [cdr], timezone="Europe/Paris", naive_timezone="America/New_York"
    )
    # 23:30 in New York is 04:30 UTC the next day, 05:30 in Paris.
    assert calls.select("started_at", "call_date").row(0) == (
        dt.datetime(2026, 11, 3, 4, 30, tzinfo=UTC),
        dt.date(2026, 11, 3),
    )
    _, rejects = _realtime(
        tmp_path / "r",
        [{**cdr, "durationTotal": "x"}],
        timezone="Europe/Paris",
        naive_timezone="America/New_York",
    )
    assert rejects["call_date"].to_list() == [dt.date(2026, 11, 3)]


def test_naive_timezone_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The Dagster assets pass no naive zone: CDR_NAIVE_TIMEZONE is read, like every setting.
    monkeypatch.setenv("CDR_NAIVE_TIMEZONE", "Asia/Tokyo")
    assert one_value(tmp_path, "started", "2026-11-02T09:00:00", "started_at") == dt.datetime(
        2026, 11, 2, 0, 0, tzinfo=UTC
    )


# --- properties: any bytes in any field give typed rows or rejects, never a failed day ---------

_ZONES = ["UTC", "Europe/Paris", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/St_Johns"]


@st.composite
def _edge_timestamp(draw: st.DrawFn) -> bytes:
    """Timestamps at every edge: years 0-9999, seconds 00-61, offsets up to ±99:99, or none."""
    year = draw(st.sampled_from([0, 1, 2, 1969, 1970, 2016, 2026, 9998, 9999]))
    month, day = draw(st.sampled_from([(1, 1), (2, 29), (3, 29), (6, 30), (10, 25), (12, 31)]))
    hour, minute = draw(st.sampled_from([(0, 0), (0, 59), (2, 30), (12, 0), (23, 0), (23, 59)]))
    second = draw(st.sampled_from([0, 59, 60, 61]))
    fraction = draw(st.sampled_from(["", ".5", ".999999", ".1234567891", ",25"]))
    offset = draw(
        st.sampled_from(["", "Z", "z", "+01:00", "-01:00", "+14:00", "-12", "+0530", "+99:99"])
    )
    sep = draw(st.sampled_from(["T", " ", "t"]))
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
    return (text + fraction + offset).encode()


_FIELD_BYTES = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
    _edge_timestamp(),
    st.sampled_from([b"", b"1", b"-1", b"12.0", b"true", b"inbound", b"outbound"]),
)


def _quoted_csv(rows: list[dict[str, bytes]]) -> bytes:
    """RFC 4180 bytes with every field quoted, so any bytes (CR, LF, quotes, NUL) fit."""

    def field(value: bytes) -> bytes:
        return b'"' + value.replace(b'"', b'""') + b'"'

    lines = [b",".join(field(f.encode()) for f in SOURCE_FIELDS)]
    lines += [b",".join(field(r[f]) for f in SOURCE_FIELDS) for r in rows]
    return b"\r\n".join(lines) + b"\r\n"


@st.composite
def _mostly_valid_row(draw: st.DrawFn) -> dict[str, bytes]:
    """A valid row with edge timestamps, and up to three fields replaced by any bytes."""
    row = {f: BASE[f].encode() for f in SOURCE_FIELDS}
    for field in ("started", "answered", "ended"):
        row[field] = draw(st.one_of(_edge_timestamp(), st.just(row[field])))
    row["callid"] = str(draw(st.integers(0, 5))).encode()  # ids repeat: duplicates
    row.update(draw(st.dictionaries(st.sampled_from(SOURCE_FIELDS), _FIELD_BYTES, max_size=3)))
    return row


_PROPERTIES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_ANY_ZONES = {"timezone": st.sampled_from(_ZONES), "naive_zone": st.sampled_from(_ZONES)}


@_PROPERTIES
@given(rows=st.lists(_mostly_valid_row(), min_size=1, max_size=8), **_ANY_ZONES)
def test_any_bytes_in_any_field_give_typed_rows_or_rejects(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, bytes]],
    timezone: str,
    naive_zone: str,
):
    tmp_path = tmp_path_factory.mktemp("bytes")
    file = export(tmp_path, _quoted_csv(rows))
    calls, rejects, stats = normalize([file], timezone=timezone, naive_timezone=naive_zone)
    assert stats.raw_rows == len(rows)
    assert stats.typed_rows + stats.rejected_rows + stats.duplicate_rows == len(rows)
    assert rejects["reason"].null_count() == 0
    typed = calls.to_dicts()  # every value converts to Python: years 0001-9999 only
    event(f"typed rows: {len(typed) > 0}, rejects: {len(rejects) > 0}")
    assert all(dt.date(1, 1, 1) <= r["call_date"] <= dt.date(9999, 12, 31) for r in typed)
    assert all(r["started_at"].second < 60 for r in typed)
    assert (stats.min_started_at is None) == (not typed)


@st.composite
def _cdr_value(draw: st.DrawFn) -> object:
    return draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=12),
            _edge_timestamp().map(bytes.decode),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        )
    )


@st.composite
def _mostly_valid_cdr(draw: st.DrawFn) -> dict:
    """A webhook CDR (JSON types) with edge timestamps and up to three fields of any JSON."""
    cdr: dict = sample_cdr(draw(st.integers(0, 5)))
    for field in ("started", "answered", "ended"):
        cdr[field] = draw(st.one_of(_edge_timestamp().map(bytes.decode), st.just(cdr[field])))
    cdr.update(draw(st.dictionaries(st.sampled_from(SOURCE_FIELDS), _cdr_value(), max_size=3)))
    for field in draw(st.sets(st.sampled_from(SOURCE_FIELDS), max_size=2)):
        cdr.pop(field, None)  # webhook payloads may omit fields
    return cdr


@_PROPERTIES
@given(cdrs=st.lists(_mostly_valid_cdr(), min_size=1, max_size=6), **_ANY_ZONES)
def test_any_landed_cdr_gives_typed_rows_or_rejects(
    tmp_path_factory: pytest.TempPathFactory, cdrs: list[dict], timezone: str, naive_zone: str
):
    tmp_path = tmp_path_factory.mktemp("landed")
    events = [
        LandedEvent(i + 1, RECEIVED, "push", None, None, None, None, "cdr", json.dumps({"cdr": c}))
        for i, c in enumerate(cdrs)
    ]
    batch = realtime.prepare_batch(
        events, store_id="s", timezone=timezone, naive_timezone=naive_zone
    )
    calls_files, rejects_files = realtime.write_batch(
        batch, tmp_path, timezone=timezone, naive_timezone=naive_zone
    )
    calls = [r for p in calls_files for r in pl.read_parquet(p).to_dicts()]
    rejects = [r for p in rejects_files for r in pl.read_parquet(p).to_dicts()]
    assert len(calls) + len(rejects) + batch.superseded == len(events)
    assert all(r["reason"] and r["call_date"] for r in rejects)
    event(f"typed rows: {len(calls) > 0}, rejects: {len(rejects) > 0}")
    assert {r["source_row"] for r in rejects} <= {e.seq for e in events}
