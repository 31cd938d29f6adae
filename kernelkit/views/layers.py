"""The model card's Layers tab: trainable toggles, per layer.

A row per layer (nested models are followed by their own layers, indented,
with paths such as ``base/conv2``): a trainable toggle, the type, the output
shape, the parameter count and a "freeze up to here" button, plus "freeze
all" / "unfreeze all", the BatchNormalization policy of "freeze up to here"
and the trainable / non-trainable totals. When the model has learning-rate
groups (``kernelkit.layer_lrs``) an lr column names each layer's group and
rate. Rows note where BatchNormalization runs in inference mode (frozen) and
where a trainable one updates its statistics although its model is called
with ``training=False``. Clicks do not touch the model: they become
``kernelkit.intents.SetTrainable`` and ``FreezeTo`` intents handed to
``submit``. When ``submit`` returns False (a fit is running, the
session queued the intent), the rows show the change as pending until
:meth:`LayersPanel.refresh` is called. Without a session, the default submit
applies intents at once through ``kernelkit.operations.apply_intent`` (which
recompiles), the same path as the session's.

The panel has a deterministic ``text/plain`` repr and a static HTML table
(:meth:`LayersPanel.static_html`, also in its display bundle), so a saved
notebook shows the layers without a kernel.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from .. import operations
from ..intents import FreezeTo, Intent, SetTrainable
from ._static import StaticFallback

_BN_NOTE = "frozen BatchNormalization: also runs in inference mode (uses its moving statistics)"
_WIDTHS = {
    "toggle": "110px",
    "name": "240px",
    "type": "160px",
    "shape": "130px",
    "params": "80px",
    "lr": "130px",
}
#: The BatchNormalization policies of "freeze up to here" (kernelkit.freeze_to's ``bn``).
BN_POLICIES = (
    ("BN: inference mode where frozen (Keras)", "frozen"),
    ("BN: train in frozen layers too (fastai train_bn)", "train"),
    ("BN: inference mode everywhere", "inference"),
)


def _fmt(n: int) -> str:
    return f"{n:,}"


def _state_word(trainable: bool) -> str:
    return "trainable" if trainable else "frozen"


class LayerRow(W.HBox):
    """One layer: ``toggle`` (its ``value`` is the trainable flag), labels, buttons."""

    def __init__(self, info: Any, on_toggle: Callable, on_up_to: Callable) -> None:
        self.path: str = info.path
        self.info = info
        self.toggle = W.Checkbox(
            value=bool(info.trainable),
            description="trainable",
            indent=False,
            layout=W.Layout(width=_WIDTHS["toggle"]),
        )
        indent = "&nbsp;" * 4 * info.depth
        self.name = W.HTML(
            f"{indent}<code>{html.escape(info.path)}</code>",
            layout=W.Layout(width=_WIDTHS["name"]),
        )
        self.type = W.HTML(html.escape(info.type), layout=W.Layout(width=_WIDTHS["type"]))
        self.shape = W.HTML(html.escape(info.output_shape), layout=W.Layout(width=_WIDTHS["shape"]))
        self.params = W.HTML(
            f"<div style='text-align:right'>{_fmt(info.params)}</div>",
            layout=W.Layout(width=_WIDTHS["params"]),
        )
        self.lr = W.HTML("", layout=W.Layout(width=_WIDTHS["lr"], display="none"))
        self.up_to = W.Button(
            description="freeze up to here",
            tooltip=f"freeze every layer before and including {info.path}; "
            "leave the rest trainable (kernelkit.freeze_to, with the BN policy above)",
            layout=W.Layout(width="140px"),
        )
        self.note = W.HTML("")
        children: list[W.Widget] = [
            self.toggle,
            self.name,
            self.type,
            self.shape,
            self.params,
            self.lr,
        ]
        self.expand: W.ToggleButton | None = None
        if info.nested:
            self.expand = W.ToggleButton(
                value=info.nested <= 30,
                description="",
                icon="caret-down",
                tooltip="show / hide the layers inside",
                layout=W.Layout(width="32px"),
            )
            children.append(self.expand)
        children += [self.up_to, self.note]
        super().__init__(children)
        self.toggle.observe(lambda change: on_toggle(self, change["new"]), names="value")
        self.up_to.on_click(lambda _button: on_up_to(self))


class LayersPanel(StaticFallback, W.VBox):
    """Trainable toggles for every layer of a model.

    Args:
        model: a ``keras.Model``.
        submit: where intents go; returns True when applied now, False when
            queued (a fit is running). Default: apply at once
            (``kernelkit.operations.submitter``).

    Attributes:
        rows: ``{path: LayerRow}``; ``rows[path].toggle.value`` is the flag.
        pending: ``{path: flag}`` requested but not applied yet.

    Example:
        >>> panel = LayersPanel(model)  # doctest: +SKIP
        >>> panel.rows["base"].toggle.value = False  # as a click does  # doctest: +SKIP

    """

    def __init__(self, model: Any, submit: Callable[[Intent], bool] | None = None) -> None:
        self._model = model
        self._submit = submit if submit is not None else operations.submitter(model)
        self._syncing = False
        self.pending: dict[str, bool] = {}
        self.error = ""
        self.totals = W.HTML()
        self.freeze_all = W.Button(description="freeze all", icon="lock")
        self.unfreeze_all = W.Button(description="unfreeze all", icon="unlock")
        self.freeze_all.on_click(lambda _b: self._send(SetTrainable((), False), self._all(False)))
        self.unfreeze_all.on_click(lambda _b: self._send(SetTrainable((), True), self._all(True)))
        self.bn_policy = W.Dropdown(
            options=BN_POLICIES,
            value="frozen",
            description="",
            tooltip="What 'freeze up to here' does with BatchNormalization layers",
            layout=W.Layout(width="330px"),
        )
        self.status = W.HTML("")
        self.rows: dict[str, LayerRow] = {}
        self._rows_box = W.VBox()
        super().__init__(
            [
                self.totals,
                W.HBox([self.freeze_all, self.unfreeze_all, self.bn_policy]),
                self._rows_box,
                self.status,
            ]
        )
        self.refresh()

    # -- state --------------------------------------------------------------

    def _describe(self) -> Any:
        from ..finetune import bn_notes, lr_groups
        from ..freezing import describe

        summary = describe(self._model)
        # Plain data from the core: each layer's lr group and the BN notes it adds.
        self.lr_labels: dict[str, str] = lr_groups(self._model)
        self.bn_notes: dict[str, str] = bn_notes(self._model)
        return summary

    def refresh(self) -> None:
        """Reads the model again and drops pending marks (the session calls it after a fit)."""
        self.summary = self._describe()
        self.pending = {}
        infos = self.summary.rows
        if [i.path for i in infos] != list(self.rows):
            self._build(infos)
        with self.hold_sync():
            self._syncing = True
            try:
                for info in infos:
                    row = self.rows[info.path]
                    row.info = info
                    row.toggle.value = self._flag(info.path)
            finally:
                self._syncing = False
            self._render()

    def _build(self, infos: Any) -> None:
        from ..reporting import task

        # A few hundred rows take seconds (each widget opens a comm): say how far it is.
        rows: dict[str, LayerRow] = {}
        with task(f"layers of {self._model.name}", len(infos), "layers") as progress:
            for done, info in enumerate(infos):
                progress.update(done)
                rows[info.path] = LayerRow(info, self._toggled, self._up_to)
        self.rows = rows
        for row in self.rows.values():
            if row.expand is not None:
                row.expand.observe(lambda _c, r=row: self._render(), names="value")
        self._rows_box.children = tuple(self.rows.values())

    def _flag(self, path: str) -> bool:
        """The flag shown: pending if any; a nested model with every layer frozen shows frozen."""
        if path in self.pending:
            return self.pending[path]
        info = self.rows[path].info
        return bool(info.trainable) and not (info.nested and info.frozen_inside == info.nested)

    def _visible(self, path: str) -> bool:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = self.rows.get("/".join(parts[:i]))
            if parent is not None and parent.expand is not None and not parent.expand.value:
                return False
        return True

    def _note(self, info: Any) -> str:
        path = info.path
        flag = self._flag(path)
        notes = []
        if path in self.pending:
            notes.append(f"pending: {_state_word(flag)} when the running fit ends")
        if info.nested:
            inside = [p for p in self.rows if p.startswith(path + "/")]
            frozen = sum(1 for p in inside if not self._flag(p))
            if frozen and frozen < len(inside):
                notes.append(f"{frozen} of {len(inside)} layers inside frozen")
        if info.batch_norm and not flag:
            notes.append(_BN_NOTE)
        elif info.batch_norm and path in self.bn_notes and path not in self.pending:
            notes.append(self.bn_notes[path])
        return "; ".join(notes)

    def _render(self) -> None:
        s = self.summary
        text = (
            f"<b>{html.escape(s.model)}</b>: trainable params <b>{_fmt(s.trainable_params)}</b>"
            f" · non-trainable params <b>{_fmt(s.non_trainable_params)}</b>"
        )
        if self.pending:
            text += " · <i>changes pending until the running fit ends</i>"
        if not s.compiled:
            text += " · not compiled yet"
        self.totals.value = text
        for path, row in self.rows.items():
            label = self.lr_labels.get(path, "")
            row.lr.value = f"<span style='color:#555'>{html.escape(label)}</span>"
            row.lr.layout.display = None if self.lr_labels else "none"
            note = self._note(row.info)
            color = "#b26b00" if path in self.pending else "#666"
            row.note.value = (
                f"<span style='color:{color}'>{html.escape(note)}</span>" if note else ""
            )
            row.layout.display = None if self._visible(path) else "none"
        self.status.value = (
            f"<span style='color:#d62728'>{html.escape(self.error)}</span>" if self.error else ""
        )
        self.fallback_changed()

    # -- clicks -------------------------------------------------------------

    def _all(self, flag: bool) -> dict[str, bool]:
        return dict.fromkeys(self.rows, flag)

    def _toggled(self, row: LayerRow, value: bool) -> None:
        if self._syncing:
            return
        expected = {row.path: bool(value)}
        expected.update({p: bool(value) for p in self.rows if p.startswith(row.path + "/")})
        self._send(SetTrainable((row.path,), bool(value)), expected)

    def _up_to(self, row: LayerRow) -> None:
        # What the rows will show once the session applies it (kernelkit.freeze_to): the
        # layers up to here frozen, the rest trainable, BN as the policy says.
        policy = self.bn_policy.value
        paths = list(self.rows)
        leaves = [p for p in paths if not self.rows[p].info.nested]
        inside = [p for p in leaves if p == row.path or p.startswith(row.path + "/")]
        cut = leaves.index(inside[-1]) + 1 if inside else 0
        expected: dict[str, bool] = {}
        for i, path in enumerate(leaves):
            flag = i >= cut
            if self.rows[path].info.batch_norm:
                flag = {"train": True, "inference": False}.get(policy, flag)
            expected[path] = flag
        for path in paths:
            if self.rows[path].info.nested:
                expected[path] = any(
                    expected[p] for p in leaves if p.startswith(path + "/")
                )
        self._send(FreezeTo(row.path, bn=policy), expected)

    def _send(self, intent: SetTrainable | FreezeTo, expected: dict[str, bool]) -> None:
        self.error = ""
        try:
            applied = self._submit(intent)
        except Exception as err:
            self.error = f"not applied: {err}"
            self.refresh()
            self.error = ""
            return
        if applied:
            self.refresh()
            return
        self.pending.update(expected)
        with self.hold_sync():
            self._syncing = True
            try:
                for path, flag in expected.items():
                    self.rows[path].toggle.value = flag
            finally:
                self._syncing = False
            self._render()

    # -- static output ------------------------------------------------------

    def __repr__(self) -> str:
        s = self.summary
        lines = [
            f"LayersPanel({s.model!r}): trainable params {_fmt(s.trainable_params)}"
            f" · non-trainable params {_fmt(s.non_trainable_params)}"
            + (" · changes pending" if self.pending else "")
        ]
        width = max([len(i.path) + 2 * i.depth for i in s.rows] + [5])
        type_width = max([len(i.type) for i in s.rows] + [4])
        shape_width = max([len(i.output_shape) for i in s.rows] + [5])
        lr_width = max([len(v) for v in self.lr_labels.values()] + [2])
        for info in s.rows:
            mark = "x" if self._flag(info.path) else " "
            name = "  " * info.depth + info.path
            note = self._note(info)
            line = (
                f"  [{mark}] {name:<{width}}  {info.type:<{type_width}}  "
                f"{info.output_shape:<{shape_width}}  {_fmt(info.params):>9}"
            )
            if self.lr_labels:  # the lr column only where groups exist
                line += f"  {self.lr_labels.get(info.path, ''):<{lr_width}}"
            lines.append((line + ("  " + note if note else "")).rstrip())
        return "\n".join(lines)

    def static_html(self) -> str:
        """The layers as a static HTML table (readable in a saved notebook)."""
        s = self.summary
        head = (
            f"<div><b>{html.escape(s.model)}</b>: trainable params "
            f"<b>{_fmt(s.trainable_params)}</b> · non-trainable params "
            f"<b>{_fmt(s.non_trainable_params)}</b>"
            + (" · <i>changes pending</i>" if self.pending else "")
            + "</div>"
        )
        cells = "".join(
            f"<th style='text-align:{a}'>{h}</th>"
            for h, a in [
                ("trainable", "center"),
                ("layer", "left"),
                ("type", "left"),
                ("output shape", "left"),
                ("params", "right"),
                *([("lr group", "left")] if self.lr_labels else []),
                ("", "left"),
            ]
        )
        body = []
        for info in s.rows:
            flag = self._flag(info.path)
            indent = "&nbsp;" * 4 * info.depth
            body.append(
                "<tr>"
                f"<td style='text-align:center'>{'✓' if flag else '—'}</td>"
                f"<td style='text-align:left'>{indent}<code>{html.escape(info.path)}</code></td>"
                f"<td style='text-align:left'>{html.escape(info.type)}</td>"
                f"<td style='text-align:left'>{html.escape(info.output_shape)}</td>"
                f"<td style='text-align:right'>{_fmt(info.params)}</td>"
                + (
                    f"<td style='text-align:left'>"
                    f"{html.escape(self.lr_labels.get(info.path, ''))}</td>"
                    if self.lr_labels
                    else ""
                )
                + f"<td style='text-align:left'>{html.escape(self._note(info))}</td>"
                "</tr>"
            )
        return (
            f"{head}<table class='kernelkit-layers'><thead><tr>{cells}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )


def tab(model: Any, submit: Callable[[Intent], bool] | None) -> W.Widget | None:
    """The Layers tab of the model card, or None when it does not apply.

    Args:
        model: the registered model.
        submit: the session's submit (None: apply at once).

    Returns:
        A :class:`LayersPanel`, or None for something that is not a
        ``keras.Model`` or has no layers.

    """
    from ..freezing import describe

    try:
        summary = describe(model)
    except TypeError:
        return None
    if not summary.rows:
        return None
    return LayersPanel(model, submit)
