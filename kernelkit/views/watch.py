"""Heat strips of activation statistics: one row per layer, one cell per epoch.

Static HTML and SVG, so the strips read in a saved notebook without a kernel.
Each statistic has its own colour scale over all layers and epochs: the mean
on a diverging scale around 0, the spread on a square-root scale, the share of dead
units from 0 (white) to 1 (red).
"""

from __future__ import annotations

import html
import math
from typing import Any

from ..watch import STATISTICS, ActivationWatch

_TITLES = {"mean": "mean", "std": "std", "dead_fraction": "dead units"}
_CELL = 8  # px per epoch
_HEIGHT = 11


def _color(statistic: str, value: float, scale: float) -> str:
    if not math.isfinite(value):
        return "#eeeeee"
    if statistic == "dead_fraction":
        t = min(max(value, 0.0), 1.0)
        return _mix((255, 255, 255), (214, 39, 40), t)
    if statistic == "std":
        # square-root scale up to the largest spread seen: small spreads stay visible
        t = min(max(value / scale, 0.0), 1.0) if scale > 0 else 0.0
        return _mix((255, 255, 255), (31, 119, 180), math.sqrt(t))
    t = min(max(value / scale, -1.0), 1.0) if scale > 0 else 0.0
    return _mix((255, 255, 255), (255, 127, 14) if t > 0 else (31, 119, 180), abs(t))


def _mix(low: tuple[int, int, int], high: tuple[int, int, int], t: float) -> str:
    r, g, b = (round(a + (b - a) * t) for a, b in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _strip(statistic: str, values: list[float], scale: float, epochs: list[int]) -> str:
    cells = []
    # Not strict: one value per recorded epoch, but the tab can render (on the subshell
    # thread) while the fit appends an epoch between reading the epochs and the values.
    for i, (value, epoch) in enumerate(zip(values, epochs, strict=False)):
        title = f"epoch {epoch + 1}: {_TITLES[statistic]} {value:.3g}"
        cells.append(
            f'<rect x="{i * _CELL}" y="0" width="{_CELL}" height="{_HEIGHT}" '
            f'fill="{_color(statistic, value, scale)}"><title>{html.escape(title)}</title></rect>'
        )
    width = max(len(values), 1) * _CELL
    return (
        f'<svg width="{width}" height="{_HEIGHT}" style="vertical-align:middle;'
        f'outline:1px solid #ddd">{"".join(cells)}</svg>'
    )


def _scale(statistic: str, rows: dict[str, list[float]]) -> float:
    finite = [abs(v) for values in rows.values() for v in values if math.isfinite(v)]
    if not finite or statistic == "dead_fraction":
        return 1.0
    return max(finite)


def watch_html(watch: ActivationWatch, max_layers: int = 60) -> str:
    """The heat strips of every recorded layer (the first ``max_layers``), as static HTML."""
    if not watch.epochs:
        return (
            "<div style='font-family:sans-serif;font-size:12px'>"
            "no activation statistics yet</div>"
        )
    epochs = [s.epoch for s in watch.epochs]
    series = {name: watch.series(name) for name in STATISTICS}
    scales = {name: _scale(name, series[name]) for name in STATISTICS}
    labels = watch.labels
    pad = "padding:0 6px"
    head = "".join(f"<th style='{pad};text-align:left'>{_TITLES[n]}</th>" for n in STATISTICS)
    rows = []
    for label in labels[:max_layers]:
        last = {n: series[n][label][-1] for n in STATISTICS}
        cells = "".join(
            f"<td style='{pad}'>{_strip(n, series[n][label], scales[n], epochs)}</td>"
            for n in STATISTICS
        )
        dead = last["dead_fraction"]
        note = f" <span style='color:#d62728'>{dead:.0%} dead</span>" if dead > 0.5 else ""
        rows.append(
            f"<tr><td style='{pad};font-family:monospace'>{html.escape(label)}{note}</td>"
            f"{cells}</tr>"
        )
    more = len(labels) - max_layers
    if more > 0:
        rows.append(f"<tr><td colspan='4' style='{pad};color:#888'>… {more} more layers</td></tr>")
    return (
        "<div class='kk-watch' style='font-family:sans-serif;font-size:11px'>"
        f"<div style='color:#444;margin:2px 0'>activations on a probe of {watch.samples} samples, "
        f"epochs {epochs[0] + 1}–{epochs[-1] + 1} left to right</div>"
        f"<div style='max-height:320px;overflow:auto'><table style='border-collapse:collapse'>"
        f"<thead><tr><th style='{pad};text-align:left'>layer</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></div>"
    )


class WatchResult:
    """An :class:`ActivationWatch` as a notebook output: the strips, and a text line."""

    def __init__(self, watch: ActivationWatch) -> None:
        self.watch = watch

    def __repr__(self) -> str:
        return repr(self.watch)

    def _repr_html_(self) -> str:
        return watch_html(self.watch)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def tab(model: Any, submit: Any, entry: Any = None) -> Any:
    """The card's Activations tab: the heat strips of the last ``--watch`` fit."""
    import ipywidgets as w

    watch = getattr(entry, "watch", None)
    if watch is None:
        return None
    return w.HTML(watch_html(watch))
