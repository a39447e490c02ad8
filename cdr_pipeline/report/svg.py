"""The few SVG parts the report's charts are made of: shapes, text, scales, ticks, legends.

Plain strings, no dependency: a chart is a few hundred elements, and writing them directly takes
milliseconds where a plotting library takes a second to import (docs/analytics.md, "The daily
report"). The output is deterministic (same data, same bytes) and self-contained: no script, no
stylesheet, no font to fetch; text uses the viewer's own sans-serif font.
"""

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

INK, MUTED, GRID, AXIS = "#1f2937", "#6b7280", "#e5e7eb", "#d1d5db"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', 'Liberation Sans', sans-serif"

# Advance widths in em, DejaVu Sans's (among the widest sans-serif fonts, so other fonts leave a
# little more room), to size margins around text: the viewer's font decides, and labels are
# anchored so that a wrong guess only shifts whitespace.
_NARROW, _WIDE = set("iljtfrI.,:;'|!()[] ·"), set("mwMW@%…")


def text_width(text: str, size: float) -> float:
    """About how wide `text` is, in px, at font size `size`."""
    em = 0.0
    for char in text:
        if char in _NARROW:
            em += 0.33
        elif char in _WIDE:
            em += 0.93
        elif char.isupper():
            em += 0.7
        else:
            em += 0.63
    return em * size


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


class Drawing:
    """An SVG document built element by element."""

    def __init__(self, width: int, height: int, title: str) -> None:
        self.width, self.height, self.title = width, height, title
        self._parts: list[str] = []

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, opacity: float | None = None
    ) -> None:
        """A filled rectangle (nothing if it has no area)."""
        if w <= 0 or h <= 0:
            return
        alpha = "" if opacity is None else f' fill-opacity="{opacity}"'
        self._parts.append(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" '
            f'fill="{fill}"{alpha}/>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str = GRID,
        width: float = 1,
        dash: str | None = None,
    ) -> None:
        """A straight line."""
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self._parts.append(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{stroke}" stroke-width="{width}"{dashes}/>'
        )

    def polyline(self, points: Sequence[tuple[float, float]], stroke: str, width: float) -> None:
        """Line segments through `points`, with round joins."""
        if len(points) < 2:
            return
        coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        self._parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{stroke}" '
            f'stroke-width="{width}" stroke-linejoin="round" stroke-linecap="round"/>'
        )

    def circle(self, x: float, y: float, r: float, fill: str) -> None:
        """A filled dot."""
        self._parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{r}" fill="{fill}"/>')

    def text(
        self,
        x: float,
        y: float,
        text: str,
        size: float = 11,
        fill: str = MUTED,
        anchor: str = "start",
        bold: bool = False,
    ) -> None:
        """One line of text whose middle sits at height `y`."""
        weight = ' font-weight="bold"' if bold else ""
        anchor_attr = "" if anchor == "start" else f' text-anchor="{anchor}"'
        self._parts.append(
            f'<text x="{_num(x)}" y="{_num(y)}" dy=".35em" font-size="{size}" '
            f'fill="{fill}"{anchor_attr}{weight}>{html.escape(text)}</text>'
        )

    def to_bytes(self) -> bytes:
        """The SVG document, UTF-8."""
        title = html.escape(self.title)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{title}" font-family="{FONT}"><title>{title}</title>'
            f'<rect width="100%" height="100%" fill="#fff"/>{"".join(self._parts)}</svg>'
        ).encode()


@dataclass(frozen=True)
class Scale:
    """A linear map from data values [lo, hi] to pixels [start, end]."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        return (
            self.start + (value - self.lo) / span * (self.end - self.start) if span else self.start
        )


def nice_ticks(top: float, integer: bool = False, count: int = 5) -> list[float]:
    """Round tick values from 0 up to `top` (about `count` of them)."""
    if top <= 0:
        return [0.0]
    magnitude = 10 ** math.floor(math.log10(top / count))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if top / (m * magnitude) <= count + 1)
    if integer:
        step = max(1.0, math.ceil(step))
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """`value` with as many decimals as the tick step needs, thousands separated."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < 6 and round(step * 10**decimals, 9) % 1:
        decimals += 1
    return f"{value:,.{decimals}f}"


def legend(
    d: Drawing, x: float, y: float, items: Iterable[tuple[str, str, float | None]], size: float = 11
) -> None:
    """Swatch-and-label pairs in a row from (x, y): (label, colour, opacity)."""
    for label, color, opacity in items:
        d.rect(x, y - 5, 10, 10, color, opacity)
        d.text(x + 14, y, label, size, INK)
        x += legend_width([label], size) + 16


def legend_width(labels: Sequence[str], size: float = 11) -> float:
    """How wide the `legend` of these labels is, in px."""
    return sum(14 + text_width(label, size) for label in labels) + 16 * (len(labels) - 1)


def no_data(d: Drawing, x: Scale, y: Scale, message: str) -> None:
    """The frame of an empty plot area with `message` in its middle."""
    d.line(x.start, y.start, x.end, y.start, AXIS)
    d.text((x.start + x.end) / 2, (y.start + y.end) / 2, message, 12, MUTED, anchor="middle")
