"""Progress views: a live widget view for notebooks and a text line elsewhere.

Both are sinks of ``kernelkit.events``; neither touches the model. The
widget view streams through light ipywidgets (one HTML widget per part,
updated at most a few times a second) and, when the fit ends, replaces
itself through its display handle with a static HTML result (inline SVG
curves and the epoch table) plus a stable one-line ``text/plain``, so the
saved notebook reads in GitHub, nbviewer and nbconvert without a kernel.
The same bundle carries a plotly figure of the curves (plain JSON, see
``_plotly.py``) for frontends that render plotly.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import math
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..history import RunHistory, Throttle
from ..intents import StopTraining, Submit
from ..status import STATE_TEXT, FitStatus, format_logs, format_value
from . import _plotly, _svg

_STATE_COLOR = {
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "stopped_by_user": "#7f7f7f",
    "stopped_by_callback": "#bcbd22",
    "failed": "#d62728",
}


# --- HTML pieces (shared by the live widgets and the static result) ----------------------


def bar_html(state: FitStatus) -> str:
    """The header, the bar and the running metrics."""
    color = _STATE_COLOR.get(state.state, "#1f77b4")
    fraction = state.fraction
    if state.state == "finished":
        fraction = 1.0
    width = f"{100 * fraction:.1f}%" if fraction is not None else "100%"
    striped = (
        "background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.35) 0 6px,"
        "transparent 6px 12px);"
        if fraction is None and state.state == "running"
        else ""
    )
    name = html.escape(state.name)
    extras = []
    if state.strategy and state.strategy != "default":
        extras.append(html.escape(state.strategy))
    if state.resumed_at is not None:
        extras.append(f"resumed at epoch {state.resumed_at + 1}")
    extra = f' <span style="color:#666">({"; ".join(extras)})</span>' if extras else ""
    status = html.escape(STATE_TEXT.get(state.state, state.state))
    if state.compiling:
        status = "compiling…"
    if state.state != "running" and state.reason:
        status = html.escape(state.reason)
    return (
        '<div class="kk-progress" style="font-family:sans-serif;font-size:12px;max-width:640px">'
        f"<div><b>{name}</b> {html.escape(state.epoch_text())}{extra} · "
        f'<span class="kk-state" style="color:{color}">{status}</span></div>'
        '<div style="background:#e8e8e8;border-radius:3px;height:10px;margin:3px 0">'
        f'<div class="kk-bar" style="width:{width};height:10px;border-radius:3px;'
        f'background:{color};{striped}"></div></div>'
        f'<div style="color:#444">{html.escape(state.step_text())}</div>'
        f'<div class="kk-metrics">{html.escape(format_logs(state.logs))}</div></div>'
    )


# --- charts and table: the SVG, the plotly figure and the table show the same marks -----

#: Keras's batch-level logs are the epoch's running means so far, not per-batch values.
BATCH_LABEL = "running mean (Keras batch logs)"
EPOCH_LABEL = "epoch"
VALID_LABEL = "validation"
#: Epochs the live table shows (plus the best one); the final result shows all.
LIVE_ROWS = 5
#: A loss whose largest plotted value is more than this times its smallest gets a log axis.
LOG_SPAN = 100.0

# Substrings of Keras metric names (``val_`` stripped), lower better first:
# "sparse_categorical_crossentropy" is a loss, "categorical_accuracy" is not.
_LOWER_BETTER = ("loss", "error", "crossentropy", "hinge", "divergence", "poisson", "mse",
                 "mae", "mape", "msle")  # fmt: skip
_HIGHER_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "similarity")


def metric_goal(name: str) -> str | None:
    """'min' for loss-like metrics, 'max' for accuracy-like ones, None when unknown.

    Example:
        >>> metric_goal("val_loss"), metric_goal("sparse_categorical_accuracy")
        ('min', 'max')
    """
    key = (name[4:] if name.startswith("val_") else name).lower()
    if key == "learning_rate":
        return None
    if any(word in key for word in _LOWER_BETTER):
        return "min"
    if any(word in key for word in _HIGHER_BETTER):
        return "max"
    return None


def best_epoch(history: RunHistory, key: str) -> tuple[int, float] | None:
    """(absolute epoch, value) of the best finished epoch for ``key``.

    The lowest value for losses, the highest for accuracy-like metrics; the
    first one on ties (as EarlyStopping keeps it). None when ``key`` has no
    finite value or its goal is unknown.
    """
    goal = metric_goal(key)
    if goal is None:
        return None
    best: tuple[int, float] | None = None
    for epoch, logs in history.rows():
        value = logs.get(key)
        if value is None or not math.isfinite(value):
            continue
        if best is None or (value < best[1] if goal == "min" else value > best[1]):
            best = (epoch, value)
    return best


def _table_best(history: RunHistory) -> tuple[str, int] | None:
    """The table's best row: lowest val_loss, else lowest loss."""
    for key in ("val_loss", "loss"):
        found = best_epoch(history, key)
        if found is not None:
            return key, found[0]
    return None


def _cut_epoch(state: FitStatus | None, history: RunHistory) -> tuple[float, float] | None:
    """(x of its end, x where it stopped) of an epoch a stop cut short, else None."""
    if state is None or state.state != "stopped_by_user" or state.epoch < 0 or not state.steps:
        return None
    if not 0 < state.step < state.steps:
        return None
    start = state.epoch + history.offset
    return start + 1.0, start + state.step / state.steps


def run_marks(state: FitStatus | None, history: RunHistory) -> list[_svg.Mark]:
    """The run's events on the curves' x axis (absolute epochs, as ``history`` counts them).

    Where the run resumed (``TrainBegin.resumed_at``: the start of that
    epoch), where EarlyStopping or another callback stopped it (the end of
    its last epoch) and where a stop was asked for (the step it took effect).
    """
    if state is None:
        return []
    marks = []
    offset = history.offset
    if state.resumed_at is not None:
        marks.append(_svg.Mark(float(state.resumed_at + offset), "resumed", "#9467bd"))
    if state.epoch >= 0 and state.state == "stopped_by_user":
        fraction = min(state.step / state.steps, 1.0) if state.steps else 1.0
        marks.append(
            _svg.Mark(state.epoch + offset + fraction, "stop asked", _STATE_COLOR[state.state])
        )
    elif state.epoch >= 0 and state.state == "stopped_by_callback":
        label = "early stop" if state.reason.startswith("EarlyStopping") else "callback stop"
        marks.append(_svg.Mark(state.epoch + offset + 1.0, label, _STATE_COLOR[state.state]))
    return marks


def _spans_decades(lines: list[_svg.Line]) -> bool:
    ys = [y for line in lines for y in line.ys if math.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) > LOG_SPAN * min(ys)


def chart_specs(
    history: RunHistory,
    state: FitStatus | None = None,
    *,
    max_charts: int = 4,
    max_points: int = 512,
) -> list[_svg.Chart]:
    """One chart per metric: the batch running mean, epoch points, validation, marks, best.

    Losses get a log axis when their plotted values span more than two
    decades. ``max_points`` thins the batch-level line (live redraws use
    fewer points: they cost time on the render thread).
    """
    marks = run_marks(state, history)
    cut = _cut_epoch(state, history)

    def at(xs: list[float]) -> list[float]:
        # Keras logs an epoch a stop cut short like any other: draw its point
        # where it stopped, not at an end the epoch never reached.
        return [cut[1] if cut is not None and x == cut[0] else x for x in xs]

    ghost = _ghost_lines(state, history)
    charts = []
    for name in history.metric_names()[:max_charts]:
        lines = [line for key, line in ghost if key in (name, f"val_{name}")]
        batch = history.batch.get(name)
        if batch is not None and len(batch) > 1:
            step = max(1, -(-len(batch) // max_points))
            lines.append(
                _svg.Line(batch.xs[::step], batch.ys[::step], _svg.TRAIN, BATCH_LABEL, 1.0, 0.45)
            )
        xs, ys = history.epoch_series(name)
        if xs:
            lines.append(_svg.Line(at(xs), ys, _svg.TRAIN, EPOCH_LABEL, 1.5, 1.0, markers=True))
        vx, vy = history.epoch_series(f"val_{name}")
        if vx:
            lines.append(_svg.Line(at(vx), vy, _svg.VALID, VALID_LABEL, 1.5, 1.0, markers=True))
        if not lines:
            continue
        best = None
        found = best_epoch(history, f"val_{name}")
        if found is not None:
            epoch, value = found
            text = f"best val_{name} {format_value(value)} at epoch {epoch + 1}"
            best = _svg.Best(at([epoch + 1.0])[0], value, text)
        loss_like = metric_goal(name) == "min"
        charts.append(
            _svg.Chart(
                name,
                lines,
                marks,
                best,
                log_y=loss_like and _spans_decades(lines),
                loss_like=loss_like,
            )
        )
    return charts


GHOST = "#9e9e9e"


def _ghost_lines(state: FitStatus | None, history: RunHistory) -> list[tuple[str, _svg.Line]]:
    """The previous run's epoch curves, faint and grey, aligned with this fit's first epoch."""
    run = getattr(state, "ghost", None)
    if run is None or not getattr(run, "epochs", None):
        return []
    start = state.initial_epoch + history.offset if state is not None else history.offset
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in run.epochs:
        x = start + (row["epoch"] - run.initial_epoch) + 1.0
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(x)
                ys.append(float(value))
    label = f"previous run (#{run.id})"
    return [
        (key, _svg.Line(xs, ys, GHOST, label, 1.2, 0.6 if key.startswith("val_") else 0.4))
        for key, (xs, ys) in series.items()
    ]


def _swatch(color: str, *, opacity: float = 1.0, dot: bool = False, ring: bool = False) -> str:
    if ring:
        shape = f'<circle cx="9" cy="5" r="4" fill="none" stroke="{color}" stroke-width="1.5"/>'
    else:
        shape = (
            f'<line x1="0" x2="18" y1="5" y2="5" stroke="{color}" stroke-opacity="{opacity}" '
            f'stroke-width="{1.5 if dot else 1.2}"/>'
            + (f'<circle cx="9" cy="5" r="2.5" fill="{color}"/>' if dot else "")
        )
    return f'<svg width="18" height="10" style="vertical-align:middle">{shape}</svg>'


def _legend_html(charts: list[_svg.Chart]) -> str:
    """One legend above the charts (they share their kinds of lines)."""
    seen: dict[str, _svg.Line] = {}
    for chart in charts:
        for line in chart.lines:
            seen.setdefault(line.label, line)
    entries = []
    for label, line in seen.items():
        hint = ""
        if label == BATCH_LABEL:
            hint = (
                " title='Keras logs each step as the mean of the epoch so far, "
                "not the value of that batch'"
            )
        swatch = _swatch(line.color, opacity=line.opacity, dot=line.markers)
        entries.append(f"<span{hint}>{swatch} {html.escape(label)}</span>")
    if any(chart.best is not None for chart in charts):
        entries.append(f"<span>{_swatch(_svg.VALID, ring=True)} best validation</span>")
    return (
        "<div style='font-family:sans-serif;font-size:11px;color:#444;display:flex;"
        f"flex-wrap:wrap;gap:2px 12px;margin:2px 0'>{''.join(entries)}</div>"
    )


def _table_columns(history: RunHistory) -> list[str]:
    rows = list(history.rows())
    names = [n for n in history.metric_names() if n != "learning_rate"]
    keys: list[str] = []
    for n in names:
        for key in (n, f"val_{n}"):
            if any(key in logs for _, logs in rows):
                keys.append(key)
    return keys


def table_html(history: RunHistory, last: int | None = None, scroll_rows: int = 12) -> str:
    """The epoch table: every metric with its validation value (fastprogress style).

    Args:
        history: the run's epochs.
        last: show only the last ``last`` epochs and the best one (the live
            view, which must stay short); None shows every epoch.
        scroll_rows: the box around the table scrolls past about this many rows.

    Returns:
        The table's HTML; the best epoch's row (lowest ``val_loss``, else
        ``loss``) is highlighted and starred. Empty before the first epoch.
    """
    rows = list(history.rows())
    if not rows:
        return ""
    keys = _table_columns(history)
    best = _table_best(history)
    best_index = next((i for i, (e, _) in enumerate(rows) if best and e == best[1]), None)
    shown = list(range(len(rows)))
    if last is not None and len(rows) > last:
        tail = set(range(len(rows) - last, len(rows)))
        shown = sorted(tail if best_index is None else tail | {best_index})
    pad = "padding:1px 8px"
    head = "".join(
        f"<th style='{pad};position:sticky;top:0;background:#fff'>{html.escape(k)}</th>"
        for k in ["epoch", *keys]
    )
    body = []
    previous = -1
    for i in shown:
        if i > previous + 1:
            hidden = i - previous - 1
            body.append(
                f"<tr><td colspan='{len(keys) + 1}' style='{pad};color:#888;text-align:left'>"
                f"… {hidden} epoch{'s' if hidden != 1 else ''}</td></tr>"
            )
        previous = i
        epoch, logs = rows[i]
        cells = "".join(
            f"<td style='{pad}'>{format_value(logs[k]) if k in logs else ''}</td>"
            for k in keys
        )
        star, style = "", ""
        if i == best_index and best is not None:
            star = f"<span style='color:{_svg.VALID}' title='lowest {best[0]}'>★</span>"
            style = " style='background:#fff3e0'"
        body.append(
            f"<tr{style}><td style='{pad}'>{star}{epoch + 1}</td>{cells}</tr>"
        )
    caption = ""
    if best is not None and best_index is not None:
        caption = (
            "<caption style='caption-side:bottom;text-align:left;font-size:11px;color:#666'>"
            f"★ lowest {best[0]}</caption>"
        )
    # About 16 px a row at 12 px; the sticky header stays in view while it scrolls.
    height = (scroll_rows + 1) * 16 + 4
    return (
        f"<div class='kk-table-box' style='max-height:{height}px;overflow:auto;"
        "display:inline-block;max-width:100%'>"
        "<table class='kk-table' style='font-family:sans-serif;font-size:12px;"
        "border-collapse:collapse;margin:0'>"
        f"{caption}<thead><tr>{head}</tr></thead>"
        # text-align is inherited: said once on the body, not on each of its cells.
        f"<tbody style='text-align:right'>{''.join(body)}</tbody></table></div>"
    )


def curves_html(
    history: RunHistory,
    max_charts: int = 4,
    max_points: int = 512,
    state: FitStatus | None = None,
) -> str:
    """One small SVG chart per metric under one shared legend.

    ``state`` adds the run's marks (resume, early stop, stop asked).
    """
    charts = chart_specs(history, state, max_charts=max_charts, max_points=max_points)
    if not charts:
        return ""
    return (
        "<div class='kk-curves'>"
        + _legend_html(charts)
        + "<div style='display:flex;flex-wrap:wrap;gap:6px'>"
        + "".join(f"<div>{_svg.line_chart(c)}</div>" for c in charts)
        + "</div></div>"
    )


def curves_figure(
    state: FitStatus, history: RunHistory, max_points: int = 200
) -> dict[str, Any] | None:
    """The final curves as a plotly figure (plain JSON, no plotly import).

    Only the curves: the state line, compile times and epoch table stay in
    the HTML result above it (:func:`final_bundle`). None when there is
    nothing to plot.
    """
    charts = chart_specs(history, state, max_points=max_points)
    if not charts:
        return None
    return _plotly.figure(charts)


def timing_html(state: FitStatus) -> str:
    """The compile estimates of the final result (empty when nothing was measured)."""
    text = state.timing_text()
    breakdown = state.breakdown() if state.state != "running" else None
    where = ""
    if breakdown is not None:
        flagged = bool(breakdown.slow() or breakdown.blockers or breakdown.input_bound())
        color = "#b26a00" if flagged else "#666"
        where = (
            f"<div class='kk-breakdown' style='font-family:sans-serif;font-size:11px;"
            f"color:{color}' title='steps include the callbacks and the wait for input "
            f"(input: the steps waiting for their next batch); callbacks: the time inside "
            f"your callbacks own hooks'>"
            f"{html.escape(breakdown.line())}</div>"
        )
    if not text:
        return where
    return (
        "<div class='kk-timing' style='font-family:sans-serif;font-size:11px;color:#666' "
        "title='XLA compiles the train step in the first step and the test step in the "
        "first validation pass; ETA and throughput leave both out'>"
        f"{html.escape(text)}</div>" + where
    )


def static_html(state: FitStatus, history: RunHistory) -> str:
    """The final result: header, compile times, curves and table, readable without a kernel."""
    return (
        "<div class='kk-result'>"
        + bar_html(state)
        + timing_html(state)
        + curves_html(history, max_points=200, state=state)
        + table_html(history)
        + "</div>"
    )


def final_bundle(
    state: FitStatus, history: RunHistory, *, plot: bool = True, interactive: bool = True
) -> dict[str, Any]:
    """The display bundle that replaces the live widgets when a fit ends.

    ``text/html`` reads in GitHub, nbviewer and nbconvert; ``text/plain`` is
    the stable summary line nbval compares. With ``interactive`` the curves
    are not in it: they are their own output, :func:`curves_bundle`, shown
    right after this one. Without, it holds the whole result (header,
    compile times, SVG curves, table) in one output.
    """
    if not plot:
        body = bar_html(state) + timing_html(state) + table_html(history)
    elif interactive:  # without curves to draw, static_html would hold none either
        body = "<div class='kk-result'>" + bar_html(state) + timing_html(state)
        body += table_html(history) + "</div>"
    else:
        body = static_html(state, history)
    return {"text/html": body, "text/plain": state.summary()}


def curves_text(state: FitStatus, history: RunHistory) -> str:
    """The curves output's ``text/plain``: what is drawn and the best validation epoch."""
    names = history.metric_names()[:4]
    name = f"{state.name}: " if state.name else ""
    text = f"kernelkit {name}curves of {', '.join(names)}"
    best = best_epoch(history, "val_loss")
    if best is not None:
        text += f" (best val_loss {format_value(best[1])} at epoch {best[0] + 1})"
    return text


def curves_bundle(state: FitStatus, history: RunHistory) -> dict[str, Any] | None:
    """The final curves as their own output: a plotly figure over the static SVG.

    A frontend shows one mime type per output and JupyterLab's plotly
    renderer outranks ``text/html``; in its own output the figure (hover,
    zoom, legend toggles, a log/linear switch) hides only the SVG it
    replaces, never the header and table of :func:`final_bundle`. GitHub,
    nbviewer and nbconvert, which do not render plotly, show the SVG.
    JupyterLab saves a PNG snapshot of the figure beside it (the size of the
    output area): the figure is kept short and light so that a saved
    20-epoch notebook stays small. None when there is nothing to draw.
    """
    figure = curves_figure(state, history)
    if figure is None:
        return None
    curves = curves_html(history, max_points=150, state=state)
    return {
        _plotly.MIME: figure,
        "text/html": f"<div class='kk-result-curves'>{curves}</div>",
        "text/plain": curves_text(state, history),
    }


# --- views --------------------------------------------------------------------------------


class TextView:
    """A compact progress line for terminals and scripts; never raises."""

    def __init__(self, stream: Any = None, refresh: float = 1.0, clock: Any = time.monotonic):
        self.state = FitStatus()
        self.stream = stream if stream is not None else sys.stdout
        self._throttle = Throttle(refresh, clock)
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def handle(self, event: ev.Event) -> None:
        """Prints what ``event`` changes."""
        self.state.apply(event)
        s = self.state
        if isinstance(event, ev.Step) and self._tty and self._throttle.ready():
            frac = s.fraction
            bar = ""
            if frac is not None:
                filled = int(frac * 20)
                bar = "[" + "=" * filled + ">" * (filled < 20) + "." * (19 - filled) + "] "
            line = f"{s.epoch_text()} {bar}{s.step_text()} {format_logs(s.logs)}"
            self.stream.write("\r" + line[:160])
            self.stream.flush()
        elif isinstance(event, ev.EpochEnd):
            prefix = "\r" if self._tty else ""
            self.stream.write(
                f"{prefix}{s.epoch_text()} {s.step_text()} {format_logs(event.logs, 10)}\n"
            )
            self.stream.flush()
        elif isinstance(event, ev.TrainEnd):
            self.stream.write(s.summary() + "\n")
            self.stream.flush()


class ProgressView:
    """The live notebook view: bar, metrics, curves, epoch table and a Stop button.

    Args:
        history: the store to draw; a new one (fed by ``handle``) when None.
        submit: where the Stop button sends ``StopTraining("user")`` (the
            fit's ``LiveProgress.submit``). It runs on the kernel's subshell
            thread during a fit, so it must only set flags.
        plot: whether to draw curves.
        interactive: whether the final curves are their own output with a
            plotly figure over the SVG (:func:`curves_bundle`); else the
            whole result is one static HTML output.
        curve_refresh: the shortest time between two curve redraws, seconds.
        fallback_refresh: the shortest time between two updates of the live
            view's saved fallback (its ``text/html`` and ``text/plain``), at
            epoch ends, seconds.
        clock: a monotonic clock.
    """

    def __init__(
        self,
        history: RunHistory | None = None,
        submit: Submit | None = None,
        *,
        plot: bool = True,
        interactive: bool = True,
        curve_refresh: float = 2.0,
        fallback_refresh: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owns_history = history is None
        self.history = history if history is not None else RunHistory()
        self.state = FitStatus()
        self.plot = plot
        self.interactive = interactive
        self.submit = submit
        self._curves_throttle = Throttle(curve_refresh, clock)
        self._fallback_throttle = Throttle(fallback_refresh, clock)
        self._curves = ""
        self._table = ""
        self._note = ""
        self._handle: Any = None
        self._closed = False
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self.render_cpu = 0.0  # seconds of CPU the render thread used, over every fit
        self.widget: Any = None
        self.stop_live = False

    def build(self) -> None:
        """Creates the widgets (once). ``show`` and the render thread call it."""
        if self.widget is not None:
            return
        import ipywidgets as w

        from ..transport.subshell import route_widget

        # Few widgets on purpose: each one costs comm messages to open and close
        # and time to build. One HTML body carries the bar, the curves and the
        # table; the curves' and table's HTML is cached and only redrawn when
        # they change.
        layout = w.Layout()
        self.body = w.HTML(value=bar_html(self.state), layout=layout)
        self.stop_button = w.Button(
            description="Stop",
            icon="stop",
            button_style="warning",
            tooltip="Stop after this step",
            layout=layout,
        )
        self.stop_button.on_click(self._clicked)
        self._layout = layout
        self.stop_live = route_widget(self.stop_button)
        if not self.stop_live:
            self._note = (
                "<div style='color:#666;font-size:11px'>This kernel cannot take clicks during a "
                "fit: use the kernel interrupt (■) to stop gracefully.</div>"
            )
        self.widget = w.VBox([self.body, self.stop_button], layout=layout)

    def _render(self) -> None:
        self.body.value = bar_html(self.state) + self._note + self._curves + self._table

    # The widgets' repr is random ids; this is what nbval and plain frontends see.
    def __repr__(self) -> str:
        return self.state.summary() if self.state.state != "running" else "kernelkit: training…"

    def _clicked(self, _button: Any) -> None:
        if self.submit is not None:
            self.submit(StopTraining("user"))
        # Setting a trait from the subshell thread only queues a comm message.
        self.stop_button.description = "Stopping…"
        self.stop_button.disabled = True

    def show(self) -> None:
        """Displays the live view in the current cell's output."""
        from IPython.display import display

        self.build()
        self._handle = display(self._live_bundle(), raw=True, display_id=True)

    def _live_bundle(self) -> dict[str, Any]:
        """The live widget's display bundle, with fallbacks that say what it shows now.

        A notebook saved mid-fit keeps this bundle; GitHub, nbviewer and VS
        Code read its ``text/html`` and ``text/plain`` (they keep no widget
        state, microsoft/vscode-jupyter#4404).
        """
        s = self.state
        text = "kernelkit: training…"
        if s.epoch >= 0:
            name = f"{s.name}: " if s.name else ""
            logs = format_logs(s.last_epoch_logs)
            text = f"kernelkit {name}training… {s.epoch_text()}" + (f" - {logs}" if logs else "")
        return {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self.widget.model_id,
            },
            "text/plain": text,
            "text/html": self.body.value,
        }

    def _update_fallback(self) -> None:
        # In JupyterLab a display update re-creates the widget's view (a few ms for this
        # small one), so it happens at epoch ends only, and throttled.
        if self._handle is None or self.widget is None or self._closed:
            return
        if self._fallback_throttle.ready():
            self._handle.update(self._live_bundle(), raw=True)

    def handle(self, event: ev.Event) -> None:
        """Takes one event (the callback throttles steps).

        Begin and end are handled at once, on the calling (training) thread:
        the live view must be displayed from the cell's context and the
        static result must be in place when ``fit`` returns. Steps and epoch
        ends go to a render thread, so building HTML and sending it costs the
        training thread one queue put (TensorFlow releases the GIL while it
        computes, so rendering overlaps training).
        """
        if self._owns_history:
            self.history.apply(event)
        if isinstance(event, ev.TrainBegin):
            self._start_renderer()
            self._queue.put(event)  # built and shown on the render thread
        elif isinstance(event, ev.TrainEnd):
            self._stop_renderer()
            self._apply(event)
        elif self._queue is not None:
            self._queue.put(event)
        else:
            self._apply(event)

    def _apply(self, event: ev.Event) -> None:
        self.state.apply(event)
        if isinstance(event, ev.TrainBegin):
            self.build()
            self._render()
            if self._handle is None:
                self.show()
        elif isinstance(event, ev.Step):
            # Live curves stay SVG redraws: a plotly mime output is a snapshot that
            # cannot stream without a widget (each update would resend and re-plot
            # the whole figure), so the plotly figure comes with the final result.
            if self.plot and self._curves_throttle.ready():
                self._curves = curves_html(self.history, max_points=150, state=self.state)
            self._render()
        elif isinstance(event, ev.EpochEnd):
            if event.epoch + 1 >= self.state.epochs > 0 and self.widget is not None:
                # The fit's last epoch: the final result replaces the view at once, and a
                # redraw now would only make on_train_end wait for it (issue 18).
                return
            if self.plot:
                self._curves = curves_html(self.history, max_points=150, state=self.state)
            self._table = table_html(self.history, last=LIVE_ROWS)
            self._render()
            self._update_fallback()
        elif isinstance(event, ev.TrainEnd):
            self.finish()

    def _start_renderer(self) -> None:
        if self._thread is not None:
            return
        self._queue = queue.SimpleQueue()
        # A copy of the cell's context routes display() from the thread to this cell.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._run_renderer, self._queue),
            name="kernelkit-render",
            daemon=True,
        )
        self._thread.start()

    def _stop_renderer(self) -> None:
        thread, q = self._thread, self._queue
        self._thread = self._queue = None
        if thread is not None and q is not None:
            q.put(None)
            thread.join(timeout=10)

    def _run_renderer(self, q: Any) -> None:
        try:
            self._render_loop(q)
        finally:
            # The thread's own CPU time (it starts at 0 in a new thread): the benchmarks
            # count it next to the hooks' self-time, read once per fit, never per step.
            self.render_cpu += time.thread_time()

    def _render_loop(self, q: Any) -> None:
        while True:
            event = q.get()
            if event is None:
                return
            # Coalesce: apply every waiting event, draw once.
            batch = [event]
            while not q.empty():
                more = q.get()
                if more is None:
                    self._draw(batch)
                    return
                batch.append(more)
            self._draw(batch)

    def _draw(self, batch: list[ev.Event]) -> None:
        try:
            for event in batch[:-1]:
                if isinstance(event, ev.TrainBegin):
                    self._apply(event)  # builds and shows the view: never skipped
                else:
                    self.state.apply(event)
                    if isinstance(event, ev.EpochEnd):
                        self._table = table_html(self.history, last=LIVE_ROWS)
            self._apply(batch[-1])
        except Exception as err:
            print(f"kernelkit: the progress view failed to draw: {err!r}", file=sys.stderr)

    def finish(self) -> None:
        """Replaces the live widgets with the static result and closes them."""
        if self._closed:
            return
        self._closed = True
        bundle = final_bundle(
            self.state, self.history, plot=self.plot, interactive=self.interactive
        )
        self._replace_with(bundle)
        if self.plot and self.interactive:
            curves = curves_bundle(self.state, self.history)
            if curves is not None:
                self._display_more(curves)

    def _display_more(self, bundle: dict[str, Any]) -> None:
        """Shows ``bundle`` as a new output after the result (tests record it instead)."""
        from IPython.display import display

        display(bundle, raw=True)

    def _replace_with(self, bundle: dict[str, Any]) -> None:
        """Puts ``bundle`` where the live widgets were, and closes the widgets."""
        if self._handle is not None:
            self._handle.update(bundle, raw=True)
        else:
            from IPython.display import display

            display(bundle, raw=True)
        if self.widget is not None:
            for widget in (
                self.widget,
                self.body,
                self.stop_button,
                self.body.style,
                self.stop_button.style,
                self._layout,
            ):
                widget.close()


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets can show), False in a terminal."""
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return False
    shell = ipython_mod.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def make_view(callback: Any) -> Any:
    """The view a ``LiveProgress`` asked for with ``display``."""
    display = callback.display
    if display == "none":
        return None
    if display == "text" or (display == "auto" and not in_notebook_kernel()):
        return TextView()
    view = ProgressView(
        callback.history,
        submit=callback.submit,
        plot=callback.plot,
        interactive=getattr(callback, "interactive", True),
    )
    view.state.ghost = getattr(callback, "ghost", None)
    view.state.timer = getattr(callback, "timer", None)
    view.state.blockers = list(getattr(callback, "blockers", None) or [])
    view.state.input_timer = getattr(callback, "input_timer", None)
    _finish_on_cell_error(view, callback)
    return view


def _finish_on_cell_error(view: ProgressView, callback: Any) -> None:
    """Marks the view failed if the cell ends while the fit still 'runs'.

    Keras skips ``on_train_end`` when ``fit`` raises; without this a raw
    ``model.fit(callbacks=[LiveProgress()])`` that fails would leave a
    silent, half-drawn bar.
    """
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod else None
    if shell is None:
        return

    def _check(result: Any) -> None:
        with contextlib.suppress(ValueError):  # already unregistered
            shell.events.unregister("post_run_cell", _check)
        if not view._closed:
            error = getattr(result, "error_in_exec", None)
            callback.fail(error if error is not None else "the cell ended before the fit did")
            view.finish()

    shell.events.register("post_run_cell", _check)
