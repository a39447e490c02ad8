"""The daily report: one self-contained HTML file per day, charts drawn with matplotlib.

The file works offline and alone: no script, no stylesheet or font from anywhere, each chart an
SVG inlined as a `data:` URI. The same charts come back as PNG bytes for the Dagster UI.

`load_report_data` runs the queries (keep its DuckDB connection short), `render_report` draws,
`write_report` publishes the file atomically.
"""

import base64
import datetime as dt
import html
import io
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import matplotlib
import polars as pl
from matplotlib.axes import Axes
from matplotlib.dates import DateFormatter, DayLocator
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from cdr_pipeline import alerts
from cdr_pipeline.report.data import TOP_CAUSES, TOP_DESTINATIONS, TREND_DAYS, ReportData
from cdr_pipeline.schema import DIRECTIONS

DIRECTION_COLORS = {"inbound": "#2563eb", "outbound": "#ea580c"}
SOURCE_COLORS = {"caller": "#0891b2", "callee": "#7c3aed", "system": "#dc2626"}
OTHER_COLOR = "#9ca3af"
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"

CHART_TITLES = {
    "calls_per_hour": "Calls per hour, by direction",
    "asr_ner_trend": f"ASR and NER, last {TREND_DAYS} days",
    "hangup_causes": "Top hangup causes (Q.850), by who hung up",
    "cost_by_destination": "Cost by destination",
}

_RC = {
    "svg.hashsalt": "cdr-report",  # stable element ids: same data, same file
    "svg.fonttype": "path",  # text as outlines: no font needed to view the SVG
    "font.family": "DejaVu Sans",  # ships with matplotlib
    "font.size": 10,
    "axes.edgecolor": GRID,
    "axes.labelcolor": MUTED,
    "axes.titlecolor": INK,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class RenderedReport:
    """The report's HTML, and its charts as PNG (for the Dagster UI)."""

    html: str
    charts_png: dict[str, bytes]


def write_report(text: str, path: Path) -> Path:
    """Write the report atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def render_report(data: ReportData, generated_at: dt.datetime | None = None) -> RenderedReport:
    """Draw the charts and lay out the HTML page."""
    charts: dict[str, Figure] = {
        "calls_per_hour": _calls_per_hour(data.hourly),
        "asr_ner_trend": _asr_ner_trend(data.trend, data.day),
        "hangup_causes": _hangup_causes(data.causes),
        "cost_by_destination": _cost_by_destination(data.destinations),
    }
    svgs = {name: _encode(fig, "svg") for name, fig in charts.items()}
    pngs = {name: _encode(fig, "png") for name, fig in charts.items()}
    page = _page(data, svgs, generated_at or dt.datetime.now(dt.UTC))
    return RenderedReport(html=page, charts_png=pngs)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image embedding `png` as a data URI (the Dagster UI renders it inline)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


# ---------------------------------------------------------------------------------- charts


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _encode(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buffer, format=fmt, dpi=96, metadata=metadata, facecolor="white")
    return buffer.getvalue()


def _empty(ax: Axes, message: str = "No calls on this day") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _style(ax: Axes, title: str | None = None) -> None:
    if title:
        ax.set_title(title, pad=10)
    ax.grid(color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(length=0)


def _single_chart(
    title_key: str, width: float, height: float, hide_grid: str
) -> tuple[Figure, Axes]:
    """A titled figure with one styled axes; grid lines along `hide_grid` are hidden."""
    fig = _figure(width, height)
    fig.suptitle(CHART_TITLES[title_key], x=0.01, ha="left", fontweight="bold", color=INK)
    ax = fig.subplots()
    _style(ax)
    ax.grid(axis=hide_grid, visible=False)
    return fig, ax


def _calls_per_hour(hourly: pl.DataFrame) -> Figure:
    with matplotlib.rc_context(_RC):
        fig, ax = _single_chart("calls_per_hour", 11, 3.6, hide_grid="x")
        if hourly.is_empty():
            _empty(ax)
            return fig
        hours = list(range(24))
        width = 0.4
        for offset, direction in zip((-width / 2, width / 2), DIRECTIONS, strict=True):
            rows = hourly.filter(pl.col("direction") == direction)
            calls = dict(zip(rows["hour"], rows["calls"], strict=True))
            answered = dict(zip(rows["hour"], rows["answered_calls"], strict=True))
            x = [h + offset for h in hours]
            color = DIRECTION_COLORS[direction]
            ax.bar(
                x,
                [calls.get(h, 0) for h in hours],
                width,
                color=color,
                alpha=0.3,
                label=f"{direction}: all calls",
            )
            ax.bar(
                x,
                [answered.get(h, 0) for h in hours],
                width,
                color=color,
                label=f"{direction}: answered",
            )
        ax.set_xticks(hours, [f"{h:02d}" for h in hours])
        ax.set_xlim(-0.6, 23.6)
        ax.set_xlabel("hour of the day (local time)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(ncols=4, loc="upper left", bbox_to_anchor=(0, -0.2), fontsize=9)
        return fig


def _asr_ner_trend(trend: pl.DataFrame, day: dt.date) -> Figure:
    with matplotlib.rc_context(_RC):
        fig = _figure(11, 3.4)
        axes = fig.subplots(1, 2, sharey=True)
        first = day - dt.timedelta(days=TREND_DAYS - 1)
        for ax, metric, label in zip(
            axes,
            ("asr", "ner"),
            ("ASR (answer-seizure ratio)", "NER (network effectiveness)"),
            strict=True,
        ):
            _style(ax, label)
            if trend.is_empty():
                _empty(ax, "No calls in these days")
                continue
            for direction in DIRECTIONS:
                rows = trend.filter(pl.col("direction") == direction)
                if rows.is_empty():
                    continue
                ax.plot(
                    rows["call_date"].to_list(),
                    rows[metric].to_list(),
                    marker="o",
                    markersize=3.5,
                    linewidth=1.8,
                    color=DIRECTION_COLORS[direction],
                    label=direction,
                )
            ax.axvline(day, color=MUTED, linestyle=":", linewidth=1)
            ax.set_xlim(first - dt.timedelta(hours=12), day + dt.timedelta(hours=12))
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.xaxis.set_major_locator(DayLocator(interval=7))
            ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
        if not trend.is_empty():
            axes[0].legend(loc="lower left", fontsize=9)
        return fig


def _hangup_causes(causes: pl.DataFrame) -> Figure:
    with matplotlib.rc_context(_RC):
        fig, ax = _single_chart("hangup_causes", 5.6, 3.9, hide_grid="y")
        if causes.is_empty():
            _empty(ax)
            return fig
        top = (
            causes.select("hangup_cause", "hangup_cause_name", "cause_calls", "cause_share")
            .unique("hangup_cause", keep="first", maintain_order=True)
            .head(TOP_CAUSES)
        )
        codes = top["hangup_cause"].to_list()
        labels = [
            _cause_label(code, name)
            for code, name in top.select("hangup_cause", "hangup_cause_name").iter_rows()
        ]
        y = list(range(len(codes)))[::-1]  # the commonest cause on top
        left = [0] * len(codes)
        sources = causes["hangup_source"].unique(maintain_order=True).to_list()
        sources.sort(
            key=lambda s: (
                s not in SOURCE_COLORS,
                list(SOURCE_COLORS).index(s) if s in SOURCE_COLORS else 0,
                s,
            )
        )
        for source in sources:
            rows = causes.filter(pl.col("hangup_source") == source)
            per_code = dict(zip(rows["hangup_cause"], rows["calls"], strict=True))
            widths = [per_code.get(code, 0) for code in codes]
            ax.barh(
                y,
                widths,
                left=left,
                height=0.62,
                label=source,
                color=SOURCE_COLORS.get(source, OTHER_COLOR),
            )
            left = [a + b for a, b in zip(left, widths, strict=True)]
        for yy, total, share in zip(y, top["cause_calls"], top["cause_share"], strict=True):
            ax.text(total, yy, f"  {share:.0%}", va="center", fontsize=8.5, color=INK)
        ax.set_yticks(y, labels, fontsize=8.5)
        ax.set_xlim(0, max(left) * 1.18)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("calls")
        ax.legend(loc="lower right", fontsize=8.5, title="hung up by", title_fontsize=8.5)
        return fig


def _cost_by_destination(destinations: pl.DataFrame) -> Figure:
    with matplotlib.rc_context(_RC):
        fig, ax = _single_chart("cost_by_destination", 5.6, 3.9, hide_grid="y")
        if destinations.is_empty():
            _empty(ax)
            return fig
        top = destinations.head(TOP_DESTINATIONS)
        y = list(range(top.height))[::-1]
        debit = [float(v) for v in top["billing_debit"]]
        ax.barh(y, debit, height=0.62, color="#059669")
        for yy, cost, minutes in zip(y, debit, top["billed_minutes"], strict=True):
            ax.text(
                cost,
                yy,
                f"  {cost:,.2f} · {minutes:,.0f} min",
                va="center",
                fontsize=8.5,
                color=INK,
            )
        ax.set_yticks(y, [_shorten(d, 26) for d in top["destination"]], fontsize=8.5)
        ax.set_xlim(0, max(max(debit), 0.01) * 1.45)
        ax.set_xlabel("billing debit (currency units)")
        return fig


def _cause_label(code: int | None, name: str | None) -> str:
    if code is None:
        return "(no cause)"
    return "\n".join(
        textwrap.wrap(f"{code} {name or ''}".strip(), 24, max_lines=2, placeholder="…")
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------ page


def _page(data: ReportData, svgs: dict[str, bytes], generated_at: dt.datetime) -> str:
    day_title = f"{data.day:%A} {data.day.day} {data.day:%B %Y}"

    def chart(name: str, css_class: str = "") -> str:
        uri = "data:image/svg+xml;base64," + base64.b64encode(svgs[name]).decode()
        title = html.escape(CHART_TITLES[name])
        return f'<figure class="chart {css_class}"><img src="{uri}" alt="{title}"></figure>'

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
    columns = [
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
