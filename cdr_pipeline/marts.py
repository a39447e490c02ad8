"""KPI marts: DuckDB views over `calls`, and the small settings table they read.

Every mart is a view, so it is always exactly as current as `calls` (a late call, a reloaded
partition or a re-normalised day shows up at once, in every day it touches) and nothing can go
stale. Two things a view cannot know by itself live in the one-row table `analytics_settings`:

- `timezone`: the CDR_TIMEZONE the hour of a call is read in (`call_date` is already local);
- `ner_causes`: the Q.850 codes that count as "ended by user behaviour" for NER (ITU-T E.425).

`ensure_marts` creates the table (with the defaults) and the views; `configure_marts` writes the
settings from the pipeline's configuration (the `analytics_marts` asset does it on every run).

Definitions shared by the marts (docs/analytics.md states them for users):

- a call is *answered* when `answered_at` is not null;
- ASR = answered calls / calls;
- NER = (answered calls + unanswered calls whose `hangup_cause` is in `ner_causes`) / calls;
- ACD = mean `duration_answered_s` over answered calls (calls never answered are not in the
  denominator; an answered call with no duration recorded is left out of the mean);
- billed minutes = sum of `duration_billed_s` / 60; cost = `billing_debit`;
- cost per billed minute = billing_debit / billed minutes (null when nothing was billed);
- a call occupies the half-open interval [`started_at`, `ended_at`): a call that ends at the very
  instant another starts does not overlap it; a call without `ended_at` ends at
  `started_at + duration_total_s`, and an empty interval (zero length, or no end at all) is never
  in progress.
"""

import datetime as dt
from collections.abc import Sequence

import duckdb

from cdr_pipeline.config import DEFAULT_NER_CAUSES, DEFAULT_TIMEZONE

SETTINGS_TABLE = "analytics_settings"
MART_VIEWS: tuple[str, ...] = (
    "daily_kpis",
    "hourly_traffic",
    "destination_kpis",
    "hangup_cause_daily",
    "scenario_kpis",
)

_SETTINGS_DDL = f"""
CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} (
    timezone VARCHAR NOT NULL,
    ner_causes SMALLINT[] NOT NULL
)
"""

# Aggregates shared by every per-group mart. `c` is `calls`, `s` the settings row.
_KPI_AGGREGATES = """
    count(*)::BIGINT AS calls,
    count(c.answered_at)::BIGINT AS answered_calls,
    (count(c.answered_at) / count(*))::DOUBLE AS asr,
    (count(*) FILTER (
        WHERE c.answered_at IS NOT NULL OR list_contains(s.ner_causes, c.hangup_cause)
    ) / count(*))::DOUBLE AS ner,
    avg(c.duration_answered_s) FILTER (WHERE c.answered_at IS NOT NULL)::DOUBLE AS acd_s,
    (coalesce(sum(c.duration_billed_s), 0) / 60)::DOUBLE AS billed_minutes,
    coalesce(sum(c.billing_debit), 0)::DECIMAL(18, 6) AS billing_debit,
    coalesce(sum(c.billing_credit), 0)::DECIMAL(18, 6) AS billing_credit,
    CASE WHEN sum(c.duration_billed_s) > 0
        THEN (sum(c.billing_debit) * 60 / sum(c.duration_billed_s))::DECIMAL(18, 6)
    END AS cost_per_billed_minute"""

_FROM_CALLS = f"FROM calls c CROSS JOIN {SETTINGS_TABLE} s"

# Concurrency only rises when a call starts, so a day's peak is the highest number of calls in
# progress just after one of that day's calls started. The running sum runs over every call of
# the direction, whatever day it started on: a call still in progress after midnight counts in
# the next day's peak. At equal instants ends (-1) sort before starts (+1): half-open intervals.
_PEAK_CONCURRENCY = """
    intervals AS (
        SELECT call_date, direction, started_at,
               coalesce(ended_at, started_at + to_seconds(duration_total_s)) AS ended_at
        FROM calls
    ),
    events AS (
        SELECT direction, started_at AS instant, 1 AS delta, call_date AS start_day
        FROM intervals WHERE ended_at > started_at
        UNION ALL
        SELECT direction, ended_at AS instant, -1 AS delta, NULL AS start_day
        FROM intervals WHERE ended_at > started_at
    ),
    levels AS (
        SELECT direction, start_day,
               sum(delta) OVER (
                   PARTITION BY direction ORDER BY instant, delta ROWS UNBOUNDED PRECEDING
               ) AS in_progress
        FROM events
    ),
    peaks AS (
        SELECT start_day AS call_date, direction, max(in_progress)::BIGINT AS peak_concurrent_calls
        FROM levels WHERE start_day IS NOT NULL
        GROUP BY ALL
    )"""

DAILY_KPIS_SQL = f"""
CREATE OR REPLACE VIEW daily_kpis AS
WITH
    per_day AS (
        SELECT c.call_date, c.direction, {_KPI_AGGREGATES}
        {_FROM_CALLS}
        GROUP BY c.call_date, c.direction
    ),
{_PEAK_CONCURRENCY}
SELECT
    d.call_date, d.direction, d.calls, d.answered_calls, d.asr, d.ner, d.acd_s,
    d.billed_minutes, d.billing_debit, d.billing_credit, d.cost_per_billed_minute,
    coalesce(p.peak_concurrent_calls, 0)::BIGINT AS peak_concurrent_calls
FROM per_day d
LEFT JOIN peaks p USING (call_date, direction)
"""

HOURLY_TRAFFIC_SQL = f"""
CREATE OR REPLACE VIEW hourly_traffic AS
SELECT
    c.call_date,
    hour(timezone(s.timezone, c.started_at))::TINYINT AS hour,
    c.direction,
    count(*)::BIGINT AS calls,
    count(c.answered_at)::BIGINT AS answered_calls,
    (coalesce(sum(c.duration_billed_s), 0) / 60)::DOUBLE AS billed_minutes
{_FROM_CALLS}
GROUP BY ALL
"""

DESTINATION_KPIS_SQL = f"""
CREATE OR REPLACE VIEW destination_kpis AS
SELECT c.call_date, c.direction, c.billing_destination_label, {_KPI_AGGREGATES}
{_FROM_CALLS}
GROUP BY c.call_date, c.direction, c.billing_destination_label
"""

HANGUP_CAUSE_DAILY_SQL = """
CREATE OR REPLACE VIEW hangup_cause_daily AS
SELECT
    call_date, direction, hangup_cause, hangup_cause_name, hangup_cause_class, hangup_source,
    count(*)::BIGINT AS calls,
    (count(*) / sum(count(*)) OVER (PARTITION BY call_date, direction))::DOUBLE AS share
FROM calls
GROUP BY call_date, direction, hangup_cause, hangup_cause_name, hangup_cause_class, hangup_source
"""

SCENARIO_KPIS_SQL = f"""
CREATE OR REPLACE VIEW scenario_kpis AS
SELECT c.call_date, c.direction, c.scenario_sid, c.scenario_name, c.scenario_type_name,
       {_KPI_AGGREGATES}
{_FROM_CALLS}
GROUP BY c.call_date, c.direction, c.scenario_sid, c.scenario_name, c.scenario_type_name
"""

MART_SQL: dict[str, str] = {
    "daily_kpis": DAILY_KPIS_SQL,
    "hourly_traffic": HOURLY_TRAFFIC_SQL,
    "destination_kpis": DESTINATION_KPIS_SQL,
    "hangup_cause_daily": HANGUP_CAUSE_DAILY_SQL,
    "scenario_kpis": SCENARIO_KPIS_SQL,
}


# Each mart's columns: (name, DuckDB type, meaning). The Dagster column schemas, docs/analytics.md
# and test_marts.py follow this table.
_KPI_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("calls", "BIGINT", "calls"),
    ("answered_calls", "BIGINT", "calls with answered_at set"),
    ("asr", "DOUBLE", "answer-seizure ratio: answered_calls / calls"),
    (
        "ner",
        "DOUBLE",
        "network effectiveness ratio (E.425): (answered + calls ended by a "
        "cause in analytics_settings.ner_causes) / calls",
    ),
    ("acd_s", "DOUBLE", "average call duration: mean duration_answered_s of answered calls"),
    ("billed_minutes", "DOUBLE", "sum(duration_billed_s) / 60"),
    ("billing_debit", "DECIMAL(18,6)", "sum of billing_debit (currency units): the cost"),
    ("billing_credit", "DECIMAL(18,6)", "sum of billing_credit (currency units)"),
    (
        "cost_per_billed_minute",
        "DECIMAL(18,6)",
        "billing_debit / billed_minutes; null when nothing was billed",
    ),
)
MART_COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "daily_kpis": (
        ("call_date", "DATE", "local day of the calls' start (CDR_TIMEZONE)"),
        ("direction", "VARCHAR", "inbound / outbound"),
        *_KPI_COLUMNS,
        (
            "peak_concurrent_calls",
            "BIGINT",
            "most calls of this direction in progress at once, "
            "measured when each of the day's calls started; intervals [started_at, ended_at)",
        ),
    ),
    "hourly_traffic": (
        ("call_date", "DATE", "local day"),
        ("hour", "TINYINT", "local hour of started_at (0-23) in analytics_settings.timezone"),
        ("direction", "VARCHAR", "inbound / outbound"),
        ("calls", "BIGINT", "calls started in the hour"),
        ("answered_calls", "BIGINT", "of which answered"),
        ("billed_minutes", "DOUBLE", "sum(duration_billed_s) / 60"),
    ),
    "destination_kpis": (
        ("call_date", "DATE", "local day"),
        ("direction", "VARCHAR", "inbound / outbound"),
        ("billing_destination_label", "VARCHAR", "billed destination (null: none given)"),
        *_KPI_COLUMNS,
    ),
    "hangup_cause_daily": (
        ("call_date", "DATE", "local day"),
        ("direction", "VARCHAR", "inbound / outbound"),
        ("hangup_cause", "SMALLINT", "Q.850 cause code"),
        ("hangup_cause_name", "VARCHAR", "Q.850 cause name"),
        ("hangup_cause_class", "VARCHAR", "Q.850 cause class"),
        ("hangup_source", "VARCHAR", "who hung up: caller / callee / system"),
        ("calls", "BIGINT", "calls"),
        ("share", "DOUBLE", "calls / all calls of the day and direction"),
    ),
    "scenario_kpis": (
        ("call_date", "DATE", "local day"),
        ("direction", "VARCHAR", "inbound / outbound"),
        ("scenario_sid", "VARCHAR", "scenario id"),
        ("scenario_name", "VARCHAR", "scenario name"),
        ("scenario_type_name", "VARCHAR", "scenario type"),
        *_KPI_COLUMNS,
    ),
}
MART_DESCRIPTIONS: dict[str, str] = {
    "daily_kpis": "Per day and direction: volume, ASR, NER, ACD, billed minutes, cost, "
    "peak concurrent calls.",
    "hourly_traffic": "Per day, local hour and direction: calls, answered calls, billed minutes.",
    "destination_kpis": "Per day, direction and billed destination: calls, ASR, NER, ACD, "
    "minutes, cost.",
    "hangup_cause_daily": "Per day, direction, Q.850 cause and hangup source: calls and share.",
    "scenario_kpis": "Per day, direction and Callr scenario: calls, ASR, NER, ACD, minutes, cost.",
}


def ensure_marts(con: duckdb.DuckDBPyConnection) -> None:
    """Create `analytics_settings` (defaults if empty) and the mart views. Needs `calls`."""
    con.execute(_SETTINGS_DDL)
    con.execute(
        f"INSERT INTO {SETTINGS_TABLE} SELECT ?, ?::SMALLINT[] "
        f"WHERE NOT EXISTS (SELECT 1 FROM {SETTINGS_TABLE})",
        [DEFAULT_TIMEZONE, list(DEFAULT_NER_CAUSES)],
    )
    for sql in MART_SQL.values():
        con.execute(sql)


def configure_marts(
    con: duckdb.DuckDBPyConnection, *, timezone: str, ner_causes: Sequence[int]
) -> None:
    """Set the timezone of `hourly_traffic` and the NER cause codes every mart reads."""
    ensure_marts(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {SETTINGS_TABLE}")
        con.execute(
            f"INSERT INTO {SETTINGS_TABLE} VALUES (?, ?::SMALLINT[])",
            [timezone, sorted(set(ner_causes))],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def mart_settings(con: duckdb.DuckDBPyConnection) -> tuple[str, tuple[int, ...]]:
    """The (timezone, NER cause codes) the marts currently use."""
    rows = con.execute(f"SELECT timezone, ner_causes FROM {SETTINGS_TABLE}").fetchall()
    if not rows:
        return DEFAULT_TIMEZONE, DEFAULT_NER_CAUSES
    return rows[0][0], tuple(rows[0][1])


def mart_rows(con: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, int]:
    """How many rows each mart holds for `call_date = day`."""
    counts = {}
    for view in MART_VIEWS:
        sql = f"SELECT count(*) FROM {view} WHERE call_date = ?::DATE"
        counts[view] = int(con.execute(sql, [day]).fetchall()[0][0])
    return counts
