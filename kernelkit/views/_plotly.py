"""A plotly.js figure as plain JSON, built by hand: plotly is not a dependency.

The final progress result's curves are one output that carries this figure
under plotly's mime type beside the static SVG. Frontends with a plotly
renderer (JupyterLab or Notebook 7 with ``jupyterlab-plotly``, VS Code) draw
it with hover values, zoom, legend toggles and a log/linear switch; the rest
(GitHub, nbviewer, nbconvert, Colab) fall back to the bundle's ``text/html``.

A frontend shows one mime type per output, so the figure holds the curves
only: the state line, compile times and epoch table are an HTML output of
their own. JupyterLab's renderer saves a PNG snapshot of the figure, as wide
as the output area and as tall as the figure, into the notebook; the figure
is kept short (one 180 px row per two charts) and plain (no title, no
template) so that snapshot stays small.

The dict follows plotly.js's figure schema (``data``, ``layout``,
``config``); the tests check it with ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from ._svg import Chart, Line, epoch_bounds, mark_label_on_top, nice_step

MIME = "application/vnd.plotly.v1+json"

# Pixel layout of the figure (the renderer sizes the width to the output area).
_LEGEND_PX = 28  # the legend row and the log/linear buttons, above the charts
_ROW_PX = 180  # one row of charts, with its subplot titles and x tick labels
_CHART_GAP_PX = 58  # within a row: subplot title above, tick labels and "epoch" below
_BOTTOM_PX = 6


def _num(value: float, digits: int) -> float | None:
    # JSON has no NaN: a gap in the line (null) instead of an invalid notebook.
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _xs(values: Sequence[float]) -> list[float | None]:
    return [None if not math.isfinite(v) else round(v, 3) for v in values]


def _ys(values: Sequence[float]) -> list[float | None]:
    return [_num(v, 5) for v in values]


def _axis_ids(i: int) -> tuple[str, str, str, str]:
    """(x ref, y ref, layout key of x, layout key of y) of chart ``i``."""
    n = "" if i == 0 else str(i + 1)
    return f"x{n}", f"y{n}", f"xaxis{n}", f"yaxis{n}"


def _trace(line: Line, name: str, xref: str, yref: str, shown: set[str]) -> dict[str, Any]:
    batch = not line.markers
    group = line.label or name
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": "lines" if batch else "lines+markers",
        "x": _xs(line.xs),
        "y": _ys(line.ys),
        "xaxis": xref,
        "yaxis": yref,
        "name": line.label,
        # One legend entry per kind toggles that kind in every chart.
        "legendgroup": group,
        "showlegend": group not in shown,
        "line": {"color": line.color, "width": line.width},
        "hovertemplate": (
            f"{html.escape(name)} %{{y:.4g}}<br>epoch %{{x:.2f}}<extra>{html.escape(group)}</extra>"
            if batch
            else f"{html.escape(name)} %{{y:.4g}}<br>end of epoch %{{x}}"
            f"<extra>{html.escape(group)}</extra>"
        ),
    }
    if line.opacity < 1:
        trace["opacity"] = line.opacity
    if not batch:
        trace["marker"] = {"size": 5}
        trace["cliponaxis"] = False  # the last epoch's point sits on the axis edge
    shown.add(group)
    return trace


def figure(charts: Sequence[Chart]) -> dict[str, Any]:
    """The plotly figure JSON of ``charts``, two per row.

    Args:
        charts: one per metric, as ``progress.chart_specs`` builds them.

    Returns:
        ``{"data": [...], "layout": {...}, "config": {...}}``, ready for
        ``application/vnd.plotly.v1+json``: only JSON types, no NaN.
    """
    columns = 1 if len(charts) == 1 else 2
    rows = -(-len(charts) // columns)
    paper_px = rows * _ROW_PX
    top_px = 4 + _LEGEND_PX
    height = top_px + paper_px + _BOTTOM_PX

    def frac(px: float) -> float:
        """A height in pixels as a fraction of the plotting area (paper)."""
        return round(px / paper_px, 4)

    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "height": height,
        "autosize": True,
        "margin": {"l": 56, "r": 16, "t": top_px, "b": _BOTTOM_PX},
        "font": {"family": "sans-serif", "size": 11},
        "hovermode": "closest",
        "showlegend": True,
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 1 + frac(2),
            "yanchor": "bottom",
        },
    }
    annotations: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    shown: set[str] = set()
    switchable: list[str] = []
    gap = 0.07
    width = (1 - gap * (columns - 1)) / columns
    for i, chart in enumerate(charts):
        xref, yref, xkey, ykey = _axis_ids(i)
        row, col = divmod(i, columns)
        left = col * (width + gap)
        domain_x = [round(left, 4), round(left + width, 4)]
        row_top = paper_px - row * _ROW_PX
        domain_y = [frac(row_top - _ROW_PX + _CHART_GAP_PX - 20), frac(row_top - 20)]
        finite = [
            (x, y)
            for line in chart.lines
            for x, y in zip(line.xs, line.ys, strict=True)
            if math.isfinite(x) and math.isfinite(y)
        ]
        x0, x1 = epoch_bounds([p[0] for p in finite])
        positive = bool(finite) and all(y > 0 for _, y in finite)
        nonnegative = all(y >= 0 for _, y in finite)
        # Whole-epoch ticks at a round step. plotly's own ticks would go
        # fractional when zoomed in; a fixed step keeps them on epoch ends.
        layout[xkey] = {
            "domain": domain_x,
            "anchor": yref,
            "range": [x0 - 0.02 * (x1 - x0), x1 + 0.02 * (x1 - x0)],
            "tickmode": "linear",
            "tick0": 0,
            "dtick": nice_step(x1 - x0, 6, integer=True),
            "title": {"text": "epoch", "standoff": 4},
            "zeroline": False,
        }
        yaxis: dict[str, Any] = {
            "domain": domain_y,
            "anchor": xref,
            "type": "log" if chart.log_y and positive else "linear",
            # "0.5 0.2 0.1", not plotly's default "5 2 0.1", between the decades.
            "minorloglabels": "complete",
            "zeroline": False,
            # 1e-4, not plotly's default SI "100µ", as the SVG writes it.
            "exponentformat": "e",
        }
        ys = [y for _, y in finite]
        if yaxis["type"] == "log" and math.log10(max(ys) / min(ys)) > 3:
            yaxis["dtick"] = 1  # every decade labelled (plotly skips some over a wide span)
        if nonnegative:
            yaxis["rangemode"] = "nonnegative"  # never pad a loss below zero
        layout[ykey] = yaxis
        if chart.loss_like and positive:
            switchable.append(ykey)
        annotations.append(
            {
                "text": f"<b>{html.escape(chart.title)}</b>",
                "xref": "paper",
                "yref": "paper",
                "x": domain_x[0],
                "y": domain_y[1],
                "xanchor": "left",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 12},
            }
        )
        for line in chart.lines:
            data.append(_trace(line, chart.title, xref, yref, shown))
        best = chart.best
        if best is not None and math.isfinite(best.x) and math.isfinite(best.y):
            data.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": [best.x],
                    "y": [_num(best.y, 5)],
                    "xaxis": xref,
                    "yaxis": yref,
                    "name": "best validation",
                    "legendgroup": "best validation",
                    "showlegend": "best validation" not in shown,
                    "marker": {
                        "symbol": "circle-open",
                        "size": 13,
                        "color": best.color,
                        "line": {"width": 2},
                    },
                    "cliponaxis": False,
                    "hovertemplate": f"{html.escape(best.text)}<extra></extra>",
                }
            )
            shown.add("best validation")
        for mark in chart.marks:
            shapes.append(
                {
                    "type": "line",
                    "xref": xref,
                    "yref": f"{yref} domain",
                    "x0": mark.x,
                    "x1": mark.x,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": mark.color, "width": 1, "dash": "dash"},
                }
            )
            on_top = mark_label_on_top(chart, mark.x)
            annotations.append(
                {
                    "text": html.escape(mark.label),
                    "xref": xref,
                    "yref": f"{yref} domain",
                    "x": mark.x,
                    "y": 1 if on_top else 0,
                    "xanchor": "right" if mark.x > x0 + 0.7 * (x1 - x0) else "left",
                    "yanchor": "top" if on_top else "bottom",
                    "showarrow": False,
                    "font": {"size": 10, "color": mark.color},
                }
            )
    if switchable:
        log_first = any(layout[key]["type"] == "log" for key in switchable)

        def relayout(kind: str) -> dict[str, Any]:
            args: dict[str, Any] = {}
            for key in switchable:
                args[f"{key}.type"] = kind
                args[f"{key}.autorange"] = True
            return args

        layout["updatemenus"] = [
            {
                "type": "buttons",
                "direction": "right",
                "showactive": True,
                "active": 0 if log_first else 1,
                "x": 1,
                "xanchor": "right",
                "y": 1 + frac(2),
                "yanchor": "bottom",
                "pad": {"r": 0, "t": 0, "b": 0, "l": 0},
                "font": {"size": 10},
                "buttons": [
                    {"label": "log loss", "method": "relayout", "args": [relayout("log")]},
                    {"label": "linear loss", "method": "relayout", "args": [relayout("linear")]},
                ],
            }
        ]
    layout["annotations"] = annotations
    if shapes:
        layout["shapes"] = shapes
    return {
        "data": data,
        "layout": layout,
        "config": {"displaylogo": False, "responsive": True},
    }
