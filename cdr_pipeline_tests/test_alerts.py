"""Week-over-week alerts: the comparison core, and the asset checks run through real Dagster over a
DuckDB file."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from cdr_pipeline import alerts, warehouse
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.analytics import CHECK_NAMES, DAILY_KPIS_KEY, REPORT_KEY
from cdr_pipeline.defs.assets import MART_KEYS
from cdr_pipeline.defs.definitions import DAILY_JOB, build_definitions
from cdr_pipeline_tests.support.marts_rows import DAY, at, call, write_calls

LAST_WEEK = DAY - dt.timedelta(days=7)


def day_of_calls(day: dt.date, first_id: int, answered: int, failed: int, cause: int = 34,
                 direction: str = "outbound") -> list[dict]:  # fmt: skip
    """`answered` answered calls then `failed` calls ended by `cause`, one a minute from 09:00."""
    rows = []
    for n in range(answered + failed):
        started = at(day, "09:00:00") + dt.timedelta(minutes=n)
        is_answered = n < answered
        rows.append(
            call(first_id + n, started, started + dt.timedelta(seconds=30),
                 answered=started + dt.timedelta(seconds=5) if is_answered else None,
                 cause=16 if is_answered else cause, direction=direction)
        )  # fmt: skip
    return rows


def compare(path: Path, metric: str, **thresholds: float) -> list[alerts.Comparison]:
    with warehouse.connect(path, read_only=True) as con:
        return alerts.compare_with_last_week(con, DAY, metric, alerts.AlertThresholds(**thresholds))


def outbound(comparisons: list[alerts.Comparison]) -> alerts.Comparison:
    return next(c for c in comparisons if c.direction == "outbound")


def test_volume_drop_and_surge_alarm_but_small_moves_do_not(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    write_calls(path, day_of_calls(LAST_WEEK, 1, 10, 0) + day_of_calls(DAY, 100, 6, 0))
    drop = outbound(compare(path, "calls", volume_change=0.3))
    assert (drop.value, drop.baseline, drop.change, drop.breached) == (6, 10, -0.4, True)
    assert not outbound(compare(path, "calls", volume_change=0.4)).breached  # exactly 40 %: no
    inbound = next(c for c in compare(path, "calls") if c.direction == "inbound")
    assert (inbound.value, inbound.baseline, inbound.breached) == (0, 0, False)  # no baseline

    surge = tmp_path / "surge.duckdb"
    write_calls(surge, day_of_calls(LAST_WEEK, 1, 10, 0) + day_of_calls(DAY, 100, 14, 0))
    assert outbound(compare(surge, "calls", volume_change=0.3)).breached  # +40 %


def test_ratio_alarms_fire_on_drops_only(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    # last week: ASR 8/10, NER 8/10 (2 failures, cause 34); this day: ASR 6/10, NER 9/10 (17)
    write_calls(
        path,
        day_of_calls(LAST_WEEK, 1, 8, 2, cause=34)
        + day_of_calls(DAY, 100, 6, 3, cause=17)
        + day_of_calls(DAY, 200, 0, 1, cause=34),
    )
    asr = outbound(compare(path, "asr", ratio_drop=0.1))
    assert (asr.value, asr.baseline, asr.breached) == (0.6, 0.8, True)
    assert asr.change == pytest.approx(-0.2)
    assert not outbound(compare(path, "asr", ratio_drop=0.2)).breached  # exactly 20 points: no
    ner = outbound(compare(path, "ner", ratio_drop=0.1))
    assert (ner.value, ner.baseline, ner.breached) == (0.9, 0.8, False)  # a rise never alarms


def test_days_with_too_few_calls_are_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    # a baseline of 4 calls (say, the spill-over of a day never loaded) against a real day
    write_calls(path, day_of_calls(LAST_WEEK, 1, 4, 0) + day_of_calls(DAY, 100, 30, 30))
    for metric in alerts.METRICS:
        found = outbound(compare(path, metric, min_calls=10))
        assert not found.breached
        assert found.skipped == "2026-02-23 has 4 calls, fewer than 10"
    assert outbound(compare(path, "calls", min_calls=4)).breached  # 4 -> 60: +1400 %
    # ASR/NER need enough calls on the day too: 5 calls, 1 answered, against 20 answered
    small = tmp_path / "small.duckdb"
    write_calls(small, day_of_calls(LAST_WEEK, 1, 20, 0) + day_of_calls(DAY, 100, 1, 4))
    asr = outbound(compare(small, "asr", min_calls=10))
    assert (asr.breached, asr.skipped) == (False, "2026-03-02 has 5 calls, fewer than 10")
    assert outbound(compare(small, "calls", min_calls=10)).breached  # the volume drop is seen
    assert outbound(compare(small, "asr", min_calls=5)).breached


def test_no_calls_on_the_day_is_a_volume_alarm_not_a_ratio_alarm(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    write_calls(path, day_of_calls(LAST_WEEK, 1, 10, 0))
    assert outbound(compare(path, "calls")).breached
    asr = outbound(compare(path, "asr"))
    assert (asr.value, asr.breached, asr.change) == (None, False, None)


def run_checks(path: Path, data_dir: Path) -> dg.ExecuteInProcessResult:
    """Materialise the marts and the report of DAY with their checks, through Dagster."""
    settings = Settings(
        base_url="http://127.0.0.1:9",
        data_dir=data_dir,
        warehouse=path,
        start_date=dt.date(2026, 1, 1),
        timezone="UTC",
    )
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=DAY.isoformat(),
        asset_selection=[*MART_KEYS, REPORT_KEY],
        raise_on_error=False,
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_warn_on_a_drop_through_dagster(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    # last week 20 calls, all answered; this day 12 calls, 6 answered, 6 failed (34): every
    # metric falls (volume -40 %, ASR and NER 100 % -> 50 %).
    write_calls(path, day_of_calls(LAST_WEEK, 1, 20, 0) + day_of_calls(DAY, 100, 6, 6))
    result = run_checks(path, tmp_path / "data")
    assert result.success  # non-blocking: the run and the report go on
    found = evaluations(result)
    assert set(found) == set(CHECK_NAMES.values())
    for evaluation in found.values():
        assert evaluation.asset_key == DAILY_KPIS_KEY
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
    volume = found["call_volume_vs_last_week"].metadata
    assert volume["outbound_value"].value == 12.0
    assert volume["outbound_baseline"].value == 20.0
    assert volume["min_calls"].value == 10
    assert volume["threshold"].value == pytest.approx(0.3)
    assert volume["baseline_day"].value == LAST_WEEK.isoformat()
    asr = found["asr_vs_last_week"]
    assert asr.metadata["outbound_value"].value == 0.5
    assert asr.metadata["outbound_baseline"].value == 1.0
    assert asr.metadata["threshold"].value == pytest.approx(0.1)
    assert "outbound asr 0.500 vs 1.000" in (asr.description or "")
    assert result.asset_materializations_for_node("daily_report")


def test_checks_stay_quiet_without_a_drop_through_dagster(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    # the same traffic both weeks, give or take one call (10 % < 30 %)
    write_calls(path, day_of_calls(LAST_WEEK, 1, 8, 2) + day_of_calls(DAY, 100, 8, 3))
    result = run_checks(path, tmp_path / "data")
    assert result.success
    found = evaluations(result)
    assert set(found) == set(CHECK_NAMES.values())
    assert all(e.passed for e in found.values())
    assert found["call_volume_vs_last_week"].metadata["outbound_value"].value == 11.0
