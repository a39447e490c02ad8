"""One valid Callr export row and the builders the normaliser's tests share: rows with fields
replaced, RFC 4180 text, export files, normalising with the invariants checked."""

import csv
import datetime as dt
import io
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import polars as pl

from cdr_pipeline.normalize import ExportFile, NormalizeStats, normalize_frames
from cdr_pipeline.schema import CALL_SCHEMA, REJECT_SCHEMA, SOURCE_FIELDS

DAY = dt.date(2026, 11, 2)
UTC = dt.UTC

# One valid Callr export row (the first row of the contract's sample), by Callr field.
BASE: dict[str, str] = {
    "billingCredit": "0",
    "billingDebit": "318",
    "billingDestinationLabel": "France - Mobile",
    "billingPaymentType": "postpaid",
    "callee": "+33639980042",
    "callerName": "Front desk",
    "callerNumber": "+33184880001",
    "callerRestricted": "false",
    "callid": "884412307",
    "direction": "outbound",
    "durationAnswered": "187",
    "durationBilled": "240",
    "durationTotal": "201",
    "started": "2026-11-02T08:14:09Z",
    "answered": "2026-11-02T08:14:23Z",
    "ended": "2026-11-02T08:17:30Z",
    "hangupCause": "16",
    "hangupSource": "callee",
    "hangupTech": "SIP 200",
    "scenarioName": "Outbound campaign",
    "scenarioSid": "q7r2k9",
    "scenarioTypeName": "Actions",
    "scenarioTypeVersion": "1.0",
    "status": "answered",
}

# The `calls` row BASE types to.
BASE_CALL: dict[str, object] = {
    "call_id": 884412307,
    "call_date": DAY,
    "direction": "outbound",
    "status": "answered",
    "caller_number": "+33184880001",
    "caller_name": "Front desk",
    "caller_restricted": False,
    "callee": "+33639980042",
    "started_at": dt.datetime(2026, 11, 2, 8, 14, 9, tzinfo=UTC),
    "answered_at": dt.datetime(2026, 11, 2, 8, 14, 23, tzinfo=UTC),
    "ended_at": dt.datetime(2026, 11, 2, 8, 17, 30, tzinfo=UTC),
    "duration_total_s": 201,
    "duration_answered_s": 187,
    "duration_billed_s": 240,
    "billing_debit": Decimal("3.18"),
    "billing_credit": Decimal("0"),
    "billing_destination_label": "France - Mobile",
    "billing_payment_type": "postpaid",
    "hangup_cause": 16,
    "hangup_cause_name": "Normal call clearing",
    "hangup_cause_class": "normal event",
    "hangup_source": "callee",
    "hangup_tech": "SIP 200",
    "scenario_name": "Outbound campaign",
    "scenario_sid": "q7r2k9",
    "scenario_type_name": "Actions",
    "scenario_type_version": "1.0",
    "source": "export",
}


def row(**overrides: str) -> dict[str, str]:
    """BASE with some fields replaced."""
    return {**BASE, **overrides}


def call(**overrides: object) -> dict[str, object]:
    """BASE_CALL with some columns replaced."""
    return {**BASE_CALL, **overrides}


def calls_frame(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=CALL_SCHEMA, orient="row")


def rejects_frame(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=REJECT_SCHEMA, orient="row")


def csv_text(
    rows: Sequence[dict[str, str]],
    header: Sequence[str] | None = None,
    *,
    lineterminator: str = "\n",
) -> str:
    """An RFC 4180 CSV export of `rows`; `header` renames/reorders (default: Callr fields)."""
    fields = list(header or SOURCE_FIELDS)
    return write_rows([fields, *[[r.get(f, "") for f in fields] for r in rows]], lineterminator)


def write_rows(records: Sequence[Sequence[str]], lineterminator: str) -> str:
    """RFC 4180 text of `records`. Python's csv module quotes only the characters of its line
    terminator, so with LF it would leave a bare CR unquoted: such records get quoted fully."""
    out = io.StringIO()
    minimal = csv.writer(out, lineterminator=lineterminator)
    quote_all = csv.writer(out, lineterminator=lineterminator, quoting=csv.QUOTE_ALL)
    for record in records:
        (quote_all if any("\r" in v for v in record) else minimal).writerow(record)
    return out.getvalue()


def export(
    tmp_path: Path, content: str | bytes, direction: str = "outbound", name: str | None = None
) -> ExportFile:
    """Write one raw export file and describe it."""
    path = tmp_path / (name or f"{direction}-{len(list(tmp_path.iterdir()))}.csv")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return ExportFile(path, direction)


def normalize(
    files: Sequence[ExportFile], *, timezone: str = "UTC", **kwargs: object
) -> tuple[pl.DataFrame, pl.DataFrame, NormalizeStats]:
    calls, rejects, stats = normalize_frames(files, partition_date=DAY, timezone=timezone, **kwargs)
    assert calls.schema == pl.Schema(CALL_SCHEMA)
    assert rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert stats.reconciles, stats
    return calls, rejects, stats


def one_value(tmp_path: Path, field: str, raw: str, column: str) -> object:
    """The typed `column` of a single BASE row whose `field` is `raw` (must not be rejected)."""
    calls, rejects, _ = normalize([export(tmp_path, csv_text([row(**{field: raw})]))])
    assert rejects.is_empty(), rejects["reason"].to_list()
    return calls.item(0, column)


def one_reason(tmp_path: Path, **fields: str) -> str:
    """The reject reason of a single BASE row with `fields` replaced (must be rejected)."""
    calls, rejects, _ = normalize([export(tmp_path, csv_text([row(**fields)]))])
    assert calls.is_empty()
    return rejects.item(0, "reason")
