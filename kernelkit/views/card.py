"""The model card: a summary, then one tab per kernelkit feature that applies.

Tabs are pluggable: each is a ``tab(model, submit)`` function returning a
widget, or None when it does not apply (no stateful layers: no States
tab). The card's ``text/plain`` and ``text/html`` are static, so a saved
notebook still shows the summary without a kernel; they follow the model
(a freeze, a fit) through the card's display handle (``_static.Fallback``).
"""

from __future__ import annotations

import html
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ._static import Fallback, watch


def _has_stateful_layers(model: Any) -> bool:
    from ..rnn_state import stateful_layers

    return bool(stateful_layers(model))


# (title, module with a ``tab(model, submit)`` function, whether it applies), in display order.
def _has_runs(model: Any, entry: Any) -> bool:
    return entry is not None and getattr(entry, "runs", 0) > 0


def _has_watch(model: Any, entry: Any) -> bool:
    return getattr(entry, "watch", None) is not None


#: (title, module, applies(model, entry) or None for always). Each module has
#: ``tab(model, submit, **context)``; it is given the context it names (``x``:
#: a few inputs of the last fit; ``entry``: the session's record of the model).
TABS: list[tuple[str, str, Callable[[Any, Any], bool] | None]] = [
    ("Layers", "kernelkit.views.layers", None),
    ("Features", "kernelkit.views.features", None),
    ("States", "kernelkit.views.states", lambda model, entry: _has_stateful_layers(model)),
    ("Runs", "kernelkit.views.ledger", _has_runs),
    ("Activations", "kernelkit.views.watch", _has_watch),
]


def _shape(layer: Any) -> str:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return "?"
    shapes = [o.shape for o in out] if isinstance(out, (list, tuple)) else [out.shape]
    return ", ".join(str(tuple(s)) for s in shapes).replace("None", "None")


def layer_rows(model: Any) -> list[tuple[str, str, str, int, bool]]:
    """(name, type, output shape, parameters, trainable) for each top-level layer."""
    from ..freezing import count_parameters

    rows = []
    for layer in model.layers:
        params = count_parameters(layer.weights) if layer.built else 0
        rows.append(
            (layer.name, type(layer).__name__, _shape(layer), params, bool(layer.trainable))
        )
    return rows


#: Above this many top-level layers the summary shows the first and last ones only, as
#: pandas truncates a long frame: a saved card stays small at any depth (NASNetMobile's
#: 771 rows were 150 KB), and the Layers tab, paged, has every layer.
SUMMARY_ROWS = 60
_HEAD, _TAIL = 20, 10


def _truncated(rows: list[Any]) -> tuple[list[Any], int]:
    """The rows the summary shows, with a ``(None, …)`` marker row where some are left out."""
    if len(rows) <= SUMMARY_ROWS:
        return rows, 0
    hidden = len(rows) - _HEAD - _TAIL
    return [*rows[:_HEAD], (None, None, None, None, None), *rows[-_TAIL:]], hidden


class ModelCard:
    """The card of a model: summary table, totals, device and strategy, last run, tabs.

    Args:
        model: a ``keras.Model``.
        entry: its registry entry (``kernelkit.session.Entry``), if registered.
    """

    def __init__(
        self, model: Any, entry: Any = None, submit: Callable[[Any], bool] | None = None
    ) -> None:
        self.model = model
        self.entry = entry
        # Where the tabs' intents go when there is no entry: the session hands it in
        # (the card applies nothing itself).
        self._submit = submit
        self.widget: Any = None
        self.fallback = Fallback(self._repr_mimebundle_)
        self._shown_summary = ""

    # --- static parts ----------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts."""
        from ..freezing import parameter_counts

        return parameter_counts(self.model)

    def _name(self) -> str:
        return self.entry.name if self.entry is not None else self.model.name

    def _strategy(self) -> str:
        return self.entry.strategy_text if self.entry is not None else "default"

    def _device(self) -> str:
        try:
            from ..devices import devices

            return devices().label()
        except Exception:
            import keras

            return f"Keras {keras.__version__} ({keras.backend.backend()})"

    def __repr__(self) -> str:
        trainable, frozen = self.totals()
        runs = self.entry.runs if self.entry is not None else 0
        last = (
            f"; last run: {self.entry.last_summary}"
            if self.entry and self.entry.last_summary
            else ""
        )
        return (
            f"<kernelkit model card {self._name()!r}: {type(self.model).__name__}, "
            f"{len(self.model.layers)} layers, {trainable:,} trainable / {frozen:,} non-trainable "
            f"parameters, strategy {self._strategy()}, {runs} run{'s' if runs != 1 else ''}{last}>"
        )

    def summary_html(self) -> str:
        """The summary tab, also the static HTML of the card."""
        trainable, frozen = self.totals()
        every = layer_rows(self.model)
        shown, hidden = _truncated(every)
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(t)}</td><td>{html.escape(s)}</td>"
            f"<td style='text-align:right'>{p:,}</td><td>{'yes' if tr else 'no'}</td></tr>"
            if n is not None
            else f"<tr><td colspan='5' style='color:#666'>… {hidden:,} more layers "
            "(the Layers tab lists every one)</td></tr>"
            for n, t, s, p, tr in shown
        )
        last = ""
        if self.entry is not None and self.entry.last_summary:
            last = f"<div>Last run: {html.escape(self.entry.last_summary)}</div>"
        return (
            "<div class='kk-card' style='font-family:sans-serif;font-size:12px'>"
            f"<div><b>{html.escape(self._name())}</b> · {html.escape(type(self.model).__name__)}"
            f" · strategy {html.escape(self._strategy())} · {html.escape(self._device())}</div>"
            "<table class='kk-summary' style='border-collapse:collapse'><thead><tr>"
            "<th>layer</th><th>type</th><th>output shape</th><th>parameters</th>"
            f"<th>trainable</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<div class='kk-totals'>Trainable parameters: {trainable:,} · "
            f"non-trainable: {frozen:,} · total: {trainable + frozen:,}</div>{last}</div>"
        )

    # --- the live widget -------------------------------------------------------------

    def submit(self) -> Callable[[Any], bool]:
        """Where the tabs send intents: the session's entry, or what the card was given."""
        if self.entry is not None:
            return self.entry.submit  # type: ignore[no-any-return]
        if self._submit is not None:
            return self._submit

        def refused(intent: Any) -> bool:
            return False  # a card built without a session: shown, never changing the model

        return refused

    def tab_builders(self) -> list[tuple[str, Callable[[], Any]]]:
        """(title, builder) of every tab that may apply, Summary first."""
        builders: list[tuple[str, Callable[[], Any]]] = [("Summary", self._build_summary)]
        for title, module_name, applies in TABS:
            if applies is not None and not applies(self.model, self.entry):
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            builders.append((title, self._builder(module)))
        return builders

    def _builder(self, module: Any) -> Callable[[], Any]:
        def build() -> Any:
            import ipywidgets as w

            context = {"x": getattr(self.entry, "sample", None), "entry": self.entry}
            accepted = inspect.signature(module.tab).parameters
            given = {k: v for k, v in context.items() if k in accepted and v is not None}
            widget = module.tab(self.model, self.submit(), **given)
            return widget if widget is not None else w.HTML("<i>Does not apply to this model.</i>")

        return build

    def _build_summary(self) -> Any:
        import ipywidgets as w

        self._summary = w.HTML(value=self.summary_html())
        return self._summary

    def tabs(self) -> list[tuple[str, Any]]:
        """(title, widget) of every tab that applies, all built now (tests, scripts)."""
        found = []
        for title, build in self.tab_builders():
            widget = build()
            if (
                title != "Summary"
                and isinstance(getattr(widget, "value", None), str)
                and ("Does not apply" in widget.value)
            ):
                continue
            found.append((title, widget))
        return found

    def build(self) -> Any:
        """Creates the tab widget (once); tabs other than Summary are built when first opened.

        Building a tab only when it is opened keeps a saved notebook small:
        nbclient and JupyterLab store the state of every widget created.
        """
        if self.widget is None:
            import ipywidgets as w

            builders = self.tab_builders()
            self._builders = builders
            children = [builders[0][1]()] + [
                w.HTML("<i>Select this tab to load it.</i>") for _ in builders[1:]
            ]
            self._tab_widgets: list[Any] = list(children)
            self._built = [True] + [False] * (len(builders) - 1)
            self.widget = w.Tab(children=children)
            for i, (title, _) in enumerate(builders):
                self.widget.set_title(i, title)
            self.widget.observe(self._open_tab, names="selected_index")
            if self.entry is not None:
                self.entry.listen(self.refresh)
        return self.widget

    def _open_tab(self, change: Any) -> None:
        index = change["new"]
        if index is None or self._built[index]:
            return
        self._built[index] = True
        from .. import reporting
        from ._busy import into_widget

        # Built in a comm handler (no cell to show a line in): the placeholder
        # shows how far a slow build is (hundreds of layers, a feature scan).
        previous = reporting.set_factory(into_widget(self._tab_widgets[index]))
        try:
            widget = self._builders[index][1]()
        finally:
            reporting.set_factory(previous)
        self._tab_widgets[index] = widget
        children = list(self.widget.children)
        children[index] = widget
        self.widget.children = tuple(children)

    def refresh(self) -> None:
        """Redraws the summary and asks every tab to refresh (after a fit, a freeze…)."""
        if self.widget is None:
            return
        self._show_summary(self.summary_html())
        for widget, built in zip(self._tab_widgets[1:], self._built[1:], strict=True):
            if not built:
                continue
            refresh = getattr(widget, "refresh", None)
            if callable(refresh):
                refresh()

    def _show_summary(self, summary: str) -> None:
        self._summary.value = summary
        if summary != self._shown_summary:
            self._shown_summary = summary
            self.fallback.changed()

    def check_changed(self) -> None:
        """Redraws the summary if the model changed outside kernelkit's calls.

        Called when each cell ends (``kernelkit.freeze`` in a later cell, a
        ``layer.trainable = False``): the summary, live and saved, follows.
        """
        if self.widget is not None:
            self._show_summary(self.summary_html())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        widget = self.build()
        summary = self.summary_html()
        self._shown_summary = summary
        return {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": widget.model_id,
            },
            "text/html": summary,
            "text/plain": repr(self),
        }

    def _ipython_display_(self) -> None:
        # Through a display handle (IPython calls this for display() and for a
        # cell's last value), so that the saved fallback can follow the model.
        self.fallback.display()
        watch(self)
