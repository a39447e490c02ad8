"""Dagster: the KPI marts, their week-over-week alert checks and the daily HTML report.

All daily-partitioned like `calls`: materialising a day refreshes the marts' settings, reports
the day's rows, checks the day against the same weekday a week before, and renders its report.
"""

import datetime as dt
import warnings

import dagster as dg
import polars as pl

from cdr_pipeline import alerts, marts, report
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.assets import CALLS_KEY, WRITER_POOL, markdown_table
from cdr_pipeline.defs.resources import WarehouseResource, partition_date

DAILY_KPIS_KEY = dg.AssetKey("daily_kpis")
REPORT_KEY = dg.AssetKey("daily_report")
ANALYTICS_ASSETS: tuple[str, ...] = (*marts.MART_VIEWS, "daily_report")
CHECK_NAMES = {
    "calls": "call_volume_vs_last_week",
    "asr": "asr_vs_last_week",
    "ner": "ner_vs_last_week",
}


def build_analytics_assets(
    partitions_def: dg.PartitionsDefinition, settings: Settings
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The marts, the report and the alert checks, for a daily partitioning and `settings`
    (NER cause codes and alert thresholds)."""
    thresholds = alerts.AlertThresholds(
        volume_change=settings.alert_volume_change,
        ratio_drop=settings.alert_ratio_drop,
        min_calls=settings.alert_min_calls,
    )
    ner_causes = settings.ner_causes

    @dg.multi_asset(
        name="analytics_marts",
        partitions_def=partitions_def,
        group_name="marts",
        pool=WRITER_POOL,
        specs=[
            dg.AssetSpec(
                view,
                deps=[CALLS_KEY],
                kinds={"duckdb"},
                description=marts.MART_DESCRIPTIONS[view]
                + " A DuckDB view over `calls`, always current.",
                metadata={"dagster/column_schema": _schema(view)},
            )
            for view in marts.MART_VIEWS
        ],
    )
    def analytics_marts(context: dg.AssetExecutionContext, lake: WarehouseResource):
        day = partition_date(context)
        with lake.connect() as con:
            marts.configure_marts(con, timezone=lake.timezone, ner_causes=ner_causes)
            counts = marts.mart_rows(con, day)
            kpis = con.sql(
                "SELECT * FROM daily_kpis WHERE call_date = ? ORDER BY direction", params=[day]
            ).pl()
        context.log.info(f"{day}: " + ", ".join(f"{v} {n} rows" for n, v in counts.items()))
        for view in marts.MART_VIEWS:
            metadata: dict[str, object] = {"dagster/row_count": counts[view]}
            if view == "daily_kpis":
                metadata |= _kpi_metadata(kpis, ner_causes)
            yield dg.MaterializeResult(asset_key=view, metadata=metadata)

    @dg.asset(
        partitions_def=partitions_def,
        deps=list(marts.MART_VIEWS),
        group_name="marts",
        kinds={"html", "matplotlib"},
        pool=WRITER_POOL,  # reads DuckDB: keep clear of the loads
        description="The day's self-contained HTML report under CDR_DATA_DIR/reports/: calls per "
        f"hour, ASR and NER over {report.TREND_DAYS} days, top hangup causes, cost by "
        "destination, alerts and the KPI table.",
    )
    def daily_report(
        context: dg.AssetExecutionContext, lake: WarehouseResource
    ) -> dg.MaterializeResult:
        day = partition_date(context)
        with lake.connect(read_only=True) as con:
            data = report.load_report_data(con, day, thresholds)
        rendered = report.render_report(data)
        path = report.write_report(
            rendered.html, report.report_path(report.reports_dir(lake.lake.data_dir), day)
        )
        context.log.info(f"report for {day}: {path}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "open": dg.MetadataValue.url(path.resolve().as_uri()),
                "bytes": len(rendered.html.encode()),
                **{
                    name: dg.MetadataValue.md(report.markdown_image(png, report.CHART_TITLES[name]))
                    for name, png in rendered.charts_png.items()
                },
            }
        )

    checks = [_week_over_week_check(metric, partitions_def, thresholds) for metric in CHECK_NAMES]
    return [analytics_marts, daily_report], checks


def _week_over_week_check(
    metric: str, partitions_def: dg.PartitionsDefinition, thresholds: alerts.AlertThresholds
) -> dg.AssetChecksDefinition:
    limit = (
        f"moves more than {thresholds.volume_change:.0%} either way"
        if metric == "calls"
        else f"drops by more than {thresholds.ratio_drop * 100:g} points"
    )
    label = "call volume" if metric == "calls" else metric.upper()

    def week_over_week(
        context: dg.AssetCheckExecutionContext, lake: WarehouseResource
    ) -> dg.AssetCheckResult:
        day = dt.date.fromisoformat(context.partition_key)
        with lake.connect(read_only=True) as con:
            comparisons = alerts.compare_with_last_week(con, day, metric, thresholds)
        return _check_result(comparisons, thresholds.min_calls)

    # Partitioned checks are a Dagster "preview" feature (dagster is pinned): each day's check
    # result belongs to that day's partition, which is what a daily alarm means.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.asset_check(
            asset=DAILY_KPIS_KEY,
            name=CHECK_NAMES[metric],
            blocking=False,
            partitions_def=partitions_def,
            pool=WRITER_POOL,
            description=f"WARN when a direction's {label} {limit} against the same weekday of the "
            "week before (CDR-Stats-style alarm).",
        )(week_over_week)


def _check_result(comparisons: list[alerts.Comparison], min_calls: int) -> dg.AssetCheckResult:
    """Pass unless a direction breached; metadata: both values, the change and the threshold."""
    breached = [c for c in comparisons if c.breached]
    first = comparisons[0]
    metadata: dict[str, object] = {
        "day": first.day.isoformat(),
        "baseline_day": first.baseline_day.isoformat(),
        "threshold": first.threshold,
        "min_calls": min_calls,
    }
    for c in comparisons:
        metadata |= {
            f"{c.direction}_value": _number(c.value),
            f"{c.direction}_baseline": _number(c.baseline),
            f"{c.direction}_change": _number(c.change),
        }
    return dg.AssetCheckResult(
        passed=not breached,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description="; ".join(c.describe() for c in breached or comparisons),
    )


def _number(value: float | None) -> dg.MetadataValue:
    if value is None:
        return dg.MetadataValue.text("none")
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(round(float(value), 6))


def _kpi_metadata(kpis: pl.DataFrame, ner_causes: tuple[int, ...]) -> dict[str, object]:
    """The day's headline KPIs per direction (numbers the UI plots across partitions)."""
    metadata: dict[str, object] = {"ner_causes": ", ".join(str(c) for c in ner_causes)}
    for row in kpis.iter_rows(named=True):
        direction = row["direction"]
        for name in ("calls", "asr", "ner", "acd_s", "billed_minutes", "peak_concurrent_calls"):
            metadata[f"{direction}_{name}"] = _number(row[name])
        metadata[f"{direction}_billing_debit"] = _number(float(row["billing_debit"]))
    metadata["kpis"] = dg.MetadataValue.md(markdown_table(kpis, "(no calls on this day)"))
    return metadata


def _schema(view: str) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, sql_type, description=text)
            for name, sql_type, text in marts.MART_COLUMNS[view]
        ]
    )
