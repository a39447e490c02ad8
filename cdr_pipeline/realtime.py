"""Landed real-time events -> the export's normaliser -> an upsert into `calls`.

A batch is every event landed after the warehouse's watermark for the landing store (at most
`max_events`), loaded in one DuckDB transaction that also advances the watermark, so each
event is loaded exactly once even if a run dies half-way (docs/realtime.md, "Into the
warehouse", says what is typed, merged and rejected, and how).

1. `prepare_batch` reads each event's CDR back from its body (numbers as written), maps its keys
   onto the Callr fields with the export reader's rule (`normalize.header_mapping`) and keeps
   the last landed delivery of each call (the others are `superseded`); a CDR without
   `direction` takes it from its event type (`v2.call.<direction>.ended`).
2. `write_batch` writes one CSV per source (webhook, push) and types it with
   `normalize.normalize_exports(..., required_fields=ROW_KEY_FIELDS)`, exactly as an export;
   rejects are re-labelled for real time (`source_row` = landing `seq`, `raw` = the body).
3. `load_landed_events` hands the Parquet to `warehouse.upsert_realtime` (an export row always
   wins). In pseudonymise mode (`cdr_pipeline.privacy`) the landing store's bodies of the loaded
   events are then rewritten with tokens: clear numbers live there only until loaded.
"""

import csv
import datetime as dt
import json
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from cdr_pipeline import landed_privacy, normalize, privacy, timestamps, warehouse
from cdr_pipeline.callr import events as callr_events
from cdr_pipeline.config import check_timezone
from cdr_pipeline.landing import LandedEvent, LandingStore, open_reader
from cdr_pipeline.schema import (
    DIRECTIONS,
    REJECT_SCHEMA,
    ROW_KEY_FIELDS,
    SOURCE_FIELDS,
)
from cdr_pipeline.warehouse.reconcile import Reconciliation, reconcile

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "RealtimeBatch",
    "RealtimeResult",
    "Reconciliation",
    "load_landed_events",
    "prepare_batch",
    "reconcile",
    "write_batch",
]

DEFAULT_MAX_EVENTS = 100_000
_INT = re.compile(r"[+-]?[0-9]+")
_UNREADABLE_DEPTH = 10_000  # the receiver enforced its limit already


@dataclass(frozen=True)
class _Row:
    """One event, ready for the CSV: canonical field -> text, and how to label a reject."""

    event: LandedEvent
    fields: dict[str, str]
    extras: dict[str, str]
    call_date: dt.date
    direction: str


@dataclass
class RealtimeBatch:
    """A batch of landed events, prepared: rows per source, and rows that cannot be typed."""

    store_id: str
    through_seq: int
    events: int = 0
    superseded: int = 0
    rows: dict[str, list[_Row]] = field(default_factory=dict)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    unknown_fields: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RealtimeResult:
    """What a real-time load did (the asset's metadata)."""

    store_id: str | None
    watermark_before: int
    through_seq: int
    events: int
    superseded: int
    unknown_fields: tuple[str, ...]
    load: warehouse.RealtimeLoadStats | None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # JsonNumber too: the number as written
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _call_days(
    events: Sequence[LandedEvent], started: Sequence[str | None], timezone: str, naive_zone: str
) -> list[dt.date]:
    """The day each event's reject is filed under: its `started` in CDR_TIMEZONE as the
    normaliser reads it, else the day it was received."""
    tz = check_timezone(timezone)
    days = timestamps.call_dates(started, timezone=timezone, naive_timezone=naive_zone)
    return [
        day or event.received_at.astimezone(tz).date()
        for event, day in zip(events, days, strict=True)
    ]


def _call_key(callid: str) -> object | None:
    """The identity of a call for in-batch dedup: the int64 the normaliser would parse."""
    text = callid.strip()
    if not text:
        return None
    return int(text) if _INT.fullmatch(text) else text


def prepare_batch(
    events: Sequence[LandedEvent],
    *,
    store_id: str,
    timezone: str,
    naive_timezone: str | None = None,
    rules: privacy.Privacy = privacy.CLEAR,
) -> RealtimeBatch:
    """Read the CDRs of `events` (oldest first) into rows per source; see the module docstring."""
    naive_zone = normalize.resolve_naive_timezone(naive_timezone)
    batch = RealtimeBatch(store_id=store_id, through_seq=events[-1].seq if events else 0)
    batch.events = len(events)
    readable: list[tuple[LandedEvent, dict[str, str], dict[str, str], str | None]] = []
    unreadable: list[tuple[LandedEvent, str]] = []
    for event in events:
        try:
            document = callr_events.parse_json(event.body.encode(), max_depth=_UNREADABLE_DEPTH)
            cdr = callr_events.cdr_at(document, event.cdr_path)
            mapping, unknown = normalize.header_mapping(list(cdr))
        except (callr_events.PayloadError, normalize.ExportHeaderError, KeyError, TypeError) as e:
            unreadable.append((event, str(e)))
            continue
        fields = {mapping[key]: _text(value) for key, value in cdr.items() if key in mapping}
        extras = {key: _text(cdr[key]) for key in unknown}
        batch.unknown_fields.update(unknown)
        hinted = callr_events.direction_of(event.event_type)
        if not fields.get("direction", "").strip() and hinted:
            fields["direction"] = hinted
        readable.append((event, fields, extras, hinted))
    days = _call_days(
        [*(r[0] for r in readable), *(u[0] for u in unreadable)],
        [*(r[1].get("started") for r in readable), *(u[0].started for u in unreadable)],
        timezone,
        naive_zone,
    )
    latest: dict[object, _Row] = {}
    keyless: list[_Row] = []
    for (event, fields, extras, hinted), day in zip(readable, days[: len(readable)], strict=True):
        own = fields.get("direction", "").strip().lower()
        row = _Row(
            event=event,
            fields=fields,
            extras=extras,
            call_date=day,
            direction=own if own in DIRECTIONS else hinted or "unknown",
        )
        key = _call_key(fields.get("callid", ""))
        if key is None:
            keyless.append(row)
        else:
            if key in latest:
                batch.superseded += 1
            latest[key] = row
    for (event, reason), day in zip(unreadable, days[len(readable) :], strict=True):
        batch.unreadable.append(_unreadable(event, reason, day, rules))
    kept = sorted([*latest.values(), *keyless], key=lambda r: r.event.seq)
    for row in kept:
        batch.rows.setdefault(row.event.source, []).append(row)
    return batch


def _unreadable(
    event: LandedEvent, reason: str, call_date: dt.date, rules: privacy.Privacy
) -> dict[str, Any]:
    return {
        "call_date": call_date,
        "direction": callr_events.direction_of(event.event_type) or "unknown",
        "source_row": event.seq,
        "raw": landed_privacy.shown_body(event.body, event.cdr_path, rules),
        "reason": f"CDR cannot be read: {reason}",
        "source": event.source,
    }


def _write_csv(path: Path, rows: Sequence[_Row], extra_names: Sequence[str]) -> None:
    header = [*SOURCE_FIELDS, *extra_names]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [row.fields.get(name, "") for name in SOURCE_FIELDS]
                + [row.extras.get(name, "") for name in extra_names]
            )


def _relabel_rejects(
    raw_rejects: Path, rows: Sequence[_Row], target: Path, rules: privacy.Privacy
) -> None:
    """Give a source's rejects their landing `seq`, body, call day and direction."""
    labels = pl.DataFrame(
        {
            "source_row": list(range(1, len(rows) + 1)),
            "__seq": [r.event.seq for r in rows],
            "__raw": [
                landed_privacy.shown_body(r.event.body, r.event.cdr_path, rules) for r in rows
            ],
            "__call_date": [r.call_date for r in rows],
            "__direction": [r.direction for r in rows],
        },
        schema={
            "source_row": pl.Int64,
            "__seq": pl.Int64,
            "__raw": pl.String,
            "__call_date": pl.Date,
            "__direction": pl.String,
        },
    )
    (
        pl.read_parquet(raw_rejects)
        .join(labels, on="source_row", how="left")
        .select(
            pl.col("__call_date").alias("call_date"),
            pl.col("__direction").alias("direction"),
            pl.col("__seq").alias("source_row"),
            pl.col("__raw").alias("raw"),
            "reason",
            "source",
        )
        .cast(REJECT_SCHEMA)  # type: ignore[arg-type]
        .write_parquet(target)
    )


def write_batch(
    batch: RealtimeBatch,
    staging: Path,
    *,
    timezone: str,
    naive_timezone: str | None = None,
    rules: privacy.Privacy = privacy.CLEAR,
) -> tuple[list[Path], list[Path]]:
    """Normalise a prepared batch into Parquet under `staging`: (calls files, rejects files)."""
    staging.mkdir(parents=True, exist_ok=True)
    calls_files: list[Path] = []
    rejects_files: list[Path] = []
    extra_names = sorted(batch.unknown_fields)
    for source, rows in sorted(batch.rows.items()):
        csv_path = staging / f"{source}.csv"
        _write_csv(csv_path, rows, extra_names)
        result = normalize.normalize_exports(
            [normalize.ExportFile(csv_path, rows[0].direction)],
            partition_date=rows[0].call_date,  # relabelled per row below
            timezone=timezone,
            source=source,
            required_fields=ROW_KEY_FIELDS,
            naive_timezone=naive_timezone,
            privacy=rules,
        )
        calls_path = staging / f"{source}-calls.parquet"
        raw_rejects = staging / f"{source}-rejects-raw.parquet"
        normalize.write_normalized(result, calls_path, raw_rejects)
        rejects_path = staging / f"{source}-rejects.parquet"
        _relabel_rejects(raw_rejects, rows, rejects_path, rules)
        calls_files.append(calls_path)
        rejects_files.append(rejects_path)
    if batch.unreadable:
        unreadable_path = staging / "unreadable-rejects.parquet"
        pl.DataFrame(batch.unreadable, schema=REJECT_SCHEMA).write_parquet(unreadable_path)
        rejects_files.append(unreadable_path)
    return calls_files, rejects_files


def load_landed_events(
    con: duckdb.DuckDBPyConnection,
    landing_file: Path,
    lake: warehouse.Lake,
    *,
    timezone: str,
    max_events: int = DEFAULT_MAX_EVENTS,
    naive_timezone: str | None = None,
    rules: privacy.Privacy = privacy.CLEAR,
) -> RealtimeResult:
    """Load the events landed since the warehouse's watermark (at most `max_events`); timestamps
    without an offset are read in `naive_timezone` (None: CDR_NAIVE_TIMEZONE). In pseudonymise
    mode the loaded events' bodies are then pseudonymised in the landing store."""
    with open_reader(landing_file) as store:
        if store is None:
            return RealtimeResult(None, 0, 0, 0, 0, (), None)
        store_id = store.store_id
        watermark = warehouse.realtime_watermark(con, store_id)
        events = store.read_after(watermark, limit=max_events)
    if not events:
        return RealtimeResult(store_id, watermark, watermark, 0, 0, (), None)
    naive_zone = normalize.resolve_naive_timezone(naive_timezone)
    batch = prepare_batch(
        events, store_id=store_id, timezone=timezone, naive_timezone=naive_zone, rules=rules
    )
    staging = lake.staging_dir / f"realtime-{uuid.uuid4().hex[:8]}"
    try:
        calls_files, rejects_files = write_batch(
            batch, staging, timezone=timezone, naive_timezone=naive_zone, rules=rules
        )
        stats = warehouse.upsert_realtime(
            con,
            calls_files,
            rejects_files,
            landing_store_id=store_id,
            through_seq=batch.through_seq,
            timezone=timezone,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    erased = [
        e.seq
        for e in events
        if rules.erased and landed_privacy.of_erased_number(e.body, e.cdr_path, rules)
    ]
    if erased:  # an erased number delivered again: its calls were dropped, its events go too
        with LandingStore(landing_file) as store:
            store.delete_events(f"seq IN ({', '.join('?' * len(erased))})", erased)
    if rules.pseudonymise:
        with LandingStore(landing_file) as store:
            store.replace_bodies(
                {
                    e.seq: landed_privacy.shown_body(e.body, e.cdr_path, rules)
                    for e in events
                    if e.seq not in erased
                }
            )
    return RealtimeResult(
        store_id=store_id,
        watermark_before=watermark,
        through_seq=batch.through_seq,
        events=batch.events,
        superseded=batch.superseded,
        unknown_fields=tuple(sorted(batch.unknown_fields)),
        load=stats,
    )
