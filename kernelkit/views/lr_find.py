"""The learning-rate finder's views: the usual progress view, with loss against rate.

While :func:`kernelkit.lr_find` sweeps, the live view is kernelkit's usual
progress view (bar, step, ETA, Stop button) whose curves are the loss
against the learning rate on a log axis. When the sweep ends it is replaced
by a static result: HTML with an inline SVG chart that marks the
suggestion, a plotly figure (``application/vnd.plotly.v1+json``, drawn
where a plotly renderer is installed; no plotly import here) and the
one-line ``text/plain`` suggestion. The views read plain lists; they never
touch the model.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from .. import events as ev
from ..intents import Submit
from .progress import ProgressView, TextView, bar_html, in_notebook_kernel

Points = Callable[[], tuple[list[float], list[float], list[float], list[float]]]

_SMOOTH = "#1f77b4"
_RAW = "#9ecae1"
_SUGGESTED = "#2ca02c"
_MINIMUM = "#ff7f0e"
_FAILED = "#d62728"


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.2g}" if abs(value) >= 1000 or abs(value) < 0.01 else f"{value:.3g}"


def _tick(exponent: int) -> str:
    return f"1e{exponent}" if exponent else "1"


def lr_chart(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    smoothed_lrs: Sequence[float] | None = None,
    marks: Sequence[tuple[float, str, str]] = (),
    *,
    width: int = 480,
    height: int = 240,
) -> str:
    """An ``<svg>`` of the loss against the learning rate, the rate on a log axis.

    Args:
        lrs: the rates (positive, increasing).
        losses: each step's loss (drawn faint).
        smoothed: the smoothed loss (drawn bold).
        smoothed_lrs: the rate each smoothed value describes (default: ``lrs``).
        marks: (rate, label, colour) vertical markers, e.g. the suggestion.
        width: pixels.
        height: pixels.

    Returns:
        The SVG markup (a few KB).

    """
    left, right, top, bottom = 48, 10, 22, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="font:10px sans-serif;background:#fff" '
        'role="img" aria-label="loss against learning rate">',
        f'<text x="{left}" y="14" font-weight="bold">loss against learning rate</text>',
    ]
    # Not strict: the render thread reads the sweep's lists while the fit appends to them,
    # so one may be a point ahead of the other for a moment.
    raw_pts = [
        (math.log10(r), v)
        for r, v in zip(lrs, losses, strict=False)
        if r > 0 and math.isfinite(v)
    ]
    smooth_pts = [
        (math.log10(r), v)
        for r, v in zip(smoothed_lrs if smoothed_lrs is not None else lrs, smoothed, strict=False)
        if r > 0 and math.isfinite(v)
    ]
    if not raw_pts or not smooth_pts:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2:.0f}" fill="#888">no data yet</text>')
        return "".join(parts) + "</svg>"
    x0, x1 = raw_pts[0][0], raw_pts[-1][0]
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    # The smoothed curve sets the scale; a raw spike past it is clipped to the frame.
    y0 = min(min(v for _, v in smooth_pts), min(v for _, v in raw_pts))
    y1 = max(v for _, v in smooth_pts)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>'
    )
    for i in range(3):
        v = y0 + (y1 - y0) * i / 2
        yy = top + (1 - i / 2) * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" fill="#555">'
            f"{_nice(v)}</text>"
        )
    for exponent in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1):
        xx = sx(exponent)
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>'
            f'<text x="{xx:.1f}" y="{top + plot_h + 12}" text-anchor="middle" fill="#555">'
            f"{_tick(exponent)}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 2}" text-anchor="middle" '
        'fill="#555">learning rate (log scale)</text>'
    )
    raw = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in raw_pts)
    smooth = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in smooth_pts)
    parts.append(
        f'<polyline points="{raw}" fill="none" stroke="{_RAW}" stroke-width="1"/>'
        f'<polyline points="{smooth}" fill="none" stroke="{_SMOOTH}" stroke-width="1.8"/>'
    )
    legend_x = left + plot_w
    for rate, label, color in marks:
        if rate > 0 and x0 <= math.log10(rate) <= x1:
            xx = sx(math.log10(rate))
            parts.append(
                f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + plot_h}" '
                f'stroke="{color}" stroke-dasharray="4 3"/>'
            )
        text = html.escape(label)
        parts.append(
            f'<text x="{legend_x:.0f}" y="14" text-anchor="end" fill="{color}">{text}</text>'
        )
        legend_x -= 6 * len(label) + 12
    return "".join(parts) + "</svg>"


def _marks(result: Any) -> list[tuple[float, str, str]]:
    return [
        (result.suggestion, f"suggested {result.suggestion:.1e}", _SUGGESTED),
        (result.min_over_10, f"minimum/10 {result.min_over_10:.1e}", _MINIMUM),
    ]


def plotly_figure(result: Any) -> dict[str, Any]:
    """A plotly figure of the sweep as plain JSON (log rate axis, suggestion marked)."""
    lrs, losses, smoothed = list(result.lrs), list(result.losses), list(result.smoothed)
    described = list(result.smoothed_lrs)
    top = max(smoothed) if smoothed else 1.0

    def marker(rate: float, name: str, color: str) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": [rate, rate],
            "y": [min(smoothed + losses), top],
            "line": {"color": color, "dash": "dash"},
        }

    return {
        "data": [
            {"type": "scatter", "mode": "lines", "name": "loss", "x": lrs, "y": losses,
             "line": {"color": _RAW, "width": 1}},
            {"type": "scatter", "mode": "lines", "name": "smoothed loss", "x": described,
             "y": smoothed, "line": {"color": _SMOOTH, "width": 2}},
            marker(result.suggestion, f"suggested {result.suggestion:.2e}", _SUGGESTED),
            marker(result.min_over_10, f"minimum / 10 {result.min_over_10:.2e}", _MINIMUM),
        ],
        "layout": {
            "title": {"text": f"lr_find {result.model}"},
            "xaxis": {"type": "log", "title": {"text": "learning rate"}},
            "yaxis": {"title": {"text": "loss"}, "range": [min(smoothed + losses), top]},
            "width": 560,
            "height": 320,
        },
    }


def result_bundle(result: Any = None, error: str | None = None, points: Any = None) -> dict:
    """The static final output: HTML with an SVG chart, a plotly figure, one text line.

    Args:
        result: the ``LRFindResult``, or None when the finder failed.
        error: the one-line failure, when ``result`` is None.
        points: (lrs, losses, smoothed, smoothed_lrs) recorded before a failure.

    Returns:
        A mime bundle for ``display(..., raw=True)``.

    """
    if result is not None:
        line = result.summary()
        head = (
            f"<b>{html.escape(result.model)}</b> · lr_find · "
            f"<span style='color:{_SUGGESTED}'>suggested learning rate "
            f"<b>{result.suggestion:.2e}</b></span>"
            + (f" for group <b>{html.escape(result.group)}</b>" if result.group else "")
            + f" ({html.escape(result.method)}; minimum / 10: {result.min_over_10:.2e})"
            + (f"<br>{html.escape(result.groups_text())}" if result.group else "")
        )
        last = result.lrs[-1]
        detail = (
            f"{result.ran} steps from {result.start_lr:.2e} to {last:.2e}, "
            f"{html.escape(result.stop_text())}"
            + (" · weights, optimizer state and compile put back" if result.restored else "")
        )
        chart = lr_chart(
            result.lrs, result.losses, result.smoothed, result.smoothed_lrs, _marks(result)
        )
    else:
        line = error or "lr_find failed"
        head = f"<span style='color:{_FAILED}'>{html.escape(line)}</span>"
        detail = "the model was put back as it was"
        lrs, losses, smoothed, described = points if points is not None else ([], [], [], [])
        chart = lr_chart(lrs, losses, smoothed, described) if lrs else ""
    bundle: dict[str, Any] = {
        "text/plain": line,
        "text/html": (
            "<div class='kk-lrfind' style='font-family:sans-serif;font-size:12px'>"
            f"<div>{head}</div><div style='color:#666'>{detail}</div>{chart}</div>"
        ),
    }
    if result is not None:
        bundle["application/vnd.plotly.v1+json"] = plotly_figure(result)
    return bundle


class LRFindView(ProgressView):
    """The live finder view: the usual bar and Stop button, the loss-rate curve below.

    Args:
        history: the sweep's own ``RunHistory``.
        points: returns (lrs, losses, smoothed, smoothed_lrs) recorded so far.
        submit: where Stop sends ``StopTraining("user")`` (only sets a flag).
        curve_refresh: the shortest time between two chart redraws, seconds.

    """

    def __init__(
        self,
        history: Any,
        points: Points,
        submit: Submit | None = None,
        *,
        curve_refresh: float = 1.0,
    ) -> None:
        super().__init__(history, submit=submit, plot=False, curve_refresh=curve_refresh)
        self._points = points
        self._chart = ""
        self._drawn = 0  # points in the chart drawn last
        self._final: tuple[Any, str | None] | None = None
        self.bundle: dict[str, Any] | None = None

    def _apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.EpochEnd):
            self._curves_throttle.reset()  # every pass over the data ends with a fresh chart
        super()._apply(event)

    def _render(self) -> None:
        points = self._points()
        # Until there is a line to draw, drawing is cheap and must not wait for the throttle.
        if len(points[0]) > 1 and (self._curves_throttle.ready() or not self._drawn):
            self._chart = lr_chart(*points)
            self._drawn = len(points[0])
        elif not self._chart:
            self._chart = lr_chart(*points)
        self.body.value = bar_html(self.state) + self._note + self._chart

    def __repr__(self) -> str:
        if self.bundle is not None:
            return str(self.bundle["text/plain"])
        return "kernelkit: lr_find…"

    def finish(self) -> None:
        """Waits for :meth:`conclude`: the fit's end comes before the suggestion."""
        if self._final is not None:
            self._finish()

    def conclude(self, result: Any, error: str | None) -> None:
        """Replaces the live view with the static result (or the failure line)."""
        self._final = (result, error)
        self._stop_renderer()
        self._finish()

    def _finish(self) -> None:
        if self._closed or self._final is None:
            return
        self._closed = True
        result, error = self._final
        self.bundle = result_bundle(result, error, self._points())
        self._replace_with(self.bundle)


class LRFindText(TextView):
    """The finder in a terminal or script: the usual progress lines, then the suggestion."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.line = ""

    def handle(self, event: ev.Event) -> None:
        """Prints progress; the end line waits for :meth:`conclude`."""
        if isinstance(event, ev.TrainEnd):
            self.state.apply(event)
            return
        super().handle(event)

    def conclude(self, result: Any, error: str | None) -> None:
        """Prints the one-line suggestion (or failure)."""
        self.line = result.summary() if result is not None else (error or "lr_find failed")
        self.stream.write(self.line + "\n")
        self.stream.flush()


def make_view(display: str, history: Any, points: Points, submit: Submit) -> Any:
    """The finder's view for ``display`` ("auto", "widget" or "text")."""
    if display == "text" or (display == "auto" and not in_notebook_kernel()):
        return LRFindText()
    return LRFindView(history, points, submit)
