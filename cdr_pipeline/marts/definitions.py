"""What each KPI mart holds: its columns, its meaning, and the SQL that computes some days of it.

Every query reads `calls c` restricted to `c.call_date BETWEEN {lo} AND {hi}` (date literals, so
DuckDB prunes row groups by their min/max `call_date`) and the one-row settings table
`analytics_settings s`. `docs/analytics.md` states the definitions for users:

- a call is *answered* when `answered_at` is not null;
- ASR = answered calls / calls; NER = (answered + unanswered calls whose `hangup_cause` is in
  `ner_causes`) / calls; ACD = mean `duration_answered_s` over answered calls;
- billed minutes = sum of `duration_billed_s` / 60; cost = `billing_debit`;
- a call occupies the half-open interval [`started_at`, `ended_at`); without `ended_at` it ends at
  `started_at + duration_total_s`; an empty interval is never in progress.
"""

import datetime as dt
import hashlib

from cdr_pipeline.db import date_literal
from cdr_pipeline.schema import CALLS_TABLE

SETTINGS_TABLE = "analytics_settings"  # the one-row settings the marts were computed with
MART_TABLES: tuple[str, ...] = (
    "daily_kpis",
    "hourly_traffic",
    "destination_kpis",
    "hangup_cause_daily",
    "scenario_kpis",
)

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

_DAYS = (
    f"FROM {CALLS_TABLE} c CROSS JOIN {SETTINGS_TABLE} s "
    "WHERE c.call_date BETWEEN {lo} AND {hi}"
)

# Concurrency only rises when a call starts, so a day's peak is the highest number of calls in
# progress just after one of that day's calls started. The running sum starts {span} days before
# the first day computed (`span`: the longest call seen, in midnights crossed), so a call still in
# progress after midnight counts in the next day's peak. The sort key is the instant in
# microseconds, doubled, plus one for a start: at equal instants ends (-1) sort before starts (+1),
# half-open intervals. (One integer key sorts about twice as fast as an instant and a delta.)
_DAILY_KPIS = f"""
WITH
    per_day AS (
        SELECT c.call_date, c.direction, {_KPI_AGGREGATES}
        {_DAYS}
        GROUP BY c.call_date, c.direction
    ),
    intervals AS (
        SELECT c.call_date, c.direction = 'inbound' AS inbound, epoch_us(c.started_at) AS s,
               epoch_us(coalesce(c.ended_at, c.started_at + to_seconds(c.duration_total_s))) AS e
        FROM {CALLS_TABLE} c WHERE c.call_date BETWEEN {{reach}} AND {{hi}}
    ),
    events AS (
        SELECT inbound, s * 2 + 1 AS k, 1 AS delta, call_date AS start_day
        FROM intervals WHERE e > s
        UNION ALL
        SELECT inbound, e * 2 AS k, -1 AS delta, NULL AS start_day
        FROM intervals WHERE e > s
    ),
    levels AS (
        SELECT inbound, start_day,
               sum(delta) OVER (PARTITION BY inbound ORDER BY k ROWS UNBOUNDED PRECEDING)
                   AS in_progress
        FROM events
    ),
    peaks AS (
        SELECT start_day AS call_date,
               CASE WHEN inbound THEN 'inbound' ELSE 'outbound' END AS direction,
               max(in_progress)::BIGINT AS peak_concurrent_calls
        FROM levels WHERE start_day BETWEEN {{lo}} AND {{hi}}
        GROUP BY ALL
    )
SELECT
    d.call_date, d.direction, d.calls, d.answered_calls, d.asr, d.ner, d.acd_s,
    d.billed_minutes, d.billing_debit, d.billing_credit, d.cost_per_billed_minute,
    coalesce(p.peak_concurrent_calls, 0)::BIGINT AS peak_concurrent_calls
FROM per_day d
LEFT JOIN peaks p USING (call_date, direction)
"""

_HOURLY_TRAFFIC = f"""
SELECT
    c.call_date,
    hour(timezone(s.timezone, c.started_at))::TINYINT AS hour,
    c.direction,
    count(*)::BIGINT AS calls,
    count(c.answered_at)::BIGINT AS answered_calls,
    (coalesce(sum(c.duration_billed_s), 0) / 60)::DOUBLE AS billed_minutes
{_DAYS}
GROUP BY ALL
"""

_DESTINATION_KPIS = f"""
SELECT c.call_date, c.direction, c.billing_destination_label, {_KPI_AGGREGATES}
{_DAYS}
GROUP BY c.call_date, c.direction, c.billing_destination_label
"""

_HANGUP_CAUSE_DAILY = f"""
SELECT
    c.call_date, c.direction, c.hangup_cause, c.hangup_cause_name, c.hangup_cause_class,
    c.hangup_source,
    count(*)::BIGINT AS calls,
    (count(*) / sum(count(*)) OVER (PARTITION BY c.call_date, c.direction))::DOUBLE AS share
{_DAYS}
GROUP BY c.call_date, c.direction, c.hangup_cause, c.hangup_cause_name, c.hangup_cause_class,
         c.hangup_source
"""

_SCENARIO_KPIS = f"""
SELECT c.call_date, c.direction, c.scenario_sid, c.scenario_name, c.scenario_type_name,
       {_KPI_AGGREGATES}
{_DAYS}
GROUP BY c.call_date, c.direction, c.scenario_sid, c.scenario_name, c.scenario_type_name
"""

_MART_SELECTS: dict[str, str] = {
    "daily_kpis": _DAILY_KPIS,
    "hourly_traffic": _HOURLY_TRAFFIC,
    "destination_kpis": _DESTINATION_KPIS,
    "hangup_cause_daily": _HANGUP_CAUSE_DAILY,
    "scenario_kpis": _SCENARIO_KPIS,
}


def mart_select(mart: str, first: dt.date, last: dt.date, span_days: int) -> str:
    """The SELECT computing `mart` for the days `first` to `last`, inclusive.

    `span_days`: the most midnights any call in `calls` crosses (the peak concurrency of a day
    counts the calls started up to that many days before).
    """
    return _MART_SELECTS[mart].format(
        lo=date_literal(first),
        hi=date_literal(last),
        reach=date_literal(first - dt.timedelta(days=span_days)),
    )


# The version of what the marts mean: marts computed under another version must be rebuilt
# (`refresh.check_settings`). Bump it when a change of the SQL below changes any figure; a change
# that only computes the same figures faster keeps it, so nobody has to rebuild for nothing.
DEFINITION_VERSION = "1"
# The SQL the version was last reviewed against: test_marts.py fails when the SQL changes without
# this being updated, so a change of meaning cannot slip by without a decision on the version.
SQL_FINGERPRINT = "66323b6e7526b43b"


def sql_fingerprint() -> str:
    """A hash of every mart's SQL."""
    text = "\n".join(_MART_SELECTS[m] for m in MART_TABLES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Each mart's columns: (name, DuckDB type, meaning). The tables' DDL, the Dagster column schemas,
# docs/analytics.md and test_marts.py follow this table.
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


def mart_ddl(mart: str) -> str:
    """`CREATE TABLE IF NOT EXISTS` for a mart, from its columns (`call_date` never null)."""
    columns = ",\n    ".join(
        f"{name} {sql_type}{' NOT NULL' if name in ('call_date', 'direction') else ''}"
        for name, sql_type, _ in MART_COLUMNS[mart]
    )
    return f"CREATE TABLE IF NOT EXISTS {mart} (\n    {columns}\n)"
