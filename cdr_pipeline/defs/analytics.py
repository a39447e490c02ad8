"""Dagster: the week-over-week alert checks on `daily_kpis`, and the daily HTML report.

The checks are evaluated by the `warehouse_tables` step right after it refreshes the marts (they
read the mart tables, in the same DuckDB connection). The report is not daily-partitioned: it is
rendered for the last day of the run that loads days (a backfill of a year writes one report per
run, not 365); any other day on demand (`days` in its run config, `cdr-pipeline report --day`).
"""

import datetime as dt
from collections.abc import Iterable, Iterator, Set
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from cdr_pipeline import alerts, report, warehouse
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.keys import DAILY_KPIS_KEY, MART_KEYS, REPORT_KEY, WRITER_POOL
from cdr_pipeline.defs.metadata import Metadata, number
from cdr_pipeline.defs.ranges import PARTITION_TAG, RANGE_END_TAG
from cdr_pipeline.defs.resources import WarehouseResource

CHECK_NAMES = {
    "calls": "call_volume_vs_last_week",
    "asr": "asr_vs_last_week",
    "ner": "ner_vs_last_week",
}


def thresholds_for(settings: Settings) -> alerts.AlertThresholds:
    """The alert thresholds the settings ask for."""
    return alerts.AlertThresholds(
        volume_change=settings.alert_volume_change,
        ratio_drop=settings.alert_ratio_drop,
        min_calls=settings.alert_min_calls,
    )


def alert_check_specs(thresholds: alerts.AlertThresholds) -> list[dg.AssetCheckSpec]:
    """The three week-over-week checks on `daily_kpis` (WARN, non-blocking)."""
    specs = []
    for metric, name in CHECK_NAMES.items():
        limit = (
            f"moves more than {thresholds.volume_change:.0%} either way"
            if metric == "calls"
            else f"drops by more than {thresholds.ratio_drop * 100:g} points"
        )
        label = "call volume" if metric == "calls" else metric.upper()
        specs.append(
            dg.AssetCheckSpec(
                name,
                asset=DAILY_KPIS_KEY,
                blocking=False,
                description=f"WARN when a direction's {label} {limit} against the same weekday "
                "of the week before (CDR-Stats-style alarm), for each day a run loads.",
            )
        )
    return specs


def alert_results(thresholds: alerts.AlertThresholds):
    """A function evaluating the selected alert checks for a run's days."""

    def evaluate(
        con: duckdb.DuckDBPyConnection, days: Iterable[dt.date], selected: Set[dg.AssetCheckKey]
    ) -> Iterator[dg.AssetCheckResult]:
        days = sorted(days)
        for metric, name in CHECK_NAMES.items():
            if dg.AssetCheckKey(DAILY_KPIS_KEY, name) not in selected:
                continue
            comparisons = [
                c
                for day in days
                for c in alerts.compare_with_last_week(con, day, metric, thresholds)
            ]
            yield _check_result(name, comparisons, thresholds.min_calls)

    return evaluate


def _check_result(
    name: str, comparisons: list[alerts.Comparison], min_calls: int
) -> dg.AssetCheckResult:
    """Pass unless a day and direction breached; metadata: the last day's values, the
    breaches of every day."""
    breached = [c for c in comparisons if c.breached]
    last_day = max(c.day for c in comparisons)
    latest = [c for c in comparisons if c.day == last_day]
    first = latest[0]
    metadata: Metadata = {
        "day": first.day.isoformat(),
        "baseline_day": first.baseline_day.isoformat(),
        "threshold": first.threshold,
        "min_calls": min_calls,
        "days_checked": len({c.day for c in comparisons}),
        "days_breached": ", ".join(sorted({c.day.isoformat() for c in breached})) or "none",
    }
    for c in latest:
        metadata |= {
            f"{c.direction}_value": number(c.value),
            f"{c.direction}_baseline": number(c.baseline),
            f"{c.direction}_change": number(c.change),
        }
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=DAILY_KPIS_KEY,
        passed=not breached,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description="; ".join(f"{c.day}: {c.describe()}" for c in breached or latest),
    )


class ReportConfig(dg.Config):
    """Which days get their report rendered (default: the last day the run loaded)."""

    days: list[str] = Field(
        default_factory=list,
        description="ISO dates, e.g. ['2026-11-02']: render these days' reports (on demand)",
    )


def report_days(context: dg.AssetExecutionContext, config: ReportConfig) -> list[dt.date]:
    """The days to render: those asked for; else the last day of the run's range (or its
    partition); else, in a run of its own, the latest day loaded."""
    if config.days:
        return sorted({dt.date.fromisoformat(d) for d in config.days})
    tags = context.run.tags
    last = tags.get(RANGE_END_TAG) or tags.get(PARTITION_TAG)
    return [dt.date.fromisoformat(last)] if last else []


def build_report_asset(thresholds: alerts.AlertThresholds) -> dg.AssetsDefinition:
    """`daily_report`: the HTML report of the last day a run loaded, or of days asked for."""

    @dg.asset(
        key=REPORT_KEY,
        deps=list(MART_KEYS),
        group_name="marts",
        kinds={"html"},
        pool=WRITER_POOL,  # reads DuckDB: keep clear of the loads
        description="The self-contained HTML report of a day under CDR_DATA_DIR/reports/: calls "
        f"per hour, ASR and NER over {report.TREND_DAYS} days, top hangup causes, cost by "
        "destination, alerts and the KPI table. Rendered for the last day a run loads (a "
        "backfill of a year renders one report per run, not 365); any other day on demand, "
        "with the run config `days` or `cdr-pipeline report --day`.",
    )
    def daily_report(
        context: dg.AssetExecutionContext, config: ReportConfig, lake: WarehouseResource
    ) -> dg.MaterializeResult:
        days = report_days(context, config)
        with lake.connect(read_only=True) as con:
            days = days or warehouse.latest_loaded_day(con)
            data = [report.load_report_data(con, day, thresholds) for day in days]
        folder = report.reports_dir(Path(lake.data_dir))
        metadata: Metadata = {"days": ", ".join(d.isoformat() for d in days) or "none"}
        for day_data in data:
            rendered, path = report.write_day_report(day_data, folder)
            context.log.info(f"report for {day_data.day}: {path}")
            metadata |= {
                "day": day_data.day.isoformat(),
                "path": dg.MetadataValue.path(str(path)),
                "open": dg.MetadataValue.url(path.resolve().as_uri()),
                "bytes": len(rendered.html.encode()),
                **{
                    name: dg.MetadataValue.md(report.markdown_image(svg, report.CHART_TITLES[name]))
                    for name, svg in rendered.charts_svg.items()
                },
            }
        return dg.MaterializeResult(metadata=metadata)

    return daily_report


def build_alert_parts(settings: Settings):
    """The alert specs and their evaluation, for the warehouse step."""
    thresholds = thresholds_for(settings)
    return alert_check_specs(thresholds), alert_results(thresholds)
