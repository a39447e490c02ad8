"""A small hand-built `calls` table in a real DuckDB file, shared by the marts, alerts and report
tests. Values are chosen so every KPI can be computed by hand (see test_marts.py)."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from cdr_pipeline import marts, warehouse
from cdr_pipeline.schema import CALL_COLUMNS, CALL_SCHEMA

DAY = dt.date(2026, 3, 2)  # a Monday
UTC = dt.UTC


def at(day: dt.date, hhmmss: str) -> dt.datetime:
    """An instant of `day` in UTC, from 'HH:MM:SS'."""
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmmss), tzinfo=UTC)


def call(
    call_id: int,
    started: dt.datetime,
    ended: dt.datetime | None,
    *,
    answered: dt.datetime | None = None,
    direction: str = "outbound",
    cause: int | None = 16,
    source: str = "callee",
    billed_s: int = 0,
    debit: str = "0",
    credit: str = "0",
    destination: str | None = None,
    scenario: str | None = None,
    call_date: dt.date | None = None,
) -> dict:
    """One `calls` row; durations follow from the instants (answered seconds = ended - answered)."""
    total = int((ended - started).total_seconds()) if ended else 0
    answered_s = int((ended - answered).total_seconds()) if answered and ended else 0
    names = {16: "Normal call clearing", 17: "User busy", 18: "No user responding",
             19: "No answer from user (user alerted)", 21: "Call rejected",
             34: "No circuit/channel available"}  # fmt: skip
    row = {c.name: None for c in CALL_COLUMNS}
    return row | {
        "call_id": call_id,
        "call_date": call_date or started.date(),
        "direction": direction,
        "status": "answered" if answered else "failed",
        "started_at": started,
        "answered_at": answered,
        "ended_at": ended,
        "duration_total_s": total,
        "duration_answered_s": answered_s,
        "duration_billed_s": billed_s,
        "billing_debit": Decimal(debit),
        "billing_credit": Decimal(credit),
        "billing_destination_label": destination,
        "hangup_cause": cause,
        "hangup_cause_name": names.get(cause) if cause is not None else None,
        "hangup_cause_class": None if cause is None else q850_class(cause),
        "hangup_source": source,
        "scenario_name": scenario,
        "scenario_sid": None if scenario is None else f"sid-{scenario}",
        "source": "export",
    }


def q850_class(cause: int) -> str:
    """The Q.850 class of the causes the fixtures use (0-31 normal, 32-47 resource)."""
    return "normal event" if cause < 32 else "resource unavailable"


def outbound_day(day: dt.date = DAY) -> list[dict]:
    """Seven outbound calls on `day` (see test_marts.py for the hand computation)."""
    t = lambda hhmmss: at(day, hhmmss)  # noqa: E731
    return [
        call(1, t("10:00:00"), t("10:02:05"), answered=t("10:00:05"), billed_s=120,
             debit="0.24", credit="0.05", destination="France mobile", scenario="dialer"),
        call(2, t("10:01:00"), t("10:01:40"), answered=t("10:01:10"), billed_s=60,
             debit="0.12", source="caller", destination="France mobile", scenario="dialer"),
        # starts the instant call 1 ends: touching, not overlapping
        call(3, t("10:02:05"), t("10:02:25"), cause=17, destination="Germany",
             scenario="dialer"),
        call(4, t("11:00:00"), t("11:00:30"), cause=19, destination="Germany",
             scenario="dialer"),
        call(5, t("12:00:00"), t("12:00:10"), cause=34, source="system",
             destination="Germany", scenario="dialer"),
        # answered, but hung up at once: 0 answered seconds, still in the ACD denominator
        call(6, t("13:00:00"), t("13:00:02"), answered=t("13:00:02"), source="caller",
             scenario="dialer"),
        # rejected, and no end instant: never in progress
        call(7, t("14:00:00"), None, cause=21, scenario="ivr"),
    ]  # fmt: skip


def inbound_day(day: dt.date = DAY) -> list[dict]:
    """Five inbound calls on `day` whose busiest moment has three in progress."""
    t = lambda hhmmss: at(day, hhmmss)  # noqa: E731
    kw = {"direction": "inbound", "billed_s": 0}
    return [
        call(101, t("09:00:00"), t("09:10:00"), answered=t("09:00:10"), **kw),
        call(102, t("09:05:00"), t("09:06:00"), answered=t("09:05:05"), **kw),
        call(103, t("09:05:30"), t("09:20:00"), answered=t("09:05:40"), **kw),  # 3 in progress
        call(104, t("09:10:00"), t("09:11:00"), answered=t("09:10:10"), **kw),  # 101 ends: 2
        call(105, t("09:20:00"), t("09:30:00"), answered=t("09:20:10"), **kw),  # 103 ends: 1
    ]


DEFAULT_SETTINGS = marts.MartSettings()


def write_calls(
    path: Path, rows: list[dict], settings: marts.MartSettings = DEFAULT_SETTINGS
) -> None:
    """Create the warehouse schema in the DuckDB file at `path`, insert `rows` into `calls` and
    compute the marts of their days with `settings`."""
    frame = pl.DataFrame(rows, schema=CALL_SCHEMA).with_columns(load_partition=pl.col("call_date"))
    with warehouse.connect(path) as con:
        warehouse.ensure_schema(con)
        con.register("fixture_rows", frame)
        con.execute("INSERT INTO calls BY NAME SELECT * FROM fixture_rows")
        con.unregister("fixture_rows")
        marts.rebuild_marts(con, settings)


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    """Rows of `sql` as dicts."""
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_MONTH_SQL = """
INSERT INTO calls BY NAME
WITH
    days AS (
        SELECT unnest(generate_series(?::DATE - INTERVAL 29 DAY, ?::DATE, INTERVAL 1 DAY))::DATE
            AS call_date
    ),
    draws AS (  -- deterministic pseudo-random numbers in [0, 1) per call
        SELECT call_date, i,
               coalesce(call_date = ?::DATE, false) AS bad_day,
               hash(call_date, i, 'a') % 10000 / 10000 AS u1,
               hash(call_date, i, 'b') % 10000 / 10000 AS u2,
               hash(call_date, i, 'c') % 10000 / 10000 AS u3,
               hash(call_date, i, 'd') % 10000 / 10000 AS u4,
               hash(call_date, i, 'e') % 10000 / 10000 AS u5,
               hash(call_date, i, 'f') % 10000 / 10000 AS u6
        FROM days, range(0, ?) AS r(i)
    ),
    shaped AS (
        SELECT *,
               CASE WHEN u4 < 0.33 THEN 'inbound' ELSE 'outbound' END AS direction,
               -- business hours: triangular around 13:00, a little traffic all day
               CASE WHEN u5 < 0.06 THEN u1 * 24 ELSE 7 + 6 * (u1 + u2) END AS hour_f,
               u3 < CASE WHEN bad_day THEN 0.30 ELSE 0.62 END AS answered,
               CASE WHEN u2 < 0.40 THEN 17 WHEN u2 < 0.70 THEN 19 WHEN u2 < 0.80 THEN 21
                    WHEN u2 < 0.88 THEN 34 WHEN u2 < 0.95 THEN 1 ELSE 31 END AS failed_cause,
               (ARRAY['France mobile', 'France fixe', 'Germany', 'United Kingdom mobile',
                      'Spain', 'United States', 'Belgium mobile'])[1 + (u5 * 7)::INT % 7]
                   AS destination,
               ([0.060, 0.012, 0.030, 0.080, 0.040, 0.010, 0.090])[1 + (u5 * 7)::INT % 7]
                   AS rate
        FROM draws
        -- the bad day also loses 60 % of its calls (a volume drop)
        WHERE NOT bad_day OR u6 < 0.4
    ),
    timed AS (
        SELECT *,
               call_date::TIMESTAMP::TIMESTAMPTZ + to_microseconds((hour_f * 3600e6)::BIGINT)
                   AS started_at,
               CASE WHEN answered THEN 8 + (u1 * 1000)::INT % 20 END AS ring_s,
               CASE WHEN answered THEN 15 + (u3 * 100000)::INT % 420 ELSE 0 END AS talk_s,
               CASE WHEN answered THEN 16 ELSE failed_cause END AS cause
        FROM shaped
    )
SELECT
    (epoch(call_date)::BIGINT // 86400) * 100000 + i AS call_id,
    call_date, direction,
    CASE WHEN answered THEN 'answered' WHEN cause = 17 THEN 'busy' ELSE 'failed' END AS status,
    started_at,
    CASE WHEN answered THEN started_at + to_seconds(ring_s) END AS answered_at,
    started_at + to_seconds(coalesce(ring_s, 25) + talk_s) AS ended_at,
    coalesce(ring_s, 25) + talk_s AS duration_total_s,
    talk_s AS duration_answered_s,
    CASE WHEN direction = 'outbound' THEN ceil(talk_s / 60) * 60 ELSE 0 END AS duration_billed_s,
    CASE WHEN direction = 'outbound' THEN round(ceil(talk_s / 60) * rate, 4) ELSE 0 END
        AS billing_debit,
    0 AS billing_credit,
    CASE WHEN direction = 'outbound' THEN destination END AS billing_destination_label,
    cause AS hangup_cause,
    q.cause_name AS hangup_cause_name,
    'normal event' AS hangup_cause_class,
    CASE WHEN cause IN (16, 31) THEN (CASE WHEN u4 < 0.5 THEN 'caller' ELSE 'callee' END)
         WHEN cause IN (17, 21) THEN 'callee' ELSE 'system' END AS hangup_source,
    CASE WHEN direction = 'inbound' THEN 'Support line' ELSE 'Outbound dialer' END
        AS scenario_name,
    'export' AS source,
    call_date AS load_partition
FROM timed
JOIN (VALUES (1, 'Unallocated (unassigned) number'), (16, 'Normal call clearing'),
             (17, 'User busy'), (19, 'No answer from user (user alerted)'),
             (21, 'Call rejected'), (31, 'Normal, unspecified'),
             (34, 'No circuit/channel available')) q(cause_code, cause_name)
    ON q.cause_code = timed.cause
"""


def write_month(
    path: Path, last_day: dt.date, *, calls_per_day: int = 400, bad_day: dt.date | None = None
) -> None:
    """30 days of plausible synthetic traffic up to `last_day`, generated in SQL.

    `bad_day` (if given) loses 60 % of its calls and half its answers: volume, ASR and NER drop.
    """
    with warehouse.connect(path) as con:
        warehouse.ensure_schema(con)
        con.execute(_MONTH_SQL, [last_day, last_day, bad_day, calls_per_day])
        marts.rebuild_marts(con, marts.MartSettings())
