"""The report's four charts, each an SVG document (bytes) drawn from the day's `ReportData`."""

import datetime as dt
import textwrap
from collections.abc import Callable, Sequence

import polars as pl

from cdr_pipeline.report.data import TOP_CAUSES, TOP_DESTINATIONS, TREND_DAYS, ReportData
from cdr_pipeline.report.svg import (
    AXIS,
    GRID,
    INK,
    MUTED,
    Drawing,
    Scale,
    legend,
    legend_width,
    nice_ticks,
    no_data,
    text_width,
    tick_label,
)
from cdr_pipeline.schema import DIRECTIONS

DIRECTION_COLORS = {"inbound": "#2563eb", "outbound": "#ea580c"}
SOURCE_COLORS = {"caller": "#0891b2", "callee": "#7c3aed", "system": "#dc2626"}
OTHER_COLOR, COST_COLOR = "#9ca3af", "#059669"

CHART_TITLES = {
    "calls_per_hour": "Calls per hour, by direction",
    "asr_ner_trend": f"ASR and NER, last {TREND_DAYS} days",
    "hangup_causes": "Top hangup causes (Q.850), by who hung up",
    "cost_by_destination": "Cost by destination",
}

WIDE, WIDE_HEIGHT, TREND_HEIGHT = 1056, 346, 326  # px: the page's full width
HALF, HALF_HEIGHT = 538, 374  # the two charts side by side
TICK, SMALL, TITLE = 11, 10.5, 14  # font sizes, px
NO_CALLS = "No calls on this day"


def draw_charts(data: ReportData) -> dict[str, bytes]:
    """Every chart of the report, by name (the keys of `CHART_TITLES`)."""
    return {
        "calls_per_hour": calls_per_hour(data.hourly),
        "asr_ner_trend": asr_ner_trend(data.trend, data.day),
        "hangup_causes": hangup_causes(data.causes),
        "cost_by_destination": cost_by_destination(data.destinations),
    }


def _titled(name: str, width: int, height: int) -> Drawing:
    d = Drawing(width, height, CHART_TITLES[name])
    d.text(12, 20, CHART_TITLES[name], TITLE, INK, bold=True)
    return d


def _y_grid(
    d: Drawing,
    y: Scale,
    ticks: Sequence[float],
    x0: float,
    x1: float,
    fmt: Callable[[float], str] | None,
) -> None:
    for t in ticks:
        d.line(x0, y(t), x1, y(t), GRID)
        if fmt is not None:
            d.text(x0 - 6, y(t), fmt(t), TICK, anchor="end")


def calls_per_hour(hourly: pl.DataFrame) -> bytes:
    """Grouped bars: per local hour and direction, all calls (light) and the answered part."""
    d = _titled("calls_per_hour", WIDE, WIDE_HEIGHT)
    keys = list(zip(hourly["hour"], hourly["direction"], strict=True))
    calls = dict(zip(keys, hourly["calls"], strict=True))
    answered = dict(zip(keys, hourly["answered_calls"], strict=True))
    hi = max(calls.values(), default=1) * 1.08
    ticks = nice_ticks(hi, integer=True)
    left = 20 + max(text_width(tick_label(t, ticks), TICK) for t in ticks)
    x = Scale(0, 24, left, WIDE - 14)
    y = Scale(0, hi, WIDE_HEIGHT - 84, 40)
    if not calls:
        no_data(d, x, y, NO_CALLS)
        return d.to_bytes()
    _y_grid(d, y, ticks, x.start, x.end, lambda t: tick_label(t, ticks))
    bar = x(0.4) - x(0)
    for i, direction in enumerate(DIRECTIONS):
        color = DIRECTION_COLORS[direction]
        for hour in range(24):
            left_edge = x(hour + 0.1 + 0.4 * i)
            for counts, opacity in ((calls, 0.3), (answered, None)):
                top = y(counts.get((hour, direction), 0))
                d.rect(left_edge, top, bar, y(0) - top, color, opacity)
    d.line(x.start, y(0), x.end, y(0), AXIS)
    for hour in range(24):
        d.text(x(hour + 0.5), y(0) + 14, f"{hour:02d}", TICK, anchor="middle")
    d.text((x.start + x.end) / 2, y(0) + 34, "hour of the day (local time)", 12, anchor="middle")
    legend(
        d,
        x.start,
        WIDE_HEIGHT - 18,
        [
            item
            for direction in DIRECTIONS
            for item in (
                (f"{direction}: all calls", DIRECTION_COLORS[direction], 0.3),
                (f"{direction}: answered", DIRECTION_COLORS[direction], None),
            )
        ],
    )
    return d.to_bytes()


def asr_ner_trend(trend: pl.DataFrame, day: dt.date) -> bytes:
    """Two panels sharing the ratio axis: ASR, then NER, per day and direction."""
    d = _titled("asr_ner_trend", WIDE, TREND_HEIGHT)
    first = day - dt.timedelta(days=TREND_DAYS - 1)
    if not trend.is_empty():
        items = [(direction, DIRECTION_COLORS[direction], None) for direction in DIRECTIONS]
        legend(d, WIDE - 14 - legend_width([label for label, _, _ in items]), 20, items)
    ticks = [i / 5 for i in range(6)]
    y = Scale(0, 1.05, TREND_HEIGHT - 44, 62)
    left, gap = 20 + text_width("100%", TICK), 28
    panel = (WIDE - 14 - left - gap) / 2
    dates = [first + dt.timedelta(days=n) for n in range(TREND_DAYS)]
    marks = [date for date in dates if date.day in (1, 8, 15, 22, 29)]
    for i, (metric, label) in enumerate(
        (("asr", "ASR (answer-seizure ratio)"), ("ner", "NER (network effectiveness)"))
    ):
        x0 = left + i * (panel + gap)
        x = Scale(first.toordinal() - 0.5, day.toordinal() + 0.5, x0, x0 + panel)
        d.text(x0, 44, label, 12, INK, bold=True)
        if trend.is_empty():
            no_data(d, x, y, "No calls in these days")
            continue
        _y_grid(d, y, ticks, x.start, x.end, (lambda t: f"{t:.0%}") if i == 0 else None)
        for date in marks:
            d.line(x(date.toordinal()), y(0), x(date.toordinal()), y(1.05), GRID)
            d.text(x(date.toordinal()), y(0) + 14, f"{date:%d %b}", TICK, anchor="middle")
        d.line(x(day.toordinal()), y(0), x(day.toordinal()), y(1.05), MUTED, 1, "2,3")
        d.line(x.start, y(0), x.end, y(0), AXIS)
        for direction in DIRECTIONS:
            rows = trend.filter(pl.col("direction") == direction)
            points = [
                (x(date.toordinal()), y(value))
                for date, value in zip(rows["call_date"], rows[metric], strict=True)
                if value is not None
            ]
            d.polyline(points, DIRECTION_COLORS[direction], 1.8)
            for px, py in points:
                d.circle(px, py, 2.4, DIRECTION_COLORS[direction])
    return d.to_bytes()


def _bar_rows(
    d: Drawing,
    labels: Sequence[Sequence[str]],
    totals: Sequence[float],
    end_labels: Sequence[str],
    x_title: str,
    integer: bool,
) -> tuple[Scale, list[float], float]:
    """The frame of a horizontal bar chart, biggest on top: category labels on the left, the
    x grid and ticks, and `end_labels` just past each bar's end. Returns the x scale, each row's
    middle height and the bar thickness, for the caller to draw the bars."""
    lines = [line for label in labels for line in label]
    left = 20 + max(text_width(line, SMALL) for line in lines)
    right, top, bottom = HALF - 14, 40, HALF_HEIGHT - 70
    plot = right - left
    # Room for each bar's label past its end.
    hi = max(
        max(total * 1.05, total * plot / max(plot - text_width(text, SMALL) - 10, 1))
        for total, text in zip(totals, end_labels, strict=True)
    )
    ticks = nice_ticks(hi, integer=integer)
    x = Scale(0, max(hi, 1 if integer else 0.01), left, right)
    for t in ticks:
        d.line(x(t), top, x(t), bottom, GRID)
        d.text(x(t), bottom + 14, tick_label(t, ticks), TICK, anchor="middle")
    d.line(left, top, left, bottom, AXIS)
    d.text((left + right) / 2, bottom + 32, x_title, 12, anchor="middle")
    band = (bottom - top) / len(labels)
    middles = [top + band * (i + 0.5) for i in range(len(labels))]
    for middle, label, total, text in zip(middles, labels, totals, end_labels, strict=True):
        for n, line in enumerate(label):
            d.text(left - 8, middle + 13 * (n - (len(label) - 1) / 2), line, SMALL, INK, "end")
        d.text(x(total) + 5, middle, text, SMALL, INK)
    return x, middles, band * 0.62


def hangup_causes(causes: pl.DataFrame) -> bytes:
    """The commonest hangup causes of the day, each bar split by who hung up, with its share."""
    d = _titled("hangup_causes", HALF, HALF_HEIGHT)
    if causes.is_empty():
        no_data(d, Scale(0, 1, 20, HALF - 14), Scale(0, 1, HALF_HEIGHT - 70, 40), NO_CALLS)
        return d.to_bytes()
    top = (
        causes.select("hangup_cause", "hangup_cause_name", "cause_calls", "cause_share")
        .unique("hangup_cause", keep="first", maintain_order=True)
        .head(TOP_CAUSES)
    )
    codes = top["hangup_cause"].to_list()
    x, middles, thickness = _bar_rows(
        d,
        [
            _cause_label(code, name)
            for code, name in zip(codes, top["hangup_cause_name"], strict=True)
        ],
        top["cause_calls"].to_list(),
        [f"{share:.0%}" for share in top["cause_share"]],
        "calls",
        integer=True,
    )
    sources = sorted(
        causes["hangup_source"].unique(maintain_order=True),
        key=lambda s: (
            s not in SOURCE_COLORS,
            list(SOURCE_COLORS).index(s) if s in SOURCE_COLORS else 0,
            s,
        ),
    )
    done = dict.fromkeys(codes, 0)
    for source in sources:
        rows = causes.filter(pl.col("hangup_source") == source)
        color = SOURCE_COLORS.get(source, OTHER_COLOR)
        for code, calls in zip(rows["hangup_cause"], rows["calls"], strict=True):
            if code in done:  # one of the top causes
                middle = middles[codes.index(code)]
                d.rect(x(done[code]), middle - thickness / 2, x(calls) - x(0), thickness, color)
                done[code] += calls
    d.text(x.start, HALF_HEIGHT - 14, "hung up by", TICK)
    legend(
        d,
        x.start + text_width("hung up by", TICK) + 10,
        HALF_HEIGHT - 14,
        [(source, SOURCE_COLORS.get(source, OTHER_COLOR), None) for source in sources],
    )
    return d.to_bytes()


def cost_by_destination(destinations: pl.DataFrame) -> bytes:
    """The costliest destinations of the day: billing debit, labelled with billed minutes."""
    d = _titled("cost_by_destination", HALF, HALF_HEIGHT)
    if destinations.is_empty():
        no_data(d, Scale(0, 1, 20, HALF - 14), Scale(0, 1, HALF_HEIGHT - 70, 40), NO_CALLS)
        return d.to_bytes()
    top = destinations.head(TOP_DESTINATIONS)
    debit = [float(v) for v in top["billing_debit"]]
    x, middles, thickness = _bar_rows(
        d,
        [[_shorten(name, 26)] for name in top["destination"]],
        debit,
        [
            f"{cost:,.2f} · {minutes:,.0f} min"
            for cost, minutes in zip(debit, top["billed_minutes"], strict=True)
        ],
        "billing debit (currency units)",
        integer=False,
    )
    for middle, cost in zip(middles, debit, strict=True):
        d.rect(x(0), middle - thickness / 2, x(cost) - x(0), thickness, COST_COLOR)
    return d.to_bytes()


def _cause_label(code: int | None, name: str | None) -> list[str]:
    if code is None:
        return ["(no cause)"]
    return textwrap.wrap(f"{code} {name or ''}".strip(), 24, max_lines=2, placeholder="…")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
