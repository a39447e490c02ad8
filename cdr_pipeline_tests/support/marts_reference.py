"""The marts computed from scratch by straightforward queries over the whole `calls` table: the
reference the incrementally maintained mart tables must equal (test_marts_incremental.py)."""

import duckdb

_KPI = """
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
_FROM = "FROM calls c CROSS JOIN analytics_settings s"

REFERENCE_SQL = {
    # Peak concurrency: a running sum over every call of the direction, whatever its day.
    "daily_kpis": f"""
        WITH per_day AS (
            SELECT c.call_date, c.direction, {_KPI} {_FROM} GROUP BY c.call_date, c.direction
        ),
        intervals AS (
            SELECT call_date, direction, started_at,
                   coalesce(ended_at, started_at + to_seconds(duration_total_s)) AS ended_at
            FROM calls
        ),
        events AS (
            SELECT direction, started_at AS instant, 1 AS delta, call_date AS start_day
            FROM intervals WHERE ended_at > started_at
            UNION ALL
            SELECT direction, ended_at, -1, NULL FROM intervals WHERE ended_at > started_at
        ),
        levels AS (
            SELECT direction, start_day, sum(delta) OVER (
                PARTITION BY direction ORDER BY instant, delta ROWS UNBOUNDED PRECEDING
            ) AS in_progress
            FROM events
        ),
        peaks AS (
            SELECT start_day AS call_date, direction, max(in_progress)::BIGINT AS peak
            FROM levels WHERE start_day IS NOT NULL GROUP BY ALL
        )
        SELECT d.*, coalesce(p.peak, 0)::BIGINT AS peak_concurrent_calls
        FROM per_day d LEFT JOIN peaks p USING (call_date, direction)""",
    "hourly_traffic": f"""
        SELECT c.call_date, hour(timezone(s.timezone, c.started_at))::TINYINT AS hour,
               c.direction, count(*)::BIGINT AS calls,
               count(c.answered_at)::BIGINT AS answered_calls,
               (coalesce(sum(c.duration_billed_s), 0) / 60)::DOUBLE AS billed_minutes
        {_FROM} GROUP BY ALL""",
    "destination_kpis": f"""
        SELECT c.call_date, c.direction, c.billing_destination_label, {_KPI}
        {_FROM} GROUP BY c.call_date, c.direction, c.billing_destination_label""",
    "hangup_cause_daily": """
        SELECT call_date, direction, hangup_cause, hangup_cause_name, hangup_cause_class,
               hangup_source, count(*)::BIGINT AS calls,
               (count(*) / sum(count(*)) OVER (PARTITION BY call_date, direction))::DOUBLE AS share
        FROM calls
        GROUP BY call_date, direction, hangup_cause, hangup_cause_name, hangup_cause_class,
                 hangup_source""",
    "scenario_kpis": f"""
        SELECT c.call_date, c.direction, c.scenario_sid, c.scenario_name, c.scenario_type_name,
               {_KPI}
        {_FROM} GROUP BY c.call_date, c.direction, c.scenario_sid, c.scenario_name,
                 c.scenario_type_name""",
}


def differences(con: duckdb.DuckDBPyConnection, mart: str) -> list[tuple]:
    """Rows in the mart table but not in the reference, and the other way round (doubles
    rounded to 9 digits: a sum's last bit depends on the order DuckDB adds in)."""
    columns = [r[0] for r in con.execute(f"DESCRIBE {mart}").fetchall()]
    doubles = {r[0] for r in con.execute(f"DESCRIBE {mart}").fetchall() if r[1] == "DOUBLE"}
    shown = ", ".join(f"round({c}, 9) AS {c}" if c in doubles else c for c in columns)
    reference = f"SELECT {shown} FROM ({REFERENCE_SQL[mart]})"
    table = f"SELECT {shown} FROM {mart}"
    return con.execute(
        f"(({table}) EXCEPT ALL ({reference})) UNION ALL (({reference}) EXCEPT ALL ({table}))"
    ).fetchall()
