"""FeatureView: browse a model's intermediate activations, layer by layer.

Pick a layer and a sample; the view draws what the layer produced, by shape:

* vectors ``(units,)``: bars for the chosen sample, or a samples x units heatmap;
* sequences ``(time, units)``: a time x units heatmap;
* feature maps ``(height, width, channels)``: one heatmap per channel, paged;
* anything else: flattened to a vector.

Beside it, a table of per-layer statistics over every sample of ``x``: mean,
std, the fraction of values that are exactly 0, and the fraction of units that
never fired (dead ReLUs).

The pictures are small PNG data URIs and inline SVG written here (no
matplotlib, no browser in the kernel), so the HTML is self-contained: the
view's display bundle carries it as ``text/html`` for readers without widgets
(nbconvert, GitHub), and ``snapshot()`` freezes the current picture as a plain
output that survives saving. The activations come from
``kernelkit.extraction.scan``; the view holds no Keras logic.

Example:
    >>> view = kernelkit.FeatureView(model, x_test[:200])  # doctest: +SKIP
    >>> view.layer.value = "conv2"; view.sample.value = 3     # doctest: +SKIP

"""

from __future__ import annotations

import base64
import contextlib
import html
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets
import numpy as np

from ._static import StaticFallback

__all__ = ["FeatureView", "Snapshot", "tab"]

_HINT = (
    "No sample data yet. Features are the outputs of the layers for some inputs: "
    "create <code>kernelkit.FeatureView(model, x)</code> with a few samples "
    "(e.g. <code>x_test[:100]</code>), or call <code>view.set_data(x)</code> on this view."
)


# --------------------------------------------------------------------------------------
# Pictures: colour maps, PNG, SVG (pure NumPy)

# viridis at 0, 1/8, ..., 1 (matplotlib's values, rounded): for values >= 0.
_VIRIDIS = np.array(
    [
        [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
        [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
    ],
    dtype=np.float64,
)  # fmt: skip
# blue - white - red (ColorBrewer RdBu, reversed): for signed values, 0 is white.
_DIVERGING = np.array(
    [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]],
    dtype=np.float64,
)
_NAN_RGB = np.array([128, 128, 128], dtype=np.uint8)


class _Scale:
    """How values map to colours: [0, high] on viridis, or [-m, m] on blue-white-red."""

    def __init__(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        self.signed = low < 0
        if self.signed:
            self.low, self.high = -max(-low, high), max(-low, high)
            self.anchors = _DIVERGING
        else:
            self.low, self.high = 0.0, high
            self.anchors = _VIRIDIS

    def rgb(self, values: np.ndarray) -> np.ndarray:
        span = self.high - self.low
        with np.errstate(invalid="ignore"):
            t = (values - self.low) / span if span > 0 else np.zeros_like(values, dtype=np.float64)
        position = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * (len(self.anchors) - 1)
        index = np.minimum(position.astype(int), len(self.anchors) - 2)
        frac = (position - index)[..., None]
        colours = self.anchors[index] * (1 - frac) + self.anchors[index + 1] * frac
        out = np.rint(colours).astype(np.uint8)
        out[~np.isfinite(values)] = _NAN_RGB
        return out

    def legend(self) -> str:
        ramp = self.rgb(np.linspace(self.low, self.high, 96)[None, :])
        kind = "0 = white" if self.signed else "0 = dark"
        return (
            f'<div style="display:flex;align-items:center;gap:6px;margin:4px 0">'
            f"<span>{_num(self.low)}</span>{_img(np.repeat(ramp, 10, axis=0), 'colour scale')}"
            f'<span>{_num(self.high)}</span><span style="color:#666">({kind})</span></div>'
        )


def _png(rgb: np.ndarray) -> bytes:
    """A truecolour PNG of an (height, width, 3) uint8 array."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def _img(rgb: np.ndarray, alt: str) -> str:
    data = base64.b64encode(_png(rgb)).decode("ascii")
    height, width, _ = rgb.shape
    return (
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
        f'alt="{html.escape(alt)}" style="image-rendering:pixelated"/>'
    )


def _upscale(rgb: np.ndarray, target: int, limit: int = 12) -> np.ndarray:
    """Blows small maps up by whole pixels (in the PNG: some renderers smooth CSS scaling)."""
    factor = max(1, min(limit, target // max(rgb.shape[0], rgb.shape[1], 1)))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _heatmap(matrix: np.ndarray, scale: _Scale, alt: str, target: int = 72) -> str:
    return _img(_upscale(scale.rgb(np.asarray(matrix, dtype=np.float64)), target), alt)


def _num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.3g}"


_MAX_BARS = 512


def _bars(vector: np.ndarray, width: int = 640, height: int = 120) -> str:
    """An SVG bar chart of one sample's units, zero line included."""
    values = np.nan_to_num(np.asarray(vector, dtype=np.float64)[:_MAX_BARS])
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    span = (high - low) or 1.0
    zero = height * high / span
    step = width / len(values)
    rects = []
    for i, value in enumerate(values):
        top = zero - height * max(value, 0.0) / span
        size = height * abs(value) / span
        colour = "#3b6ea8" if value >= 0 else "#c0504d"
        rects.append(
            f'<rect x="{i * step:.2f}" y="{top:.2f}" width="{max(step * 0.85, 0.5):.2f}" '
            f'height="{size:.2f}" fill="{colour}"><title>unit {i}: {_num(value)}</title></rect>'
        )
    # A block of its own: inline, the SVG would share a line box with the caption
    # above it and, in some frontends, be drawn over it.
    return (
        f'<svg class="kk-features-bars" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height + 2}" viewBox="0 -1 {width} {height + 2}" role="img" '
        'style="display:block;margin-top:4px">'
        f'<line x1="0" x2="{width}" y1="{zero:.2f}" y2="{zero:.2f}" stroke="#999" '
        f'stroke-width="0.5"/>{"".join(rects)}</svg>'
        f'<div style="color:#666">units 0-{len(values) - 1}, from {_num(low)} to {_num(high)}</div>'
    )


# --------------------------------------------------------------------------------------
# What to draw for one layer


def _kind(sample_shape: tuple[int, ...]) -> str:
    return {0: "vector", 1: "vector", 2: "sequence", 3: "maps"}.get(len(sample_shape), "flat")


def _render(
    label: str,
    activations: np.ndarray,
    sample: int,
    *,
    page: int,
    page_size: int,
    vector_style: str,
) -> str:
    """The figure for ``activations`` (kept samples x ...) of one layer, as HTML."""
    data = np.asarray(activations)
    per_sample = data.shape[1:]
    kind = _kind(per_sample)
    one = data[sample]
    head = f"<b>{html.escape(label)}</b> &middot; per sample {_tuple(per_sample)}"
    if kind == "maps":
        channels = per_sample[-1]
        pages = max(1, math.ceil(channels / page_size))
        page = min(page, pages - 1)
        first, last = page * page_size, min(channels, (page + 1) * page_size)
        scale = _Scale(one)  # one scale for all channels, so they compare
        cells = "".join(
            f'<figure style="margin:0;text-align:center">'
            f"{_heatmap(one[..., c], scale, f'channel {c}')}"
            f'<figcaption style="color:#666">{c}</figcaption></figure>'
            for c in range(first, last)
        )
        body = (
            f"{head} &middot; sample {sample} &middot; channels {first}-{last - 1} of {channels} "
            f"(page {page + 1} of {pages})"
            f'<div style="display:flex;flex-wrap:wrap;gap:6px;margin-top:4px">{cells}</div>'
            f"{scale.legend()}"
        )
    elif kind == "sequence":
        scale = _Scale(one)
        body = (
            f"{head} &middot; sample {sample} &middot; time &rarr; across, units &darr; down"
            f"<div>{_heatmap(one.T, scale, 'time x units', target=320)}</div>{scale.legend()}"
        )
    else:
        matrix = data.reshape(len(data), -1)
        note = " (flattened)" if kind == "flat" else ""
        if vector_style == "heatmap":
            scale = _Scale(matrix)
            rgb = _upscale(scale.rgb(matrix.astype(np.float64)), 320, limit=24)
            factor = rgb.shape[0] // len(matrix)
            marker = np.full((rgb.shape[0], 6, 3), 255, np.uint8)
            marker[sample * factor : (sample + 1) * factor] = (200, 30, 30)  # chosen sample
            body = (
                f"{head}{note} &middot; samples &darr; down (sample {sample} marked), units &rarr;"
                f"<div>{_img(np.concatenate([marker, rgb], axis=1), 'samples x units')}</div>"
                f"{scale.legend()}"
            )
        else:
            more = matrix.shape[1] > _MAX_BARS
            body = (
                f'<div class="kk-features-caption">{head}{note} &middot; sample {sample}'
                + (f" &middot; first {_MAX_BARS} of {matrix.shape[1]} units" if more else "")
                + "</div>"
                + _bars(matrix[sample])
            )
    return f'<div class="kk-features-figure">{body}</div>'


def _tuple(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


_PAD = "padding:1px 8px"


def _stats_table(scan: Any, selected: str | None) -> str:
    rows = []
    for label in scan.labels:
        s = scan.stats[label]
        style = ' style="background:#e8f0fb;font-weight:bold"' if label == selected else ""
        cells = [_tuple(s.shape), _num(s.mean), _num(s.std)]
        cells += [_percent(s.zero_fraction), _percent(s.dead_fraction)]
        rows.append(
            f'<tr{style}><td style="{_PAD};text-align:left">{html.escape(label)}</td>'
            + "".join(f'<td style="{_PAD}">{cell}</td>' for cell in cells)
            + "</tr>"
        )
    return (
        '<table class="kk-features-stats" style="border-collapse:collapse;text-align:right">'
        f'<thead><tr><th style="{_PAD};text-align:left">layer</th>'
        f'<th style="{_PAD}">shape</th><th style="{_PAD}">mean</th><th style="{_PAD}">std</th>'
        f'<th style="{_PAD}" title="values exactly 0">zeros</th>'
        f'<th style="{_PAD}" title="units that were 0 for every sample">dead units</th>'
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<div style="color:#666">statistics over all {scan.count} samples</div>'
    )


def _percent(fraction: float) -> str:
    return "nan" if not math.isfinite(fraction) else f"{100 * fraction:.1f}%"


# --------------------------------------------------------------------------------------
# The widget


class Snapshot:
    """A frozen, self-contained picture of a FeatureView: HTML plus a text line."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


class FeatureView(StaticFallback, widgets.VBox):
    """Browse the activations of a model's layers for some sample inputs.

    The view runs one pass over all of ``x`` (batch by batch), keeping
    statistics for every layer and the activations of the first
    ``max_samples`` samples for drawing.

    Attributes:
        layer: Dropdown of layers (paths; ``" (call k)"`` / ``"[i]"`` for shared and
            multi-output layers).
        sample: IntSlider choosing the sample (among the kept ones).
        page: IntSlider choosing the page of channels for feature maps.
        vector_style: ToggleButtons, ``"bars"`` or ``"heatmap"`` for vector layers.
        figure: HTML widget with the drawing.
        table: HTML widget with the statistics.
        scan: the ``kernelkit.extraction.Scan`` behind the view (None without data).

    Example:
        >>> view = kernelkit.FeatureView(model, x_test[:500], max_samples=8)  # doctest: +SKIP
        >>> view                                                             # doctest: +SKIP

    """

    def __init__(
        self,
        model: Any,
        x: Any = None,
        layers: Any = None,
        *,
        batch_size: int = 32,
        training: bool = False,
        max_samples: int = 16,
        page_size: int = 16,
    ) -> None:
        """Creates the view; with ``x`` it extracts at once (errors as ``kernelkit.extract``).

        Args:
            model: a built Keras model of any kind.
            x: sample inputs (as for ``kernelkit.extract``), or None to give them
                later with ``set_data``.
            layers: which layers to offer (names or paths); None for all.
            batch_size: samples per forward pass.
            training: extract in training mode (dropout on).
            max_samples: how many leading samples of ``x`` to keep for drawing;
                the statistics use all of ``x``.
            page_size: feature-map channels per page.

        """
        from .. import extraction  # the core: imported on use (it imports Keras)

        extraction.check_model(model, "FeatureView", layer_ok=True)  # before any widget
        self._extraction = extraction
        self._model = model
        self._layers = layers
        self._options = {"batch_size": batch_size, "training": training, "max_samples": max_samples}
        self._page_size = max(1, int(page_size))
        self._x: Any = None
        self._quiet = False
        self.scan: Any = None

        self.layer = widgets.Dropdown(description="layer", options=[], layout={"width": "360px"})
        self.sample = widgets.IntSlider(description="sample", min=0, max=0, value=0)
        self.page = widgets.IntSlider(description="channels", min=0, max=0, value=0)
        self.vector_style = widgets.ToggleButtons(
            options=["bars", "heatmap"], value="bars", description="vectors",
            style={"button_width": "84px"},
        )  # fmt: skip
        self.figure = widgets.HTML()
        self.table = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.layer, self.sample]),
                widgets.HBox([self.page, self.vector_style]),
                self.figure,
                self.table,
            ]
        )
        for control in (self.sample, self.page, self.vector_style):
            control.observe(self._on_change, names="value")
        self.layer.observe(self._on_layer, names="value")
        if x is None:
            self._show_hint()
        else:
            self.set_data(x)

    # ---- data

    def set_data(self, x: Any) -> FeatureView:
        """Extracts the activations for ``x`` and shows them (returns the view).

        Raises:
            ValueError: as ``kernelkit.extract`` (unknown layer, bad shape, ...).

        """
        options = self._options
        scan = self._extraction.scan(  # raises before anything changes
            self._model,
            x,
            self._layers,
            batch_size=options["batch_size"],
            training=options["training"],
            max_samples=options["max_samples"],
        )
        self.scan, self._x = scan, x
        kept = next(iter(scan.samples.values())).shape[0] if scan.samples else 1
        previous = self.layer.value
        with self._quietly():
            self.layer.options = scan.labels
            # A refresh keeps the user's choice of layer.
            if previous in scan.labels:
                self.layer.value = previous
            elif scan.labels:
                self.layer.value = scan.labels[0]
            self.sample.max = max(kept - 1, 0)  # the slider clamps its value
        self._refresh(layer_changed=True)
        return self

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Changes controls without each change redrawing the picture."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def refresh(self) -> None:
        """Extracts again for the same ``x`` (the card calls this after a fit)."""
        if self._x is not None:
            self.set_data(self._x)

    def _show_hint(self) -> None:
        try:
            names = self._extraction.layer_names(self._model)
        except Exception:  # a model we cannot even walk: the hint is still useful
            names = []
        self.layer.options = names
        for control in (self.layer, self.sample, self.page, self.vector_style):
            control.disabled = True
        self.page.layout.display = "none"
        self.figure.value = f'<div class="kk-features-hint">{_HINT}</div>'
        self.table.value = ""
        self.fallback_changed()

    # ---- drawing

    def _on_layer(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._refresh(layer_changed=True)

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._refresh(layer_changed=False)

    def _refresh(self, *, layer_changed: bool) -> None:
        if self.scan is None or self.layer.value is None:
            return
        for control in (self.layer, self.sample, self.page, self.vector_style):
            control.disabled = False
        shape = self.scan.stats[self.layer.value].shape
        kind = _kind(shape)
        if layer_changed:
            pages = math.ceil(shape[-1] / self._page_size) if kind == "maps" else 1
            with self._quietly():
                self.page.value = 0
                self.page.max = max(pages - 1, 0)
            self.page.layout.display = None if pages > 1 else "none"
            self.vector_style.layout.display = None if kind in ("vector", "flat") else "none"
        self.figure.value = self._figure_html()
        self.table.value = _stats_table(self.scan, self.layer.value)
        self.fallback_changed()

    def _figure_html(self) -> str:
        label = self.layer.value
        return _render(
            label,
            self.scan.samples[label],
            self.sample.value,
            page=self.page.value,
            page_size=self._page_size,
            vector_style=self.vector_style.value,
        )

    # ---- static output

    def static_html(self) -> str:
        """The view as static HTML (its current layer and sample)."""
        return self.to_html()

    def to_html(self) -> str:
        """The current picture and statistics as one self-contained HTML fragment."""
        return (
            '<div class="kk-features" style="font-family:sans-serif;font-size:12px">'
            f"<div>{html.escape(repr(self))}</div>{self.figure.value}{self.table.value}</div>"
        )

    def snapshot(self) -> Snapshot:
        """A static copy of what the view shows now, to display as a plain output."""
        return Snapshot(self.to_html(), repr(self))

    def __repr__(self) -> str:
        name = getattr(self._model, "name", type(self._model).__name__)
        if self.scan is None:
            return f"FeatureView(model={name!r}, no data: call set_data(x))"
        kept = self.sample.max + 1
        return (
            f"FeatureView(model={name!r}, layer={self.layer.value!r}, sample={self.sample.value}, "
            f"{len(self.scan.labels)} layers, {kept} of {self.scan.count} samples kept)"
        )




def tab(model: Any, submit: Callable[[Any], bool], x: Any = None) -> widgets.Widget | None:
    """The model card's Features tab.

    Args:
        model: the card's model.
        submit: the session's intent sink (unused: looking at features changes nothing).
        x: sample inputs if the card has some; without them the tab shows how
            to give some (``kernelkit.FeatureView(model, x)`` or ``set_data``).

    Returns:
        A FeatureView, or None when the model has no layers to show.

    """
    from ..extraction import layer_names

    try:
        if not layer_names(model):
            return None
    except Exception:
        return None
    return FeatureView(model, x)
