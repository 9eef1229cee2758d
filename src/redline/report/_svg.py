"""Small inline SVG plots for the report: a score scatter, histograms, horizontal bars.

Written by hand rather than with a plotting library so that the report stays one file
that opens anywhere (no script to inline, no CDN), costs no dependency, and every label
taken from the results goes through one escape (`_text`). Each plot is an ``<svg>``
with ``role="img"``, an ``aria-label`` and a ``class`` naming its kind; its marks carry
classes (``pt``, ``bar``) that the report's tests count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from html import escape

__all__ = ["bars", "histogram", "scatter"]

_W, _H = 320, 220  # default plot size, px
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 42, 12, 24, 34


def _text(value: object) -> str:
    """Text or an attribute value from the results, escaped for SVG (XML)."""
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    """A compact label: ``12``, ``0.35``, ``1.2k``, ``3.4M``."""
    if value != value:  # NaN
        return "–"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}"


def _open(kind: str, label: str, width: int, height: int) -> str:
    return (f'<svg class="plot {kind}" role="img" aria-label="{_text(label)}" '
            f'viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}"><title>{_text(label)}</title>')


def scatter(points: Sequence[tuple[float, float]], *, title: str, x_label: str,
            y_label: str, width: int = _W, height: int = _H + 40) -> str:
    """Scores before (x) against after (y), both in [0, 1], with the diagonal.

    A point above the diagonal improved (class ``pt up``), on it did not change
    (``pt same``), below it got worse (``pt down``). Points at the same place (to 0.005)
    are drawn once, larger, with their count in the tooltip, so 10,000 items stay a
    light plot.
    """
    pw, ph = width - _PAD_L - _PAD_R, height - _PAD_T - _PAD_B
    x0, y0 = _PAD_L, _PAD_T + ph

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + pw * min(max(x, 0.0), 1.0), y0 - ph * min(max(y, 0.0), 1.0)

    parts = [_open("scatter", title, width, height),
             f'<text class="title" x="{_PAD_L}" y="15">{_text(title)}</text>',
             f'<rect class="frame" x="{x0}" y="{_PAD_T}" width="{pw}" height="{ph}"/>']
    for tick in (0.0, 0.5, 1.0):
        tx, ty = at(tick, tick)
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{y0 + 13}" '
                     f'text-anchor="middle">{_num(tick)}</text>')
        parts.append(f'<text class="tick" x="{x0 - 5}" y="{ty + 4:.1f}" '
                     f'text-anchor="end">{_num(tick)}</text>')
    (ax, ay), (bx, by) = at(0, 0), at(1, 1)
    parts.append(f'<line class="diagonal" x1="{ax}" y1="{ay}" x2="{bx}" y2="{by}"/>')
    parts.append(f'<text class="axis" x="{x0 + pw / 2:.1f}" y="{height - 6}" '
                 f'text-anchor="middle">{_text(x_label)}</text>')
    parts.append(f'<text class="axis" transform="translate(11 {_PAD_T + ph / 2:.1f}) '
                 f'rotate(-90)" text-anchor="middle">{_text(y_label)}</text>')
    cells = Counter((round(x * 200) / 200, round(y * 200) / 200) for x, y in points)
    base = 3.0 if len(cells) <= 500 else 1.5  # many dots: small ones, so density shows
    for (x, y), count in sorted(cells.items()):
        kind = "up" if y > x else "down" if y < x else "same"
        cx, cy = at(x, y)
        r = min(base + 1.5 * math.log2(count), 10.0)
        parts.append(f'<circle class="pt {kind}" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}">'
                     f'<title>{_num(x)} → {_num(y)}: {count} item'
                     f'{"s" if count != 1 else ""}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, title: str, integer: bool = False,
              bins: int = 20, width: int = _W, height: int = _H) -> str:
    """How `values` are distributed: one bar per value when `integer` and there are few
    distinct values, else `bins` equal-width bins between the least and the most."""
    pw, ph = width - _PAD_L - _PAD_R, height - _PAD_T - _PAD_B
    x0, y0 = _PAD_L, _PAD_T + ph
    parts = [_open("histogram", title, width, height),
             f'<text class="title" x="{_PAD_L}" y="15">{_text(title)}</text>']
    if not values:
        parts.append(f'<text class="empty" x="{x0 + pw / 2}" y="{_PAD_T + ph / 2}" '
                     'text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    low, high = min(values), max(values)
    labels: list[str]
    if integer and high - low <= 30:
        edges = [int(low) + k for k in range(int(high - low) + 1)]
        counts = Counter(int(v) for v in values)
        heights = [counts.get(e, 0) for e in edges]
        labels = [_num(e) for e in edges]
    else:
        n = bins if high > low else 1
        step = (high - low) / n or 1.0
        heights = [0] * n
        for v in values:
            heights[min(int((v - low) / step), n - 1)] += 1
        labels = [f"{_num(low + k * step)}–{_num(low + (k + 1) * step)}" for k in range(n)]
    top = max(heights)
    slot = pw / len(heights)
    for k, (count, label) in enumerate(zip(heights, labels, strict=True)):
        h = ph * count / top
        parts.append(f'<rect class="bar" x="{x0 + k * slot + 1:.1f}" y="{y0 - h:.1f}" '
                     f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}">'
                     f'<title>{_text(label)}: {count}</title></rect>')
    parts.append(f'<line class="axis-line" x1="{x0}" y1="{y0}" x2="{x0 + pw}" y2="{y0}"/>')
    if integer and len(labels) == len(heights) <= 16 and high - low <= 30:
        for k, label in enumerate(labels):  # one value per bar: label each
            parts.append(f'<text class="tick" x="{x0 + (k + 0.5) * slot:.1f}" y="{y0 + 13}" '
                         f'text-anchor="middle">{_text(label)}</text>')
    else:
        parts.append(f'<text class="tick" x="{x0}" y="{y0 + 13}">{_num(low)}</text>')
        parts.append(f'<text class="tick" x="{x0 + pw}" y="{y0 + 13}" '
                     f'text-anchor="end">{_num(high)}</text>')
    parts.append(f'<text class="tick" x="{x0 - 5}" y="{_PAD_T + 4}" '
                 f'text-anchor="end">{_num(top)}</text>')
    parts.append(f'<text class="tick" x="{x0 - 5}" y="{y0}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(counts: Sequence[tuple[str, float]], *, title: str, width: int = _W) -> str:
    """Labelled horizontal bars (stop reasons and their counts), in the given order."""
    row, label_w = 20, 96
    height = _PAD_T + row * max(len(counts), 1) + 8
    parts = [_open("bars", title, width, height),
             f'<text class="title" x="4" y="15">{_text(title)}</text>']
    top = max((v for _, v in counts), default=0) or 1
    span = width - label_w - 60
    for k, (label, value) in enumerate(counts):
        y = _PAD_T + k * row
        w = span * value / top
        parts.append(f'<text class="label" x="{label_w - 6}" y="{y + 14}" '
                     f'text-anchor="end">{_text(label)}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
                     f'height="{row - 6}"><title>{_text(label)}: {_num(value)}</title></rect>')
        parts.append(f'<text class="value" x="{label_w + w + 4:.1f}" y="{y + 14}">'
                     f'{_num(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)
