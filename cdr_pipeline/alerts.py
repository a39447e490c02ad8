"""Alarms in the manner of CDR-Stats: a day's call volume, ASR and NER against the same weekday of
the week before, per direction, from `daily_kpis`.

- call volume alarms when it moves, up or down, by more than `volume_change` relative to the
  baseline (0.3: 100 calls → fewer than 70 or more than 130); a surge matters too (toll fraud);
  a baseline day without calls gives no alarm (nothing to compare with);
- ASR and NER alarm when they drop by more than `ratio_drop` absolute (0.1 = 10 points:
  0.55 → below 0.45); a rise never alarms; a day (or baseline) without calls has no ratio and
  gives no alarm, the volume alarm covers it;
- a baseline day with fewer than `min_calls` calls is too small to compare with (nothing is
  judged), and so is, for ASR and NER, a day with fewer than `min_calls` calls: a handful of calls
  swings a ratio or a percentage without meaning anything.
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdr_pipeline.config import (
    DEFAULT_ALERT_MIN_CALLS,
    DEFAULT_ALERT_RATIO_DROP,
    DEFAULT_ALERT_VOLUME_CHANGE,
)
from cdr_pipeline.schema import DIRECTIONS

METRICS: tuple[str, ...] = ("calls", "asr", "ner")
BASELINE_DAYS = 7  # same weekday, one week before


@dataclass(frozen=True)
class AlertThresholds:
    """How far a metric may move against its baseline before it alarms."""

    volume_change: float = DEFAULT_ALERT_VOLUME_CHANGE  # relative, both ways
    ratio_drop: float = DEFAULT_ALERT_RATIO_DROP  # absolute drop of ASR / NER
    min_calls: int = DEFAULT_ALERT_MIN_CALLS  # fewer calls on a compared day: not judged


@dataclass(frozen=True)
class Comparison:
    """One metric of one direction on a day, against the same weekday a week before."""

    metric: str
    direction: str
    day: dt.date
    baseline_day: dt.date
    value: float | None
    baseline: float | None
    threshold: float
    breached: bool
    skipped: str | None = None  # why the day was not judged, if it was not

    @property
    def change(self) -> float | None:
        """Relative change for call volume, absolute change for ASR and NER; None if unknown."""
        if self.value is None or self.baseline is None:
            return None
        if self.metric == "calls":
            return (self.value - self.baseline) / self.baseline if self.baseline else None
        return self.value - self.baseline

    def describe(self) -> str:
        """E.g. 'outbound asr 0.300 vs 0.550 on 2026-02-23 (-0.250, limit -0.1)'."""
        if self.skipped:
            return f"{self.direction} {self.metric}: not judged, {self.skipped}"
        if self.value is None or self.baseline is None or self.change is None:
            return f"{self.direction} {self.metric}: no baseline on {self.baseline_day}"
        if self.metric == "calls":
            return (
                f"{self.direction} calls {self.value:.0f} vs {self.baseline:.0f} on "
                f"{self.baseline_day} ({self.change:+.1%}, limit ±{self.threshold:.0%})"
            )
        return (
            f"{self.direction} {self.metric} {self.value:.3f} vs {self.baseline:.3f} on "
            f"{self.baseline_day} ({self.change:+.3f}, limit -{self.threshold:g})"
        )


def compare_with_last_week(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    metric: str,
    thresholds: AlertThresholds = AlertThresholds(),
) -> list[Comparison]:
    """`metric` ('calls', 'asr' or 'ner') of each direction on `day` vs a week before."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    baseline_day = day - dt.timedelta(days=BASELINE_DAYS)
    rows = con.execute(
        f"""
        SELECT d.direction, today.{metric}, before.{metric},
               coalesce(today.calls, 0), coalesce(before.calls, 0)
        FROM unnest(?::VARCHAR[]) AS d(direction)
        LEFT JOIN daily_kpis today ON today.direction = d.direction AND today.call_date = ?
        LEFT JOIN daily_kpis before ON before.direction = d.direction AND before.call_date = ?
        ORDER BY d.direction
        """,
        [list(DIRECTIONS), day, baseline_day],
    ).fetchall()
    comparisons = []
    for direction, value, baseline, calls, baseline_calls in rows:
        skipped = None
        if baseline_calls < max(thresholds.min_calls, 1):
            skipped = (
                f"{baseline_day} has {baseline_calls} calls, fewer than {thresholds.min_calls}"
            )
        elif metric != "calls" and calls < thresholds.min_calls:
            skipped = f"{day} has {calls} calls, fewer than {thresholds.min_calls}"
        if metric == "calls":
            value, baseline = calls, baseline_calls  # no row = no calls that day
            threshold = thresholds.volume_change
            breached = round(abs(value - baseline) / max(baseline, 1), 9) > threshold
        else:
            threshold = thresholds.ratio_drop
            breached = (
                value is not None
                and baseline is not None
                and round(baseline - value, 9) > threshold  # 0.55 - 0.45 is not > 0.1
            )
        comparisons.append(
            Comparison(
                metric=metric,
                direction=direction,
                day=day,
                baseline_day=baseline_day,
                value=None if value is None else float(value),
                baseline=None if baseline is None else float(baseline),
                threshold=threshold,
                breached=bool(breached) and skipped is None,
                skipped=skipped,
            )
        )
    return comparisons
