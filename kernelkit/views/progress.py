"""Progress views: a live widget view for notebooks and a text line elsewhere.

Both are sinks of ``kernelkit.events``; neither touches the model. The
widget view streams through light ipywidgets (one HTML widget per part,
updated at most a few times a second) and, when the fit ends, replaces
itself through its display handle with a static HTML result (inline SVG
curves and the epoch table) plus a stable one-line ``text/plain``, so the
saved notebook reads in GitHub, nbviewer and nbconvert without a kernel.
"""

from __future__ import annotations

import contextvars
import html
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..history import RunHistory, Throttle
from . import _svg

_STATE_TEXT = {
    "running": "training",
    "finished": "finished",
    "stopped_by_user": "stopped by user",
    "stopped_by_callback": "stopped by a callback",
    "failed": "failed",
}
_STATE_COLOR = {
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "stopped_by_user": "#7f7f7f",
    "stopped_by_callback": "#bcbd22",
    "failed": "#d62728",
}


def format_duration(seconds: float | None) -> str:
    """0:07, 1:02:03; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_value(value: float) -> str:
    """Metric values: 4 significant digits."""
    if value != value:
        return "nan"
    return f"{value:.4g}"


def format_logs(logs: dict[str, float] | Any, limit: int = 6) -> str:
    """'loss 0.1234 · accuracy 0.9' (learning_rate last, at most ``limit`` entries)."""
    items = [(k, v) for k, v in logs.items() if k != "learning_rate"][:limit]
    return " · ".join(f"{k} {format_value(v)}" for k, v in items)


class ProgressState:
    """What the views show, derived from events only (pure; tests drive it)."""

    def __init__(self) -> None:
        self.name = ""
        self.strategy = "default"
        self.replicas = 1
        self.epochs = 0
        self.initial_epoch = 0
        self.steps: int | None = None
        self.batch_size: int | None = None
        self.resumed_at: int | None = None
        self.epoch = -1
        self.step = 0
        self.logs: dict[str, float] = {}
        self.t_begin: float | None = None
        self.t_epoch: float | None = None
        self.t_now: float | None = None
        self.state = "running"
        self.reason = ""
        self.last_epoch_logs: dict[str, float] = {}
        self.epochs_done = 0

    def apply(self, event: ev.Event) -> None:
        """Updates the state with one event."""
        self.t_now = event.time
        if isinstance(event, ev.TrainBegin):
            self.name = event.model_name
            self.strategy = event.strategy
            self.replicas = event.replicas
            self.epochs = event.epochs
            self.initial_epoch = event.initial_epoch
            self.steps = event.steps
            self.batch_size = event.batch_size
            self.resumed_at = event.resumed_at
            self.t_begin = event.time
        elif isinstance(event, ev.EpochBegin):
            self.epoch = event.epoch
            self.step = 0
            self.t_epoch = event.time
        elif isinstance(event, ev.Step):
            self.step = event.step
            if event.logs:
                self.logs = dict(event.logs)
        elif isinstance(event, ev.EpochEnd):
            self.last_epoch_logs = dict(event.logs)
            self.epochs_done += 1
            if self.steps is None and event.steps:
                self.steps = event.steps
        elif isinstance(event, ev.TrainEnd):
            self.state = event.state
            self.reason = event.reason

    @property
    def elapsed(self) -> float:
        """Seconds since the epoch began."""
        if self.t_epoch is None or self.t_now is None:
            return 0.0
        return max(self.t_now - self.t_epoch, 0.0)

    @property
    def rate(self) -> float | None:
        """Steps per second in the current epoch."""
        elapsed = self.elapsed
        return self.step / elapsed if elapsed > 0 and self.step > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left in the current epoch, when the step count is known."""
        rate = self.rate
        if rate is None or self.steps is None:
            return None
        return max(self.steps - self.step, 0) / rate

    @property
    def fraction(self) -> float | None:
        """Share of the epoch done, or None when the step count is unknown."""
        if not self.steps:
            return None
        return min(self.step / self.steps, 1.0)

    def epoch_text(self) -> str:
        """'Epoch 3/10' (1-based, as Keras prints it)."""
        return f"Epoch {max(self.epoch, 0) + 1}/{self.epochs}" if self.epoch >= 0 else "starting"

    def step_text(self) -> str:
        """'step 120/400 · 0:03 elapsed · ETA 0:07 · 40.1 steps/s · 1,283 samples/s'."""
        parts = [f"step {self.step}/{self.steps}" if self.steps else f"step {self.step}"]
        parts.append(f"{format_duration(self.elapsed)} elapsed")
        if self.steps:
            parts.append(f"ETA {format_duration(self.eta)}")
        rate = self.rate
        if rate is not None:
            parts.append(f"{rate:,.1f} steps/s")
            if self.batch_size:
                parts.append(f"{rate * self.batch_size:,.0f} samples/s")
        return " · ".join(parts)

    def summary(self) -> str:
        """The stable one-line text/plain of the final result (no times: nbval compares it)."""
        name = f"{self.name}: " if self.name else ""
        head = f"kernelkit {name}{_STATE_TEXT.get(self.state, self.state)}"
        if self.state in ("stopped_by_user", "failed", "stopped_by_callback") and self.reason:
            head = f"kernelkit {name}{self.reason}"
        done = f"{self.epochs_done} epoch{'s' if self.epochs_done != 1 else ''}"
        tail = format_logs(self.last_epoch_logs)
        return f"{head} ({done})" + (f" - {tail}" if tail else "")


# --- HTML pieces (shared by the live widgets and the static result) ----------------------


def bar_html(state: ProgressState) -> str:
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
    status = html.escape(_STATE_TEXT.get(state.state, state.state))
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


def table_html(history: RunHistory, max_rows: int = 12) -> str:
    """The epoch table: every metric with its validation value (fastprogress style)."""
    rows = list(history.rows())
    if not rows:
        return ""
    names = [n for n in history.metric_names() if n != "learning_rate"]
    keys: list[str] = []
    for n in names:
        for key in (n, f"val_{n}"):
            if any(key in logs for _, logs in rows):
                keys.append(key)
    head = "".join(f"<th style='padding:1px 8px'>{html.escape(k)}</th>" for k in keys)
    shown = rows if len(rows) <= max_rows else rows[: max_rows // 2] + rows[-max_rows // 2 :]
    body = []
    for i, (epoch, logs) in enumerate(shown):
        if len(rows) > max_rows and i == max_rows // 2:
            body.append(f"<tr><td colspan='{len(keys) + 1}' style='color:#888'>…</td></tr>")
        cells = "".join(
            f"<td style='padding:1px 8px;text-align:right'>"
            f"{format_value(logs[k]) if k in logs else ''}</td>"
            for k in keys
        )
        body.append(
            f"<tr><td style='padding:1px 8px;text-align:right'>{epoch + 1}</td>{cells}</tr>"
        )
    return (
        "<table class='kk-table' style='font-family:sans-serif;font-size:12px;"
        "border-collapse:collapse'>"
        f"<thead><tr><th style='padding:1px 8px'>epoch</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def curves_html(history: RunHistory, max_charts: int = 4, max_points: int = 512) -> str:
    """One small SVG chart per metric: batch-level train line, epoch points, validation.

    ``max_points`` thins the batch-level line when drawing (live redraws use
    fewer points: they cost time on the training thread).
    """
    charts = []
    for name in history.metric_names()[:max_charts]:
        lines = []
        batch = history.batch.get(name)
        if batch is not None and len(batch) > 1:
            step = max(1, -(-len(batch) // max_points))
            lines.append(_svg.Line(batch.xs[::step], batch.ys[::step], _svg.TRAIN, "", 1.0, 0.45))
        xs, ys = history.epoch_series(name)
        if xs:
            lines.append(_svg.Line(xs, ys, _svg.TRAIN, "train", 1.5, 1.0, markers=True))
        vx, vy = history.epoch_series(f"val_{name}")
        if vx:
            lines.append(_svg.Line(vx, vy, _svg.VALID, "validation", 1.5, 1.0, markers=True))
        if lines:
            charts.append(_svg.line_chart(name, lines))
    if not charts:
        return ""
    return (
        "<div class='kk-curves' style='display:flex;flex-wrap:wrap;gap:6px'>"
        + "".join(f"<div>{c}</div>" for c in charts)
        + "</div>"
    )


def static_html(state: ProgressState, history: RunHistory) -> str:
    """The final result: header, curves and table, readable without a kernel."""
    return (
        "<div class='kk-result'>"
        + bar_html(state)
        + curves_html(history, max_points=300)
        + table_html(history)
        + "</div>"
    )


# --- views --------------------------------------------------------------------------------


class TextView:
    """A compact progress line for terminals and scripts; never raises."""

    def __init__(self, stream: Any = None, refresh: float = 1.0, clock: Any = time.monotonic):
        self.state = ProgressState()
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
        on_stop: called (with no argument) when the Stop button is clicked.
            It runs on the kernel's subshell thread during a fit, so it must
            only set flags.
        plot: whether to draw curves.
        curve_refresh: the shortest time between two curve redraws, seconds.
        clock: a monotonic clock.
    """

    def __init__(
        self,
        history: RunHistory | None = None,
        on_stop: Callable[[], None] | None = None,
        *,
        plot: bool = True,
        curve_refresh: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owns_history = history is None
        self.history = history if history is not None else RunHistory()
        self.state = ProgressState()
        self.plot = plot
        self.on_stop = on_stop
        self._curves_throttle = Throttle(curve_refresh, clock)
        self._curves = ""
        self._table = ""
        self._note = ""
        self._handle: Any = None
        self._closed = False
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self.widget: Any = None
        self.stop_live = False

    def build(self) -> None:
        """Creates the widgets (once). ``show`` and the render thread call it."""
        if self.widget is not None:
            return
        import ipywidgets as w

        from ._subshell import route_widget

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
        if self.on_stop is not None:
            self.on_stop()
        # Setting a trait from the subshell thread only queues a comm message.
        self.stop_button.description = "Stopping…"
        self.stop_button.disabled = True

    def show(self) -> None:
        """Displays the live view in the current cell's output."""
        from IPython.display import display

        self.build()
        bundle = {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self.widget.model_id,
            },
            "text/plain": "kernelkit: training…",
            "text/html": self.body.value,
        }
        self._handle = display(bundle, raw=True, display_id=True)

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
            if self.plot and self._curves_throttle.ready():
                self._curves = curves_html(self.history, max_points=150)
            self._render()
        elif isinstance(event, ev.EpochEnd):
            if self.plot:
                self._curves = curves_html(self.history, max_points=150)
            self._table = table_html(self.history)
            self._render()
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
                        self._table = table_html(self.history)
            self._apply(batch[-1])
        except Exception as err:
            print(f"kernelkit: the progress view failed to draw: {err!r}", file=sys.stderr)

    def finish(self) -> None:
        """Replaces the live widgets with the static result and closes them."""
        if self._closed:
            return
        self._closed = True
        bundle = {
            "text/html": static_html(self.state, self.history)
            if self.plot
            else bar_html(self.state) + table_html(self.history),
            "text/plain": self.state.summary(),
        }
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
    view = ProgressView(callback.history, on_stop=callback.request_stop, plot=callback.plot)
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
        try:
            shell.events.unregister("post_run_cell", _check)
        except ValueError:
            pass
        if not view._closed:
            error = getattr(result, "error_in_exec", None)
            callback.fail(error if error is not None else "the cell ended before the fit did")
            view.finish()

    shell.events.register("post_run_cell", _check)
