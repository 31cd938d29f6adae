"""Small static SVG line charts: no plotting library, no JavaScript.

The final progress result must read in GitHub, nbviewer and nbconvert
without a kernel, so curves are drawn as inline SVG by hand: a few KB for
a few hundred points. The same ``Chart`` value also feeds the plotly
figure (``_plotly.py``), so both renderings show the same marks.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Mark:
    """A vertical mark at ``x`` (an event of the run), labelled in the plot."""

    x: float
    label: str
    color: str = "#7f7f7f"


@dataclass(frozen=True)
class Best:
    """The best point of a trace, ringed; ``text`` is its tooltip."""

    x: float
    y: float
    text: str
    color: str = VALID


@dataclass(frozen=True)
class Chart:
    """What one metric's chart shows, whichever renderer draws it.

    Attributes:
        title: the metric name.
        lines: traces, drawn in order.
        marks: vertical event marks (early stop, resume, stop).
        best: the ringed best point, if any.
        log_y: whether the y axis is logarithmic.
        loss_like: lower is better: the plotly figure offers log/linear for it.
    """

    title: str
    lines: Sequence[Line]
    marks: Sequence[Mark] = field(default_factory=tuple)
    best: Best | None = None
    log_y: bool = False
    loss_like: bool = False


# --- ticks ---------------------------------------------------------------------------------


def nice_step(span: float, n: int = 5, *, integer: bool = False) -> float:
    """The 1, 2 or 5 x 10^k step that cuts ``span`` into at most about ``n`` parts.

    Args:
        span: the length to cut (non-positive or non-finite gives 1).
        n: the wanted number of intervals.
        integer: whether the step must be a whole number (epochs).

    Returns:
        The step, e.g. 0.2 for a span of 1 in 5 parts.
    """
    if not (span > 0 and math.isfinite(span)):
        return 1.0
    raw = span / max(n, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = 10 * power
    for mantissa in (1.0, 2.0, 5.0):
        if raw <= mantissa * power * (1 + 1e-9):
            step = mantissa * power
            break
    # 1-2-5 steps from 1 up are whole numbers already.
    return max(step, 1.0) if integer else step


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def nice_ticks(
    lo: float, hi: float, n: int = 5, *, integer: bool = False, cover: bool = False
) -> list[float]:
    """Round ticks for an axis from ``lo`` to ``hi``: multiples of a 1-2-5 step.

    Args:
        lo: the smallest value to show.
        hi: the largest value to show.
        n: about how many intervals (the step is the 1-2-5 value at or above
            ``(hi - lo) / n``).
        integer: whole-number steps only (epoch axes).
        cover: also take the multiples just outside ``[lo, hi]``, so the first
            tick is <= ``lo`` and the last >= ``hi`` (the axis then runs
            from tick to tick). A non-negative ``lo`` never gets a negative
            tick this way.

    Returns:
        The ticks, ascending, rounded to the step's decimals (0.6, not
        0.6000000000000001).

    Example:
        >>> nice_ticks(0.13, 0.87, 4)
        [0.2, 0.4, 0.6, 0.8]
    """
    if hi < lo:
        lo, hi = hi, lo
    step = nice_step(hi - lo, n, integer=integer)
    if cover:
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    else:
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    digits = _decimals(step)
    return [round(k * step, digits) + 0.0 for k in range(first, last + 1)]  # + 0.0: no -0.0


def log_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Ticks for a log axis from ``lo`` to ``hi`` (both > 0): 1-2-5 values or decades.

    1, 2 and 5 in each decade when that gives at most ``n + 1`` ticks, else
    every decade, or every 2nd, 5th, 10th... decade over a wide range.
    """
    a, b = math.log10(lo), math.log10(hi)
    fine = [
        round(m * 10.0**k, max(0, -k))
        for k in range(math.floor(a), math.ceil(b) + 1)
        for m in (1, 2, 5)
        if a - 1e-9 <= math.log10(m) + k <= b + 1e-9
    ]
    if 2 <= len(fine) <= n + 1:
        return fine
    step = int(nice_step(b - a, n, integer=True))
    first, last = math.ceil(a / step - 1e-9), math.floor(b / step + 1e-9)
    return [round(10.0 ** (k * step), max(0, -k * step)) for k in range(first, last + 1)]


def tick_label(value: float, step: float | None = None) -> str:
    """A tick's text: as many decimals as the step needs; powers as 1e-5.

    Args:
        value: the tick.
        step: the linear step between ticks, or None on a log axis.
    """
    if value == 0:
        return "0"
    if step is not None:
        if step >= 1e-4 and abs(value) < 1e5:
            return f"{value:.{_decimals(step)}f}"
    elif 1e-3 <= abs(value) < 1e5:
        return f"{value:g}"
    text = f"{value:.2g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


# --- layout shared with the plotly figure ------------------------------------------------


def epoch_bounds(xs: Sequence[float]) -> tuple[int, int]:
    """The x axis of a chart: whole epochs from the start of the first one shown to the end.

    Epoch points sit at an epoch's end (x = 1 for the first), batch points
    inside it (x = 0.02...), so a run drawn from its first epoch starts at 0.
    """
    finite = [x for x in xs if math.isfinite(x)]
    if not finite:
        return 0, 1
    x0 = max(math.ceil(min(finite)) - 1, 0)
    return x0, max(math.ceil(max(finite)), x0 + 1)


def mark_label_on_top(chart: Chart, x: float) -> bool:
    """Whether a mark's label at ``x`` goes at the top of the plot (else the bottom).

    At the top unless the curves run along the top near ``x`` (accuracy, or
    a loss at its start).
    """
    points = [
        (px, math.log10(py) if chart.log_y else py)
        for line in chart.lines
        for px, py in zip(line.xs, line.ys, strict=True)
        if math.isfinite(px) and math.isfinite(py) and (py > 0 or not chart.log_y)
    ]
    if not points:
        return True
    x0, x1 = epoch_bounds([p[0] for p in points])
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    if hi == lo:
        return True
    near = [y for px, y in points if abs(px - x) <= 0.12 * (x1 - x0)]
    return all((y - lo) / (hi - lo) < 0.8 for y in near)


# --- the chart ------------------------------------------------------------------------------


def line_chart(chart: Chart, *, width: int = 320, height: int = 190) -> str:
    """Returns an ``<svg>`` of ``chart``: axes with round ticks, lines, marks, best point.

    The legend is not drawn here: every chart of a result shares one
    (``progress.curves_html`` writes it once above them).
    """
    log_y = chart.log_y

    def usable(x: float, y: float) -> bool:
        return math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)

    points = [
        (x, y)
        for line in chart.lines
        for x, y in zip(line.xs, line.ys, strict=True)
        if usable(x, y)
    ]
    title = html.escape(chart.title)
    left, right, top, bottom = 46, 10, 22, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="font:10px sans-serif;background:#fff" '
        f'role="img" aria-label="{title}">',
        f'<text x="{left}" y="14" font-weight="bold">{title}'
        + ('<tspan font-weight="normal" fill="#888"> · log scale</tspan>' if log_y else "")
        + "</text>",
    ]
    if not points:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2:.0f}" fill="#888">no data yet</text>')
        parts.append("</svg>")
        return "".join(parts)

    # x: whole epochs, from the start of the first one shown to the end of the last.
    x0, x1 = epoch_bounds([p[0] for p in points])
    x_ticks = nice_ticks(x0, x1, 6, integer=True)

    ys = [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    if log_y:
        a, b = math.log10(lo), math.log10(hi)
        pad = max(b - a, 0.5) * 0.04
        y0, y1 = a - pad, b + pad
        y_ticks = log_ticks(lo, hi, 6)
        y_labels = [tick_label(t) for t in y_ticks]
    else:
        if hi == lo:
            spread = abs(lo) * 0.1 or 0.5
            lo, hi = (lo - spread if lo - spread >= 0 or lo < 0 else 0.0), hi + spread
        # Covering ticks: the axis ends on round values and a loss axis, whose
        # values are >= 0, never gets padded below zero.
        y_ticks = nice_ticks(lo, hi, 5, cover=True)
        y0, y1 = y_ticks[0], y_ticks[-1]
        step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
        y_labels = [tick_label(t, step) for t in y_ticks]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        v = math.log10(y) if log_y else y
        return top + (1 - (v - y0) / (y1 - y0)) * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>'
    )
    for tick, label in zip(y_ticks, y_labels, strict=True):
        yy = sy(tick)
        if not top - 0.5 <= yy <= top + plot_h + 0.5:
            continue
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text class="kk-ytick" x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" '
            f'fill="#555">{label}</text>'
        )
    for tick in x_ticks:
        xx = sx(tick)
        parts.append(
            f'<text class="kk-xtick" x="{xx:.1f}" y="{top + plot_h + 12}" text-anchor="middle" '
            f'fill="#555">{tick:.0f}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 3}" text-anchor="middle" '
        'fill="#555">epoch</text>'
    )
    for mark in chart.marks:
        if not x0 <= mark.x <= x1:
            continue
        xx = sx(mark.x)
        # Labels near the right edge grow leftwards so they stay inside the plot,
        # and go to the bottom where the curves run along the top (accuracy).
        anchor, dx = ("end", -3) if xx > left + plot_w * 0.7 else ("start", 3)
        label_y = top + 10 if mark_label_on_top(chart, mark.x) else top + plot_h - 4
        label = html.escape(mark.label)
        parts.append(
            f'<g class="kk-mark"><line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" '
            f'y2="{top + plot_h}" stroke="{mark.color}" stroke-dasharray="3,2"/>'
            f'<text x="{xx + dx:.1f}" y="{label_y:.0f}" text-anchor="{anchor}" font-size="9" '
            f'fill="{mark.color}">{label}</text></g>'
        )
    for line in chart.lines:
        pts = [(sx(x), sy(y)) for x, y in zip(line.xs, line.ys, strict=True) if usable(x, y)]
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
    best = chart.best
    if best is not None and usable(best.x, best.y):
        parts.append(
            f'<circle class="kk-best" cx="{sx(best.x):.1f}" cy="{sy(best.y):.1f}" r="5.5" '
            f'fill="none" stroke="{best.color}" stroke-width="1.5">'
            f"<title>{html.escape(best.text)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
