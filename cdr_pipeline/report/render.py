"""The daily report: one self-contained HTML file per day.

The file works offline and alone: no script, no stylesheet or font from anywhere, each chart an
SVG (`charts.py`) inlined as a `data:` URI. The same SVGs go to the Dagster UI as markdown images.

`load_report_data` runs the queries (keep its DuckDB connection short), `render_report` draws,
`write_report` publishes the file atomically.
"""

import base64
import datetime as dt
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from cdr_pipeline import alerts, durable
from cdr_pipeline.report.charts import CHART_TITLES, draw_charts
from cdr_pipeline.report.data import ReportData, report_path


@dataclass(frozen=True)
class RenderedReport:
    """The report's HTML, and its charts as SVG documents (for the Dagster UI)."""

    html: str
    charts_svg: dict[str, bytes]


def write_report(text: str, path: Path) -> Path:
    """Write the report atomically (a reader never sees half a file)."""
    return durable.write_text(path, text)


def render_report(data: ReportData, generated_at: dt.datetime | None = None) -> RenderedReport:
    """Draw the charts and lay out the HTML page."""
    svgs = draw_charts(data)
    page = _page(data, svgs, generated_at or dt.datetime.now(dt.UTC))
    return RenderedReport(html=page, charts_svg=svgs)


def write_day_report(data: ReportData, reports_dir: Path) -> tuple[RenderedReport, Path]:
    """Render the day's report and write it to its place in `reports_dir`."""
    rendered = render_report(data)
    return rendered, write_report(rendered.html, report_path(reports_dir, data.day))


def markdown_image(svg: bytes, alt: str) -> str:
    """A markdown image embedding `svg` as a data URI (the Dagster UI draws it)."""
    return f"![{alt}]({_data_uri(svg)})"


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


# ------------------------------------------------------------------------------------ page


def _page(data: ReportData, svgs: dict[str, bytes], generated_at: dt.datetime) -> str:
    day_title = f"{data.day:%A} {data.day.day} {data.day:%B %Y}"

    def chart(name: str, css_class: str = "") -> str:
        image = f'<img src="{_data_uri(svgs[name])}" alt="{html.escape(CHART_TITLES[name])}">'
        return f'<figure class="chart {css_class}">{image}</figure>'

    causes = ", ".join(str(c) for c in data.ner_causes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CDR report {data.day.isoformat()}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
  <p class="eyebrow">Callr CDRs · daily report</p>
  <h1>{html.escape(day_title)}</h1>
  <p class="muted">Calls dated {data.day.isoformat()} in {html.escape(data.timezone)}.
  Compared with {data.day - dt.timedelta(days=alerts.BASELINE_DAYS):%A %d %B}.</p>
</header>
<section class="cards">{_cards(data)}</section>
<section>
  <h2>Alerts against the same weekday last week</h2>
  {_comparison_table(data.comparisons)}
</section>
<section>{chart("calls_per_hour")}</section>
<section>{chart("asr_ner_trend")}</section>
<section class="pair">{chart("hangup_causes")}{chart("cost_by_destination")}</section>
<section>
  <h2>KPIs by direction</h2>
  {_kpi_table(data.kpis)}
</section>
<footer>
  <p><b>ASR</b> = answered calls / calls. <b>NER</b> (ITU-T E.425) = (answered calls + calls
  ended by user behaviour: Q.850 {html.escape(causes)}) / calls. <b>ACD</b> = mean answered
  seconds over answered calls. <b>Cost</b> = billing debit; per billed minute = debit / billed
  minutes. <b>Peak concurrent</b> = most calls in progress at once, a call occupying
  [started, ended).</p>
  <p>Generated {generated_at:%Y-%m-%d %H:%M %Z} by cdr_pipeline from the DuckDB marts.</p>
</footer>
</body>
</html>
"""


def _cards(data: ReportData) -> str:
    kpis = data.kpis
    calls = int(kpis["calls"].sum()) if kpis.height else 0
    answered = int(kpis["answered_calls"].sum()) if kpis.height else 0
    effective = (
        round(float((kpis["ner"] * kpis["calls"]).sum())) if kpis.height else 0
    )  # NER numerators, added up over the directions
    minutes = float(kpis["billed_minutes"].sum()) if kpis.height else 0.0
    debit = sum(kpis["billing_debit"].to_list(), Decimal(0)) if kpis.height else Decimal(0)
    peaks = " / ".join(str(p) for p in kpis["peak_concurrent_calls"])
    peak_note = " / ".join(kpis["direction"]) + ", calls at once" if kpis.height else "no calls"
    cards = [
        ("Calls", f"{calls:,}", f"{answered:,} answered"),
        ("ASR", _pct(answered / calls if calls else None), "answered / calls"),
        ("NER", _pct(effective / calls if calls else None), "answered + user-ended / calls"),
        ("Billed minutes", f"{minutes:,.1f}", "sum of billed seconds / 60"),
        ("Cost", f"{debit:,.2f}", "billing debit, currency units"),
        ("Peak concurrent", peaks or "–", peak_note),
    ]
    return "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>'
        f'<div class="note">{html.escape(note)}</div></div>'
        for label, value, note in cards
    )


def _comparison_table(comparisons: Sequence[alerts.Comparison]) -> str:
    rows = []
    for c in comparisons:
        if c.metric == "calls":
            fmt = lambda v: "–" if v is None else f"{v:,.0f}"  # noqa: E731
            change = "–" if c.change is None else f"{c.change:+.1%}"
            limit = f"± {c.threshold:.0%}"
        else:
            fmt = _pct
            change = "–" if c.change is None else f"{c.change * 100:+.1f} pts"
            limit = f"− {c.threshold * 100:.0f} pts"
        if c.breached:
            status = '<span class="pill alert">ALERT</span>'
        elif c.skipped:
            status = (
                f'<span class="pill none" title="{html.escape(c.skipped)}">too few calls</span>'
            )
        elif c.change is None:
            status = '<span class="pill none">no baseline</span>'
        else:
            status = '<span class="pill ok">ok</span>'
        rows.append(
            f"<tr><td>{c.metric.upper() if c.metric != 'calls' else 'Calls'}</td>"
            f"<td>{c.direction}</td><td class='num'>{fmt(c.value)}</td>"
            f"<td class='num'>{fmt(c.baseline)}</td><td class='num'>{change}</td>"
            f"<td class='num'>{limit}</td><td>{status}</td></tr>"
        )
    return (
        "<table><thead><tr><th>metric</th><th>direction</th><th class='num'>this day</th>"
        "<th class='num'>a week before</th><th class='num'>change</th>"
        "<th class='num'>alert beyond</th><th>status</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _kpi_table(kpis: pl.DataFrame) -> str:
    if kpis.is_empty():
        return '<p class="muted">No calls on this day.</p>'
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("direction", "direction", str),
        ("calls", "calls", lambda v: f"{v:,}"),
        ("answered_calls", "answered", lambda v: f"{v:,}"),
        ("asr", "ASR", _pct),
        ("ner", "NER", _pct),
        ("acd_s", "ACD (s)", lambda v: "–" if v is None else f"{v:,.1f}"),
        ("billed_minutes", "billed min", lambda v: f"{v:,.1f}"),
        ("billing_debit", "debit", lambda v: f"{v:,.2f}"),
        ("billing_credit", "credit", lambda v: f"{v:,.2f}"),
        (
            "cost_per_billed_minute",
            "cost / billed min",
            lambda v: "–" if v is None else f"{v:,.4f}",
        ),
        ("peak_concurrent_calls", "peak concurrent", lambda v: f"{v:,}"),
    ]
    head = "".join(
        f"<th{'' if name == 'direction' else ' class=num'}>{html.escape(title)}</th>"
        for name, title, _ in columns
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{'' if name == 'direction' else ' class=num'}>{html.escape(fmt(row[name]))}</td>"
            for name, _, fmt in columns
        )
        + "</tr>"
        for row in kpis.iter_rows(named=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1140px; padding: 28px 32px 40px; background: #f8fafc;
  color: #1f2937; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans",
  "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
header h1 { margin: 2px 0 4px; font-size: 26px; }
.eyebrow { margin: 0; color: #2563eb; font-weight: 600; text-transform: uppercase;
  letter-spacing: .06em; font-size: 12px; }
.muted { color: #6b7280; margin: 0; }
h2 { font-size: 15px; margin: 0 0 10px; }
section { margin-top: 18px; }
.cards { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; }
.card, section > table, .chart { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; }
.card { padding: 12px 14px; }
.card .label { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 700; margin: 2px 0; white-space: nowrap; }
.card .note { color: #9ca3af; font-size: 11.5px; }
.chart { margin: 0; padding: 10px; }
.chart img { display: block; width: 100%; height: auto; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
table { width: 100%; border-collapse: separate; border-spacing: 0; overflow: hidden; }
th, td { padding: 7px 10px; text-align: left; border-bottom: 1px solid #f1f5f9; }
th { background: #f1f5f9; color: #475569; font-size: 12px; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:last-child td { border-bottom: none; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; }
.pill.ok { background: #dcfce7; color: #166534; }
.pill.alert { background: #fee2e2; color: #991b1b; }
.pill.none { background: #f1f5f9; color: #64748b; }
footer { margin-top: 22px; color: #6b7280; font-size: 12.5px; }
@media (max-width: 900px) { .cards { grid-template-columns: repeat(2, 1fr); }
  .pair { grid-template-columns: 1fr; } }
"""
