"""Tests for the CSV normaliser: contract sections 1 and 4, PL style (inline CSV -> frame)."""

import csv
import datetime as dt
import io
import json
import random
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cdr_pipeline import normalize as normalize_module
from cdr_pipeline import q850
from cdr_pipeline.callr.simulator import simulate_export
from cdr_pipeline.config import ConfigError, day_window
from cdr_pipeline.normalize import (
    DuplicateColumnsError,
    ExportFile,
    MissingColumnsError,
    NormalizeStats,
    count_csv_rows,
    header_mapping,
    normalize_exports,
    write_normalized,
)
from cdr_pipeline.schema import (
    CALL_COLUMNS,
    ROW_KEY_FIELDS,
    SOURCE_FIELDS,
)
from cdr_pipeline_tests.support import paths
from cdr_pipeline_tests.support.exports import (
    BASE,
    BASE_CALL,
    DAY,
    UTC,
    call,
    calls_frame,
    csv_text,
    export,
    normalize,
    one_reason,
    one_value,
    rejects_frame,
    row,
    write_rows,
)

DATA = paths.TEST_DATA


# --- the contract's sample -------------------------------------------------------------------


def test_sample_export(tmp_path: Path) -> None:
    files = [ExportFile(DATA / "callr_export_sample.csv", "outbound")]
    calls, rejects, stats = normalize(files, timezone="Europe/Paris")
    expected = calls_frame(
        [
            call(),
            call(
                call_id=884412308,
                status="failed",
                callee="+33639980043",
                started_at=dt.datetime(2026, 11, 2, 8, 20, tzinfo=UTC),
                answered_at=None,
                ended_at=dt.datetime(2026, 11, 2, 8, 20, 31, tzinfo=UTC),
                duration_total_s=31,
                duration_answered_s=0,
                duration_billed_s=0,
                billing_debit=Decimal("0"),
                hangup_cause=19,
                hangup_cause_name="No answer from user (user alerted)",
                hangup_source="system",
                hangup_tech="SIP 480",
            ),
            call(
                call_id=884412309,
                direction="inbound",
                caller_number=None,
                caller_name=None,
                caller_restricted=True,
                callee="+33184880001",
                started_at=dt.datetime(2026, 11, 2, 8, 1, 12, tzinfo=UTC),
                answered_at=dt.datetime(2026, 11, 2, 8, 1, 19, tzinfo=UTC),
                ended_at=dt.datetime(2026, 11, 2, 8, 2, 54, tzinfo=UTC),
                duration_total_s=102,
                duration_answered_s=95,
                duration_billed_s=95,
                billing_debit=Decimal("0.1275"),
                billing_destination_label="France - Fixed",
                billing_payment_type="prepaid",
                hangup_source="caller",
                scenario_name="Support, level 1",
                scenario_sid="z1x8c3",
            ),
            call(
                call_id=884412310,
                direction="inbound",
                status="busy",
                caller_number="+447700900456",
                caller_name='O\'Neil, "Pat"',
                callee="+447700900123",
                started_at=dt.datetime(2026, 11, 2, 10, 44, tzinfo=UTC),
                answered_at=None,
                ended_at=dt.datetime(2026, 11, 2, 10, 44, 6, tzinfo=UTC),
                duration_total_s=6,
                duration_answered_s=0,
                duration_billed_s=0,
                billing_debit=Decimal("0"),
                billing_destination_label="United Kingdom - Mobile",
                hangup_cause=17,
                hangup_cause_name="User busy",
                hangup_tech="SIP 486",
                scenario_name="Support, level 1",
                scenario_sid="z1x8c3",
            ),
        ]
    )
    assert_frame_equal(calls, expected)
    assert rejects.is_empty()
    assert stats == NormalizeStats(
        raw_rows=4,
        typed_rows=4,
        rejected_rows=0,
        duplicate_rows=0,
        unknown_columns=(),
        min_started_at=dt.datetime(2026, 11, 2, 8, 1, 12, tzinfo=UTC),
        max_started_at=dt.datetime(2026, 11, 2, 10, 44, tzinfo=UTC),
    )


# --- reading: encodings, line ends, quoting, headers ------------------------------------------


def test_bom_crlf_and_quoted_commas_quotes_newlines(tmp_path: Path) -> None:
    tricky = row(
        callerName='Dupont, "Jo"\r\nline two',
        scenarioName="a,b\nc",
        billingDestinationLabel='"quoted"',
    )
    content = b"\xef\xbb\xbf" + csv_text([tricky], lineterminator="\r\n").encode()
    calls, _, _ = normalize([export(tmp_path, content)])
    expected = calls_frame(
        [
            call(
                caller_name='Dupont, "Jo"\r\nline two',
                scenario_name="a,b\nc",
                billing_destination_label='"quoted"',
            )
        ]
    )
    assert_frame_equal(calls, expected)


def test_hand_written_rfc4180(tmp_path: Path) -> None:
    header = ",".join(SOURCE_FIELDS)
    values = [BASE[f] for f in SOURCE_FIELDS]
    values[SOURCE_FIELDS.index("callerName")] = '"multi\nline, ""quoted"""'
    content = f"{header}\r\n{','.join(values)}\r\n"
    calls, _, _ = normalize([export(tmp_path, content)])
    assert calls["caller_name"].to_list() == ['multi\nline, "quoted"']


def _header_variants() -> dict[str, list[str]]:
    snake = [
        "billing_credit", "billing_debit", "billing_destination_label", "billing_payment_type",
        "callee", "caller_name", "caller_number", "caller_restricted", "callid", "direction",
        "duration_answered", "duration_billed", "duration_total", "started", "answered",
        "ended", "hangup_cause", "hangup_source", "hangup_tech", "scenario_name",
        "scenario_sid", "scenario_type_name", "scenario_type_version", "status",
    ]  # fmt: skip
    shuffled = list(SOURCE_FIELDS)
    random.Random(7).shuffle(shuffled)
    return {
        "camelCase": list(SOURCE_FIELDS),
        "snake_case": snake,
        "UPPER": [f.upper() for f in SOURCE_FIELDS],
        "Snake_Upper": [s.upper() for s in snake],
        "kebab with spaces": [f" {s.replace('_', '-')} " for s in snake],
        "shuffled": shuffled,
    }


@pytest.mark.parametrize("style", list(_header_variants()))
def test_header_styles_and_column_order(tmp_path: Path, style: str) -> None:
    header = _header_variants()[style]
    by_key = {f.lower(): f for f in SOURCE_FIELDS}
    fields = [by_key[h.strip().lower().replace("_", "").replace("-", "")] for h in header]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerow([BASE[f] for f in fields])
    calls, _, stats = normalize([export(tmp_path, out.getvalue())])
    assert_frame_equal(calls, calls_frame([call()]))
    assert stats.unknown_columns == ()


def test_header_mapping() -> None:
    mapping, unknown = header_mapping(["CALLID", "caller_number", "Hangup-Cause", "extra", "x_y"])
    assert mapping == {
        "CALLID": "callid",
        "caller_number": "callerNumber",
        "Hangup-Cause": "hangupCause",
    }
    assert unknown == ("extra", "x_y")


def test_two_columns_for_one_field_is_an_error(tmp_path: Path) -> None:
    header = [*SOURCE_FIELDS, "call_id"]
    file = export(tmp_path, csv_text([row(call_id="1")], header))
    with pytest.raises(DuplicateColumnsError, match=r"'callid' and 'call_id'.*'callid'"):
        normalize_exports([file], partition_date=DAY, timezone="UTC")


_HEADER_LINE = ",".join(SOURCE_FIELDS).encode()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="0-byte"),
        pytest.param(b"\xef\xbb\xbf", id="bom-only"),
        pytest.param(b"\n", id="newline-only"),
        pytest.param(b"  \r\n", id="whitespace"),
        pytest.param(_HEADER_LINE, id="header-no-eol"),
        pytest.param(_HEADER_LINE + b"\r\n", id="header-crlf"),
        pytest.param(b"\xef\xbb\xbf" + _HEADER_LINE + b"\n", id="bom-header"),
    ],
)
def test_empty_and_header_only_files_are_empty_days(tmp_path: Path, content: bytes) -> None:
    file = export(tmp_path, content)
    calls, rejects, stats = normalize([file])
    assert_frame_equal(calls, calls_frame([]))
    assert_frame_equal(rejects, rejects_frame([]))
    assert stats == NormalizeStats(0, 0, 0, 0, (), None, None)
    assert count_csv_rows(file.path) == 0


def test_empty_file_next_to_a_full_one(tmp_path: Path) -> None:
    files = [export(tmp_path, b"", "inbound"), export(tmp_path, csv_text([row()]), "outbound")]
    calls, _, stats = normalize(files)
    assert_frame_equal(calls, calls_frame([call()]))
    assert stats.raw_rows == 1


def test_unknown_columns_are_reported_and_ignored(tmp_path: Path) -> None:
    header = ["recordingUrl", *SOURCE_FIELDS, "tags"]
    rows = [row(recordingUrl="https://x/1.mp3", tags="a,b")]
    calls, _, stats = normalize([export(tmp_path, csv_text(rows, header))])
    assert_frame_equal(calls, calls_frame([call()]))
    assert stats.unknown_columns == ("recordingUrl", "tags")


@pytest.mark.parametrize("missing", ["callid", "hangupCause", "callerNumber"])
def test_missing_required_column_names_it(tmp_path: Path, missing: str) -> None:
    header = [f for f in SOURCE_FIELDS if f != missing]
    file = export(tmp_path, csv_text([row()], header), name="outbound.csv")
    with pytest.raises(MissingColumnsError, match=rf"outbound\.csv.*{missing}"):
        normalize_exports([file], partition_date=DAY, timezone="UTC")


def test_header_only_file_missing_a_column_is_still_an_error(tmp_path: Path) -> None:
    file = export(tmp_path, "callid,direction\n")
    with pytest.raises(MissingColumnsError, match="started"):
        normalize_exports([file], partition_date=DAY, timezone="UTC")


def test_row_key_fields_only_leave_the_rest_null(tmp_path: Path) -> None:
    header = list(ROW_KEY_FIELDS)
    file = export(tmp_path, csv_text([row()], header))
    calls, _, _ = normalize([file], required_fields=ROW_KEY_FIELDS, source="webhook")
    typed = {c.name: None for c in CALL_COLUMNS}
    typed.update(
        call_id=884412307,
        call_date=DAY,
        direction="outbound",
        started_at=BASE_CALL["started_at"],
        source="webhook",
    )
    assert_frame_equal(calls, calls_frame([typed]))


def test_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDR_TIMEZONE"):
        normalize_exports([], partition_date=DAY, timezone="Mars/Olympus")


# --- typing rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("884412307", 884412307),
        ("9007199254740993", 9007199254740993),  # 2^53 + 1: not representable as a float
        ("9223372036854775807", 9223372036854775807),
        (" 42 ", 42),
        ("+7", 7),
        ("-7", -7),
        ("007", 7),
    ],
)
def test_callid_is_exact_int64(tmp_path: Path, raw: str, expected: int) -> None:
    assert one_value(tmp_path, "callid", raw, "call_id") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "callid: missing"),
        ("  ", "callid: missing"),
        ("12.0", "callid: not an int64: '12.0'"),
        ("1e5", "callid: not an int64: '1e5'"),
        ("abc", "callid: not an int64: 'abc'"),
        ("0x1F", "callid: not an int64: '0x1F'"),
        ("9223372036854775808", "callid: not an int64: '9223372036854775808'"),
    ],
)
def test_callid_rejects(tmp_path: Path, raw: str, reason: str) -> None:
    assert one_reason(tmp_path, callid=raw) == reason


def test_phone_numbers_and_labels_stay_text(tmp_path: Path) -> None:
    rows = [
        row(callid="1", callee="0033612345678", callerNumber="+33184880001", scenarioSid="007"),
        row(callid="2", callee="0612345678", callerNumber="", scenarioTypeVersion="2.10"),
    ]
    calls, _, _ = normalize([export(tmp_path, csv_text(rows))])
    expected = calls_frame(
        [
            call(call_id=1, callee="0033612345678", scenario_sid="007"),
            call(call_id=2, callee="0612345678", caller_number=None, scenario_type_version="2.10"),
        ]
    )
    assert_frame_equal(calls, expected)


def test_text_is_verbatim_and_empty_is_null(tmp_path: Path) -> None:
    rows = [row(callerName="  Ann  ", hangupTech="", scenarioName=" ")]
    calls, _, _ = normalize([export(tmp_path, csv_text(rows))])
    expected = calls_frame([call(caller_name="  Ann  ", hangup_tech=None, scenario_name=" ")])
    assert_frame_equal(calls, expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-02T08:14:09Z", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T08:14:09z", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T08:14:09", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02 08:14:09", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T09:14:09+01:00", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T09:14:09+0100", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T09:14:09+01", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T02:44:09-05:30", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T00:14:09-08:00", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
        ("2026-11-02T08:14:09.5Z", dt.datetime(2026, 11, 2, 8, 14, 9, 500000, tzinfo=UTC)),
        ("2026-11-02T08:14:09,25Z", dt.datetime(2026, 11, 2, 8, 14, 9, 250000, tzinfo=UTC)),
        ("2026-11-02T08:14:09.123456Z", dt.datetime(2026, 11, 2, 8, 14, 9, 123456, tzinfo=UTC)),
        (  # beyond microseconds: truncated
            "2026-11-02T09:14:09.123456789+01:00",
            dt.datetime(2026, 11, 2, 8, 14, 9, 123456, tzinfo=UTC),
        ),
        (" 2026-11-02T08:14:09Z ", dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC)),
    ],
)
def test_timestamps_parse_with_their_offset(
    tmp_path: Path, raw: str, expected: dt.datetime
) -> None:
    assert one_value(tmp_path, "started", raw, "started_at") == expected


def test_missing_started_is_rejected(tmp_path: Path) -> None:
    assert one_reason(tmp_path, started=" ") == "started: missing"


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("started", "2026-13-45T08:14:09Z"),
        ("started", "2026-11-02"),
        ("started", "yesterday"),
        ("started", "2026-11-02T08:14:09+25:00"),
        ("started", "1793520000"),
        ("started", "2026-11-02T08:14Z"),
        ("answered", "soon"),
        ("ended", "2026-11-02T24:00:01Z"),
    ],
)
def test_timestamp_rejects(tmp_path: Path, field: str, raw: str) -> None:
    assert one_reason(tmp_path, **{field: raw}) == f"{field}: not an ISO8601 timestamp: '{raw}'"


def test_empty_answered_and_ended_are_null(tmp_path: Path) -> None:
    calls, _, _ = normalize([export(tmp_path, csv_text([row(answered="", ended="")]))])
    assert_frame_equal(calls, calls_frame([call(answered_at=None, ended_at=None)]))


@pytest.mark.parametrize(
    ("started", "timezone", "call_date"),
    [
        ("2026-11-02T23:30:00Z", "UTC", dt.date(2026, 11, 2)),
        ("2026-11-02T23:30:00Z", "Europe/Paris", dt.date(2026, 11, 3)),
        ("2026-11-02T03:00:00Z", "America/New_York", dt.date(2026, 11, 1)),
        ("2026-11-03T00:30:00+01:00", "UTC", dt.date(2026, 11, 2)),
    ],
)
def test_call_date_is_the_local_date_of_started(
    tmp_path: Path, started: str, timezone: str, call_date: dt.date
) -> None:
    calls, _, _ = normalize([export(tmp_path, csv_text([row(started=started)]))], timezone=timezone)
    assert calls["call_date"].to_list() == [call_date]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("0", 0),
        ("+5", 5),
        ("007", 7),
        ("2147483647", 2147483647),
    ],
)
def test_durations(tmp_path: Path, raw: str, expected: int | None) -> None:
    assert one_value(tmp_path, "durationTotal", raw, "duration_total_s") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("-1", "durationTotal: negative: '-1'"),
        ("1.5", "durationTotal: not an integer: '1.5'"),
        ("12.0", "durationTotal: not an integer: '12.0'"),
        ("abc", "durationTotal: not an integer: 'abc'"),
        ("2147483648", "durationTotal: out of INTEGER range: '2147483648'"),
    ],
)
def test_duration_rejects(tmp_path: Path, raw: str, reason: str) -> None:
    assert one_reason(tmp_path, durationTotal=raw) == reason


@pytest.mark.parametrize(
    ("cents", "units"),
    [
        ("0", "0"),
        ("318", "3.18"),
        ("12.7", "0.127"),  # 1 fractional cent digit
        ("12.75", "0.1275"),  # 2
        ("12.755", "0.12755"),  # 3
        ("12.7555", "0.127555"),  # 4
        ("0.0001", "0.000001"),
        ("-3", "-0.03"),
        ("+5", "0.05"),
        (".5", "0.005"),
        ("5.", "0.05"),
        ("007", "0.07"),
        (" 1 ", "0.01"),
        ("99999999999999.9999", "999999999999.999999"),  # DECIMAL(18,6) maximum
    ],
)
def test_money_cents_to_units_exactly(tmp_path: Path, cents: str, units: str) -> None:
    value = one_value(tmp_path, "billingDebit", cents, "billing_debit")
    assert value == Decimal(units)
    assert value == Decimal(cents.strip()) / 100


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1.23456", "billingDebit: more than 4 fractional digits of a cent: '1.23456'"),
        ("0.00001", "billingDebit: more than 4 fractional digits of a cent: '0.00001'"),
        ("1e5", "billingDebit: not a decimal number: '1e5'"),
        ("abc", "billingDebit: not a decimal number: 'abc'"),
        ("12,75", "billingDebit: not a decimal number: '12,75'"),
        (".", "billingDebit: not a decimal number: '.'"),
        ("NaN", "billingDebit: not a decimal number: 'NaN'"),
        ("100000000000000", "billingDebit: out of DECIMAL(18,6) range: '100000000000000'"),
    ],
)
def test_money_rejects(tmp_path: Path, raw: str, reason: str) -> None:
    assert one_reason(tmp_path, billingDebit=raw) == reason


def test_empty_money_is_null(tmp_path: Path) -> None:
    calls, _, _ = normalize([export(tmp_path, csv_text([row(billingDebit="", billingCredit="")]))])
    assert_frame_equal(calls, calls_frame([call(billing_debit=None, billing_credit=None)]))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True), ("TRUE", True), ("True", True), ("1", True), ("yes", True), ("YES", True),
        ("false", False), ("False", False), ("0", False), ("no", False), ("No", False),
        ("", None),
    ],
)  # fmt: skip
def test_booleans(tmp_path: Path, raw: str, expected: bool | None) -> None:
    assert one_value(tmp_path, "callerRestricted", raw, "caller_restricted") is expected


@pytest.mark.parametrize("raw", ["maybe", "t", "2", "y", "on"])
def test_boolean_rejects(tmp_path: Path, raw: str) -> None:
    reason = one_reason(tmp_path, callerRestricted=raw)
    assert reason == f"callerRestricted: not a boolean (true/false/1/0/yes/no): '{raw}'"


def test_enums_are_lower_cased_and_unknown_values_kept(tmp_path: Path) -> None:
    rows = [
        row(
            direction=" INBOUND ",
            status="Answered",
            billingPaymentType="PrePaid",
            hangupSource="CALLER",
        ),
        row(callid="2", status="on-hold", billingPaymentType="", hangupSource="network"),
    ]
    calls, _, _ = normalize([export(tmp_path, csv_text(rows))])
    expected = calls_frame(
        [
            call(
                direction="inbound",
                status="answered",
                billing_payment_type="prepaid",
                hangup_source="caller",
            ),
            call(call_id=2, status="on-hold", billing_payment_type=None, hangup_source="network"),
        ]
    )
    assert_frame_equal(calls, expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("", "direction: missing"), ("sideways", "direction: not inbound/outbound: 'sideways'")],
)
def test_direction_rejects(tmp_path: Path, raw: str, reason: str) -> None:
    assert one_reason(tmp_path, direction=raw) == reason


@pytest.mark.parametrize(
    ("raw", "code", "name", "cause_class"),
    [
        ("16", 16, "Normal call clearing", "normal event"),
        ("34", 34, "No circuit/channel available", "resource unavailable"),
        ("127", 127, "Interworking, unspecified", "interworking"),
        ("0", 0, q850.UNKNOWN_CAUSE_NAME, "normal event"),
        ("54", 54, q850.UNKNOWN_CAUSE_NAME, "service or option not available"),
        ("999", 999, q850.UNKNOWN_CAUSE_NAME, q850.UNKNOWN_CLASS),
        ("-1", -1, q850.UNKNOWN_CAUSE_NAME, q850.UNKNOWN_CLASS),
        ("32767", 32767, q850.UNKNOWN_CAUSE_NAME, q850.UNKNOWN_CLASS),
        ("", None, None, None),
    ],
)
def test_hangup_cause_named_from_q850(
    tmp_path: Path, raw: str, code: int | None, name: str | None, cause_class: str | None
) -> None:
    calls, _, _ = normalize([export(tmp_path, csv_text([row(hangupCause=raw)]))])
    expected = calls_frame(
        [call(hangup_cause=code, hangup_cause_name=name, hangup_cause_class=cause_class)]
    )
    assert_frame_equal(calls, expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("40000", "hangupCause: out of SMALLINT range: '40000'"),
        ("-32769", "hangupCause: out of SMALLINT range: '-32769'"),
        ("16.0", "hangupCause: not an integer: '16.0'"),
        ("busy", "hangupCause: not an integer: 'busy'"),
    ],
)
def test_hangup_cause_rejects(tmp_path: Path, raw: str, reason: str) -> None:
    assert one_reason(tmp_path, hangupCause=raw) == reason


# --- rejects ---------------------------------------------------------------------------------


def test_every_failing_field_is_named(tmp_path: Path) -> None:
    reason = one_reason(
        tmp_path, callid="x1", started="", durationBilled="-3", billingCredit="1.000001"
    )
    assert reason == (
        "callid: not an int64: 'x1'; started: missing; durationBilled: negative: '-3'; "
        "billingCredit: more than 4 fractional digits of a cent: '1.000001'"
    )


def test_long_and_multiline_values_are_shortened_in_reasons(tmp_path: Path) -> None:
    reason = one_reason(tmp_path, callid="a\nb" + "x" * 100)
    assert reason == "callid: not an int64: 'a\\nb" + "x" * 56 + "…'"


def test_reject_row_carries_partition_direction_row_and_raw(tmp_path: Path) -> None:
    header = [*SOURCE_FIELDS, "note"]
    rows = [
        row(callid="1", callerName="two\nlines", note="n1"),
        row(callid="oops", direction="outbound", note='say "hi"'),
    ]
    file = export(tmp_path, csv_text(rows, header), direction="inbound")
    _, rejects, _ = normalize([file])
    raw = {h: rows[1][h] for h in header}
    expected = rejects_frame(
        [
            {
                "call_date": DAY,
                "direction": "inbound",  # the direction the file was requested for
                "source_row": 2,  # data records, not lines: row 1 spans two lines
                "raw": json.dumps(raw, separators=(",", ":"), ensure_ascii=False),
                "reason": "callid: not an int64: 'oops'",
                "source": "export",
            }
        ]
    )
    assert_frame_equal(rejects, expected)
    assert json.loads(rejects.item(0, "raw")) == raw


def test_blank_lines_and_empty_rows_are_rejected(tmp_path: Path) -> None:
    header, first = csv_text([row(callid="1")]).splitlines()
    _, second = csv_text([row(callid="2")]).splitlines()
    content = "\n".join([header, first, "", "," * 23, second]) + "\n"
    calls, rejects, stats = normalize([export(tmp_path, content)])
    assert calls["call_id"].to_list() == [1, 2]
    assert rejects.select("source_row", "reason").rows() == [
        (2, "empty row: every field is empty"),
        (3, "empty row: every field is empty"),
    ]
    assert stats.raw_rows == 4


def test_rows_with_fewer_fields_have_empty_trailing_fields(tmp_path: Path) -> None:
    header = ",".join(SOURCE_FIELDS)
    values = ",".join(BASE[f] for f in SOURCE_FIELDS[:-1])  # no `status`
    calls, _, _ = normalize([export(tmp_path, f"{header}\n{values}\n")])
    assert_frame_equal(calls, calls_frame([call(status=None)]))


def test_reject_direction_comes_from_the_file_and_source_from_the_argument(
    tmp_path: Path,
) -> None:
    file = export(tmp_path, csv_text([row(callid="")]), direction="outbound")
    _, rejects, _ = normalize([file], source="push")
    assert rejects.select("direction", "source").rows() == [("outbound", "push")]


# --- duplicates ------------------------------------------------------------------------------


def test_exact_duplicates_collapse(tmp_path: Path) -> None:
    rows = [row(), row(callid="2"), row(), row()]
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows))])
    assert_frame_equal(calls, calls_frame([call(call_id=2), call()]))
    assert rejects.is_empty()
    assert (stats.raw_rows, stats.typed_rows, stats.duplicate_rows) == (4, 2, 2)


def test_duplicates_are_compared_after_typing(tmp_path: Path) -> None:
    # Same call, spelled differently: identical once typed, so an exact duplicate.
    rows = [
        row(),
        row(started="2026-11-02T09:14:09+01:00", billingDebit="318.00", status="ANSWERED"),
    ]
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows))])
    assert_frame_equal(calls, calls_frame([call()]))
    assert rejects.is_empty()
    assert stats.duplicate_rows == 1


def test_differing_duplicates_keep_the_last_and_reject_the_others(tmp_path: Path) -> None:
    rows = [row(status="ringing"), row(callid="2"), row(status="answered", durationTotal="202")]
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows), direction="outbound")])
    assert_frame_equal(calls, calls_frame([call(call_id=2), call(duration_total_s=202)]))
    assert rejects.select("direction", "source_row", "reason").rows() == [
        (
            "outbound",
            1,
            "duplicate callid 884412307: differs from source row 3 (outbound), which is kept",
        )
    ]
    assert json.loads(rejects.item(0, "raw"))["status"] == "ringing"
    assert stats.duplicate_rows == 0


def test_duplicates_across_files_last_file_wins(tmp_path: Path) -> None:
    inbound = export(tmp_path, csv_text([row(status="ringing"), row(callid="5")]), "inbound")
    outbound = export(tmp_path, csv_text([row(callid="6"), row(), row(callid="5")]), "outbound")
    calls, rejects, stats = normalize([inbound, outbound])
    assert_frame_equal(calls, calls_frame([call(call_id=6), call(), call(call_id=5)]))
    assert rejects.select("direction", "source_row", "reason").rows() == [
        (
            "inbound",
            1,
            "duplicate callid 884412307: differs from source row 2 (outbound), which is kept",
        )
    ]
    assert (stats.raw_rows, stats.typed_rows, stats.rejected_rows, stats.duplicate_rows) == (
        5,
        3,
        1,
        1,
    )


def test_a_superseded_row_equal_to_another_superseded_row_is_still_rejected(
    tmp_path: Path,
) -> None:
    rows = [row(status="ringing"), row(status="ringing"), row()]
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows))])
    assert_frame_equal(calls, calls_frame([call()]))
    assert rejects["source_row"].to_list() == [1, 2]
    assert stats.duplicate_rows == 0


def test_invalid_rows_are_never_deduplicated(tmp_path: Path) -> None:
    rows = [row(direction="up"), row(direction="up"), row(started="never")]
    calls, rejects, stats = normalize([export(tmp_path, csv_text(rows))])
    assert calls.is_empty()
    assert rejects["source_row"].to_list() == [1, 2, 3]
    assert stats.duplicate_rows == 0


def test_a_valid_row_wins_over_an_invalid_one_with_its_id(tmp_path: Path) -> None:
    rows = [row(), row(started="never")]
    calls, rejects, _ = normalize([export(tmp_path, csv_text(rows))])
    assert_frame_equal(calls, calls_frame([call()]))
    assert rejects.select("source_row", "reason").rows() == [
        (2, "started: not an ISO8601 timestamp: 'never'")
    ]


# --- counting, reconciliation and the streaming writer ----------------------------------------


def test_count_csv_rows_counts_records_not_lines(tmp_path: Path) -> None:
    content = csv_text(
        [row(callerName="a\nb\nc"), row(scenarioName="x\r\ny")], lineterminator="\r\n"
    )
    path = export(tmp_path, content).path
    assert content.count("\n") == 6
    assert count_csv_rows(path) == 2


def test_reconciliation_on_a_messy_day(tmp_path: Path) -> None:
    inbound = export(
        tmp_path,
        csv_text([row(callid="1"), row(callid="1"), row(callid="x"), row(callid="2")]),
        "inbound",
    )
    outbound = export(
        tmp_path, csv_text([row(callid="2", status="busy"), row(callid="3")]) + "\n", "outbound"
    )
    _, _, stats = normalize([inbound, outbound])
    assert (stats.raw_rows, stats.typed_rows, stats.rejected_rows, stats.duplicate_rows) == (
        7,  # 4 + 2 + the trailing blank line
        3,
        3,  # callid `x`, the first callid 2 (differs), the blank line
        1,
    )
    assert stats.reconciles


@pytest.mark.parametrize("partitioned", [False, True], ids=["file", "partition-by"])
def test_write_normalized_equals_the_in_memory_path(tmp_path: Path, partitioned: bool) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    inbound = export(
        raw,
        csv_text([row(callid="1"), row(callid="1"), row(callid="x"), row(callid="2")]),
        "inbound",
    )
    outbound = export(
        raw,
        csv_text(
            [
                row(callid="2", status="busy"),
                row(callid="3", started="2026-11-01T23:59:59Z"),
                row(callid="4", started="2026-11-02T23:00:00Z"),
            ]
        ),
        "outbound",
    )
    files = [inbound, outbound]
    calls, rejects, stats = normalize(files, timezone="Europe/Paris")

    out = tmp_path / "out"
    out.mkdir()
    target: Path | pl.PartitionBy = out / "calls.parquet"
    if partitioned:
        target = pl.PartitionBy(out / "calls", key="call_date", include_key=True)
    plan = normalize_exports(files, partition_date=DAY, timezone="Europe/Paris")
    written = write_normalized(plan, target, out / "rejects.parquet")

    assert written == stats
    pattern = "calls/**/*.parquet" if partitioned else "calls.parquet"
    written_calls = pl.read_parquet(sorted(out.glob(pattern)))
    assert_frame_equal(written_calls.sort("call_id"), calls.sort("call_id"))
    assert_frame_equal(pl.read_parquet(out / "rejects.parquet"), rejects)
    calls_name = "calls" if partitioned else "calls.parquet"
    assert sorted(p.name for p in out.iterdir()) == [calls_name, "rejects.parquet"]  # no scratch


@pytest.mark.parametrize("max_runs", [8, 0], ids=["slices", "filtered-scan"])
@pytest.mark.parametrize("seed", [5, 6, 7])
def test_rejects_carry_the_raw_record_at_their_source_row(
    tmp_path: Path, seed: int, max_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression for stage four, which re-reads reject rows from the raw file by source row,
    # by slices of the file or (beyond `_MAX_ROW_RUNS` runs) one filtered scan: each reject's
    # `raw` must be the record at that row, in any of the simulator's dialects.
    monkeypatch.setattr(normalize_module.scan, "_MAX_ROW_RUNS", max_runs)
    start, end = day_window(DAY, "UTC")
    files, expected_rejects = [], 0
    for direction in ("inbound", "outbound"):
        simulated = simulate_export(start, end, direction, calls_per_day=300, seed=seed)
        expected_rejects += simulated.rejected_rows
        files.append(export(tmp_path, simulated.body, direction, name=f"{direction}.csv"))
    _, rejects, stats = normalize(files)
    assert stats.rejected_rows == rejects.height == expected_rejects > 0
    reasons = rejects["reason"].to_list()
    assert any(r.startswith("duplicate callid") for r in reasons)
    records = {
        f.direction: list(csv.reader(io.StringIO(f.path.read_bytes().decode("utf-8-sig"))))
        for f in files
    }
    for reject in rejects.iter_rows(named=True):
        header, *rows = records[reject["direction"]]
        assert json.loads(reject["raw"]) == dict(
            zip(header, rows[reject["source_row"] - 1], strict=True)
        )


@pytest.mark.parametrize("max_runs", [8, 1, 0], ids=["slices", "one-run", "filtered-scan"])
def test_rejects_re_read_across_quoted_newlines_blank_lines_and_runs(
    tmp_path: Path, max_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records, not lines, are counted: slices of the raw file must land on the same records as
    # the typing pass, after multi-line records, blank lines, CRLF and a BOM. Rejects 2-3 and
    # 7-8 are runs of consecutive rows; 5 is a blank line.
    monkeypatch.setattr(normalize_module.scan, "_MAX_ROW_RUNS", max_runs)
    rows = [
        row(callid="1", callerName="two\r\nlines"),
        row(callid="x2"),
        row(callid="3", started="yesterday"),
        row(callid="4", scenarioName="a\nb\nc"),
        None,
        row(callid="6", callerName='say "hi"\n'),
        row(callid="7", durationTotal="-1"),
        row(callid="8", callerRestricted="maybe", callerName="end\r\n"),
        row(callid="9"),
    ]
    header = list(SOURCE_FIELDS)
    records = [header, *[[r[f] for f in header] if r else [] for r in rows]]
    content = "\ufeff" + write_rows(records, "\r\n")
    calls, rejects, _ = normalize([export(tmp_path, content)])
    assert calls["call_id"].to_list() == [1, 4, 6, 9]
    assert rejects["source_row"].to_list() == [2, 3, 5, 7, 8]
    for reject in rejects.iter_rows(named=True):
        source = rows[reject["source_row"] - 1]
        expected = dict.fromkeys(header, "") if source is None else source
        assert json.loads(reject["raw"]) == {f: expected[f] for f in header}


def test_write_normalized_with_no_rows(tmp_path: Path) -> None:
    plan = normalize_exports([export(tmp_path, b"")], partition_date=DAY, timezone="UTC")
    stats = write_normalized(plan, tmp_path / "calls.parquet", tmp_path / "rejects.parquet")
    assert stats == NormalizeStats(0, 0, 0, 0, (), None, None)
    assert_frame_equal(pl.read_parquet(tmp_path / "calls.parquet"), calls_frame([]))
    assert_frame_equal(pl.read_parquet(tmp_path / "rejects.parquet"), rejects_frame([]))


# --- properties --------------------------------------------------------------------------------

# Any Unicode text, with the characters CSV quoting must handle drawn often.
_TEXT = st.text(
    st.one_of(st.sampled_from(",\"'\r\n \t\x00\ufeff"), st.characters(codec="utf-8")),
    max_size=20,
)
_HEADER_STYLES = {
    "camel": lambda f: f,
    "snake": lambda f: "".join("_" + c.lower() if c.isupper() else c for c in f),
    "upper": str.upper,
}


def _random_case(draw: st.DrawFn, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@st.composite
def _timestamp(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    """(ISO8601 text with a random offset and precision, the instant in UTC to microseconds)."""
    local = draw(
        st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 12, 31))
    )
    offset_min = draw(st.integers(-18 * 60, 18 * 60))
    digits = draw(st.integers(0, 9))
    extra = draw(st.text("0123456789", min_size=max(digits - 6, 0), max_size=max(digits - 6, 0)))
    fraction = f"{local.microsecond:06d}"[:digits] + extra if digits else ""
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    offsets = [f"{sign}{hours:02d}:{minutes:02d}", f"{sign}{hours:02d}{minutes:02d}"]
    if minutes == 0:
        offsets.append(f"{sign}{hours:02d}")
    if offset_min == 0:
        offsets += ["Z", ""]
    text = (
        local.strftime("%Y-%m-%d")
        + draw(st.sampled_from(["T", " "]))
        + local.strftime("%H:%M:%S")
        + (f".{fraction}" if fraction else "")
        + draw(st.sampled_from(offsets))
    )
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    instant = local.replace(microsecond=micro) - dt.timedelta(minutes=offset_min)
    return text, instant.replace(tzinfo=UTC)


@st.composite
def _cents(draw: st.DrawFn) -> tuple[str, Decimal]:
    """(cents with 0-4 fractional digits fitting DECIMAL(18,6) in units, units exactly)."""
    whole = draw(st.integers(0, 10**14 - 1))
    digits = draw(st.integers(0, 4))
    fraction = draw(st.text("0123456789", min_size=digits, max_size=digits))
    sign = draw(st.sampled_from(["", "-", "+"]))
    text = f"{sign}{whole:0{draw(st.integers(1, 3))}d}" + (f".{fraction}" if digits else "")
    return text, Decimal(text) / 100


@st.composite
def _valid_row(draw: st.DrawFn, call_id: int) -> tuple[dict[str, str], dict[str, object]]:
    """(a valid raw row, the `calls` values expected from it, computed independently)."""
    started, started_at = draw(_timestamp())
    answered, answered_at = draw(st.one_of(st.just(("", None)), _timestamp()))
    ended, ended_at = draw(_timestamp())
    debit, debit_units = draw(_cents())
    credit, credit_units = draw(_cents())
    restricted_word = draw(st.sampled_from(["true", "1", "yes", "false", "0", "no"]))
    restricted = restricted_word in ("true", "1", "yes")
    durations = draw(st.lists(st.integers(0, 2**31 - 1), min_size=3, max_size=3))
    cause = draw(st.integers(-(2**15), 2**15 - 1))
    direction = draw(st.sampled_from(["inbound", "outbound"]))
    status = draw(st.sampled_from(["dialing", "answered", "busy", "canceled", "weird"]))
    payment = draw(st.sampled_from(["prepaid", "postpaid"]))
    hangup_source = draw(st.sampled_from(["caller", "callee", "system"]))
    phone = st.from_regex(r"\+?0{0,2}[0-9]{1,15}", fullmatch=True)
    text_fields = ("callerName", "billingDestinationLabel", "hangupTech", "scenarioName")
    text_fields += ("scenarioSid", "scenarioTypeName", "scenarioTypeVersion")
    texts = {f: draw(_TEXT) for f in text_fields}
    caller_number = draw(st.one_of(st.just(""), phone))
    callee = draw(phone)
    callid = draw(st.sampled_from([str(call_id), f"+{call_id}" if call_id >= 0 else f" {call_id}"]))
    raw = {
        "billingCredit": credit,
        "billingDebit": debit,
        "callee": callee,
        "callerNumber": caller_number,
        "callerRestricted": _random_case(draw, restricted_word),
        "callid": callid,
        "direction": _random_case(draw, direction),
        "durationAnswered": str(durations[0]),
        "durationBilled": str(durations[1]),
        "durationTotal": str(durations[2]),
        "started": started,
        "answered": answered,
        "ended": ended,
        "hangupCause": str(cause),
        "hangupSource": _random_case(draw, hangup_source),
        "billingPaymentType": _random_case(draw, payment),
        "status": _random_case(draw, status),
        **texts,
    }
    expected = {
        "call_id": call_id,
        "call_date": None,  # filled in by the test, from its time zone
        "direction": direction,
        "status": status,
        "caller_number": caller_number or None,
        "caller_name": texts["callerName"] or None,
        "caller_restricted": restricted,
        "callee": callee,
        "started_at": started_at,
        "answered_at": answered_at,
        "ended_at": ended_at,
        "duration_total_s": durations[2],
        "duration_answered_s": durations[0],
        "duration_billed_s": durations[1],
        "billing_debit": debit_units,
        "billing_credit": credit_units,
        "billing_destination_label": texts["billingDestinationLabel"] or None,
        "billing_payment_type": payment,
        "hangup_cause": cause,
        "hangup_cause_name": q850.cause_name(cause),
        "hangup_cause_class": q850.cause_class(cause),
        "hangup_source": hangup_source,
        "hangup_tech": texts["hangupTech"] or None,
        "scenario_name": texts["scenarioName"] or None,
        "scenario_sid": texts["scenarioSid"] or None,
        "scenario_type_name": texts["scenarioTypeName"] or None,
        "scenario_type_version": texts["scenarioTypeVersion"] or None,
        "source": "export",
    }
    return raw, expected


@st.composite
def _valid_export(draw: st.DrawFn) -> tuple[str, list[dict[str, str]], list[dict[str, object]]]:
    ids = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8, unique=True))
    pairs = [draw(_valid_row(i)) for i in ids]
    style = draw(st.sampled_from(list(_HEADER_STYLES)))
    return style, [p[0] for p in pairs], [p[1] for p in pairs]


_PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPERTY_SETTINGS
@given(
    data=_valid_export(),
    order=st.randoms(use_true_random=False),
    lineterminator=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    timezone=st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "America/St_Johns"]),
)
def test_valid_rows_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    data: tuple[str, list[dict[str, str]], list[dict[str, object]]],
    order: random.Random,
    lineterminator: str,
    bom: bool,
    timezone: str,
) -> None:
    style, raw_rows, expected_rows = data
    fields = list(SOURCE_FIELDS)
    order.shuffle(fields)
    header = [_HEADER_STYLES[style](f) for f in fields]
    records = [header, *[[r[f] for f in fields] for r in raw_rows]]
    content = ("\ufeff" if bom else "") + write_rows(records, lineterminator)
    tmp_path = tmp_path_factory.mktemp("valid")
    calls, rejects, stats = normalize([export(tmp_path, content)], timezone=timezone)

    zone = ZoneInfo(timezone)
    for e in expected_rows:
        e["call_date"] = e["started_at"].astimezone(zone).date()  # type: ignore[attr-defined]
    assert rejects["reason"].to_list() == []
    assert_frame_equal(calls, calls_frame(expected_rows))
    assert (stats.raw_rows, stats.typed_rows) == (len(raw_rows), len(raw_rows))


# Random text, or values that are valid for some field, so rows are sometimes typed and their
# ids sometimes repeat (duplicates).
_JUNK_ROW = st.fixed_dictionaries(
    {
        f: st.one_of(
            _TEXT, st.sampled_from(["", "1", "-1", "0.5", "2026-11-02T08:14:09Z", BASE[f]])
        )
        for f in SOURCE_FIELDS
    }
)


@_PROPERTY_SETTINGS
@given(rows=st.lists(_JUNK_ROW, max_size=12), lineterminator=st.sampled_from(["\n", "\r\n"]))
def test_junk_rows_never_crash_and_always_reconcile(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]], lineterminator: str
) -> None:
    tmp_path = tmp_path_factory.mktemp("junk")
    file = export(tmp_path, csv_text(rows, lineterminator=lineterminator))
    calls, rejects, stats = normalize([file])
    assert stats.raw_rows == len(rows) == count_csv_rows(file.path)
    assert stats.typed_rows + stats.rejected_rows + stats.duplicate_rows == len(rows)
    assert calls["call_id"].is_unique().all()
    assert set(rejects["source_row"].to_list()) <= set(range(1, len(rows) + 1))
    assert rejects["reason"].null_count() == 0


def test_typing_runs_natively_in_the_streaming_engine(tmp_path: Path) -> None:
    # Regression: the Q.850 names were once a `replace_strict`, which the streaming engine ran
    # through its in-memory fallback, holding the whole column (memory grew with the day).
    plan = normalize_exports(
        [export(tmp_path, csv_text([row()]))], partition_date=DAY, timezone="UTC"
    )
    # What the typing stage reads and computes per row, with the Q.850 names of stage three.
    typed = normalize_module._with_derived(plan.scans[0].scan(), "export")
    graph = typed.show_graph(engine="streaming", plan_stage="physical", raw_output=True)
    assert 'fillcolor="0.0 0.3 1.0"' not in graph  # the colour of in-memory fallback nodes
    assert "multi-scan[csv]" in graph
