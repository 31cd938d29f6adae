"""Small static SVG line charts: no plotting library, no JavaScript.

The final progress result must read in GitHub, nbviewer and nbconvert
without a kernel, so curves are drawn as inline SVG by hand: a few KB for
a few hundred points.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

TRAIN = "#1f77b4"
VALID = "#ff7f0e"


@dataclass(frozen=True)
class Line:
    """One trace: points, a colour, and whether to mark the points."""

    xs: Sequence[float]
    ys: Sequence[float]
    color: str = TRAIN
    label: str = ""
    width: float = 1.5
    opacity: float = 1.0
    markers: bool = False


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def line_chart(
    title: str, lines: Sequence[Line], *, width: int = 300, height: int = 180, log_y: bool = False
) -> str:
    """Returns an ``<svg>`` chart of ``lines`` with axes, ticks and a legend."""
    points = [
        (x, y)
        for line in lines
        for x, y in zip(line.xs, line.ys)
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)
    ]
    esc = html.escape(title)
    left, right, top, bottom = 44, 8, 22, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="font:10px sans-serif;background:#fff" '
        f'role="img" aria-label="{esc}">',
        f'<text x="{left}" y="14" font-weight="bold">{esc}</text>',
    ]
    if not points:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2:.0f}" fill="#888">no data yet</text>')
        parts.append("</svg>")
        return "".join(parts)

    def ty(y: float) -> float:
        return math.log10(y) if log_y else y

    x0 = min(p[0] for p in points)
    x1 = max(p[0] for p in points)
    y0 = min(ty(p[1]) for p in points)
    y1 = max(ty(p[1]) for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (ty(y) - y0) / (y1 - y0)) * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>'
    )
    for i in range(3):
        v = y0 + (y1 - y0) * i / 2
        label = _nice(10**v if log_y else v)
        yy = top + (1 - i / 2) * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" fill="#555">{label}</text>'
        )
    for i in range(3):
        v = x0 + (x1 - x0) * i / 2
        xx = left + plot_w * i / 2
        parts.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 12}" text-anchor="middle" '
            f'fill="#555">{_nice(v)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 2}" text-anchor="middle" '
        'fill="#555">epoch</text>'
    )
    legend_x = left + plot_w
    for line in lines:
        pts = [
            (sx(x), sy(y))
            for x, y in zip(line.xs, line.ys)
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)
        ]
        if not pts:
            continue
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{line.color}" '
                f'stroke-width="{line.width}" stroke-opacity="{line.opacity}"/>'
            )
        if line.markers or len(pts) == 1:
            parts.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{line.color}"/>' for x, y in pts
            )
        if line.label:
            label = html.escape(line.label)
            parts.append(
                f'<text x="{legend_x:.0f}" y="14" text-anchor="end" fill="{line.color}">'
                f"{label}</text>"
            )
            legend_x -= 7 * len(line.label) + 10
    parts.append("</svg>")
    return "".join(parts)
