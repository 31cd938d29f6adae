"""The model card's States tab: stateful RNN layers, their state norms, reset controls.

The panel holds no Keras logic: it reads ``rnn_state.state_summary`` and
sends intents (``ResetStates``, ``SetAutoReset``) to the ``submit`` callable
the session provides. Without a session, ``submit`` defaults to
``kernelkit.operations.submitter``, which resets at once.
"""

from __future__ import annotations

import functools
import html
from typing import Any

import ipywidgets as w

from .. import intents, operations, rnn_state
from ._static import StaticFallback

#: The auto-reset selector's (label, value) pairs; values are ``SetAutoReset.every``.
AUTO_RESET_OPTIONS = (("never", "never"), ("each epoch", "epoch"), ("each fit", "fit"))
_LABELS = dict((value, label) for label, value in AUTO_RESET_OPTIONS)


def tab(model: Any, submit: intents.Submit | None = None) -> StatesPanel | None:
    """The card's States tab for ``model``.

    Args:
        model: a Keras model.
        submit: the session's intent sink; None applies intents at once.

    Returns:
        A ``StatesPanel``, or None when the model has no stateful layer.

    Example:
        >>> tab(model, session.submit)  # doctest: +SKIP

    """
    if not rnn_state.stateful_layers(model):
        return None
    return StatesPanel(model, submit)


def _norms_html(rows: list[rnn_state.StateRow]) -> str:
    if rows and rows[0].shape is None:
        return "<span style='color:#666'>not built yet</span>"
    return " &nbsp; ".join(
        f"{html.escape(row.state)} <code>{rnn_state.format_shape(row.shape)}</code> "
        f"norm <b>{rnn_state.format_norm(row.norm)}</b>"
        for row in rows
    )


class StatesPanel(StaticFallback, w.VBox):
    """Per stateful layer: its state norms and a Reset button; Reset all; auto-reset policy.

    Call ``refresh()`` after anything that moves the state (fit, predict,
    train_on_batch): the norms are read then, not live.

    Args:
        model: a Keras model with stateful recurrent layers.
        submit: where intents go (``True`` = applied now, ``False`` =
            queued until the running fit ends). None: ``operations.submitter``
            on ``model``, i.e. reset at once; the auto-reset choice is then only
            shown (pass ``kernelkit.ResetStates(every=panel.auto_reset)`` to fit).
        auto_reset: the policy to show initially ("never", "epoch", "fit");
            setting it here sends no intent.

    Attributes:
        reset_buttons: ``{layer path: Button}``.
        reset_all_button: resets every stateful layer.
        auto_reset_selector: ToggleButtons whose value is "never", "epoch" or "fit".
        status: one line saying what the last action did.

    Example:
        >>> panel = StatesPanel(model)  # doctest: +SKIP
        >>> model.fit(x, y, batch_size=32, shuffle=False,
        ...           callbacks=[kernelkit.ResetStates(every=panel.auto_reset)])  # doctest: +SKIP
        >>> panel.refresh()  # doctest: +SKIP

    """

    def __init__(
        self, model: Any, submit: intents.Submit | None = None, *, auto_reset: str = "never"
    ) -> None:
        if auto_reset not in _LABELS:
            raise ValueError(f"auto_reset must be one of {list(_LABELS)}, got {auto_reset!r}.")
        super().__init__()
        self._model = model
        self._standalone = submit is None
        self._submit: intents.Submit = submit or operations.submitter(model)
        self._summary = rnn_state.state_summary(model)
        if not self._summary.layers:
            raise ValueError(f"model {model.name!r} has no stateful recurrent layer to show.")

        self.header = w.HTML()
        self._norms: dict[str, w.HTML] = {}
        self.reset_buttons: dict[str, w.Button] = {}
        rows = []
        for path in self._summary.layers:
            layer = next(row.layer for row in self._summary if row.path == path)
            button = w.Button(
                description="Reset",
                icon="undo",
                tooltip=f"Zero the state of {path}",
                layout=w.Layout(width="90px"),
            )
            button.on_click(functools.partial(self._clicked, (path,)))
            self.reset_buttons[path] = button
            self._norms[path] = w.HTML()
            name = w.HTML(
                f"<b>{html.escape(path)}</b> <span style='color:#666'>{html.escape(layer)}</span>",
                layout=w.Layout(min_width="160px"),
            )
            rows.append(w.HBox([name, self._norms[path], button]))
        self.reset_all_button = w.Button(
            description="Reset all",
            icon="undo",
            button_style="warning",
            tooltip="Zero the state of every stateful layer",
        )
        self.reset_all_button.on_click(functools.partial(self._clicked, None))
        self.auto_reset_selector = w.ToggleButtons(
            options=AUTO_RESET_OPTIONS,
            value=auto_reset,
            description="Auto-reset",
            tooltips=[
                "Keep the state across fits",
                "Zero the state at each epoch's start",
                "Zero the state once when each fit starts",
            ],
            style={"button_width": "90px"},
        )
        self.auto_reset_selector.observe(self._policy_changed, names="value")
        self.status = w.HTML()
        self.children = [
            self.header,
            *rows,
            w.HBox([self.reset_all_button]),
            self.auto_reset_selector,
            self.status,
        ]
        if not self._standalone:
            # With a session, clicks during a fit reach submit (which queues them).
            from ..transport.subshell import route_widget

            for widget in (
                *self.reset_buttons.values(),
                self.reset_all_button,
                self.auto_reset_selector,
            ):
                route_widget(widget)
        self._draw()

    # ------------------------------------------------------------ reading

    @property
    def auto_reset(self) -> str:
        """The selected auto-reset policy: "never", "epoch" or "fit"."""
        return str(self.auto_reset_selector.value)

    @property
    def summary(self) -> rnn_state.StateSummary:
        """The state summary as of the last ``refresh()``."""
        return self._summary

    def refresh(self) -> None:
        """Re-reads the state norms (call after fit, predict or train_on_batch)."""
        self._summary = rnn_state.state_summary(self._model)
        self._draw()

    def _draw(self) -> None:
        with self.hold_sync():
            self.header.value = f"<b>{html.escape(self._summary.title())}</b>"
            for path, widget in self._norms.items():
                widget.value = _norms_html([r for r in self._summary if r.path == path])
        self.fallback_changed()

    # ------------------------------------------------------------ actions

    def _submit_intent(self, intent: intents.Intent) -> bool | None:
        """Submits; returns None (and says why in the status line) on failure."""
        try:
            return bool(self._submit(intent))
        except Exception as err:  # a click handler has nowhere else to report
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return None

    def _clicked(self, layers: tuple[str, ...] | None, _button: Any = None) -> None:
        what = "every stateful layer" if layers is None else ", ".join(layers)
        applied = self._submit_intent(intents.ResetStates(layers=layers))
        if applied is None:
            return
        if applied:
            self.refresh()
            self.status.value = f"Reset {html.escape(what)}."
        else:
            self.status.value = f"Reset of {html.escape(what)} queued: it applies after this fit."

    def _policy_changed(self, change: dict[str, Any]) -> None:
        every = str(change["new"])
        applied = self._submit_intent(intents.SetAutoReset(every=every))  # type: ignore[arg-type]
        if applied is None:
            return
        label = _LABELS[every]
        self.fallback_changed()  # the saved text names the policy
        if self._standalone:
            self.status.value = (
                f"Auto-reset: {label}. No session applies it here: pass "
                f"<code>callbacks=[kernelkit.ResetStates(every={every!r})]</code> to fit."
            )
        elif applied:
            self.status.value = f"Auto-reset: {label}."
        else:
            self.status.value = f"Auto-reset: {label}, from the next fit."

    # ------------------------------------------------------------ static output

    def __repr__(self) -> str:
        lines = [
            f"StatesPanel: {self._summary.title()[len('States of ') :]}; "
            f"auto-reset {_LABELS[self.auto_reset]}"
        ]
        for path in self._summary.layers:
            rows = [r for r in self._summary if r.path == path]
            parts = [
                f"{r.state} {rnn_state.format_shape(r.shape)} norm {rnn_state.format_norm(r.norm)}"
                for r in rows
            ]
            states = "; ".join(parts) if rows[0].shape is not None else "not built yet"
            lines.append(f"  {path} ({rows[0].layer}): {states}")
        return "\n".join(lines)

    def static_html(self) -> str:
        """A static HTML table of the states and the policy (reads without a kernel)."""
        return (
            self._summary._repr_html_()
            + f"<p style='font-size:12px'>Auto-reset: {_LABELS[self.auto_reset]}</p>"
        )

