"""The model card's Layers tab: trainable toggles, per layer, a page at a time.

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

The rows are shown a page at a time (:data:`PAGE_SIZE`), with a filter box
(a substring, or a glob such as ``*conv*``, of the path or the type) and the
nested models collapsed unless the whole model fits on one page. A page is a
fixed pool of row widgets whose values are rewritten, sharing their Layout
and Style models: every widget is a comm model whose state a saved notebook
stores, so the widget count must not grow with the depth of the model
(issue 18: NASNetMobile's 770 layers made 20,000 models, 14 MB of state).

The panel has a deterministic ``text/plain`` repr and a static HTML table
(:meth:`LayersPanel.static_html`, also in its display bundle) of every
layer, so a saved notebook shows the layers without a kernel.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
from ipywidgets.widgets import widget_bool, widget_string

from .. import operations
from ..intents import FreezeTo, Intent, SetTrainable
from ._static import StaticFallback

_BN_NOTE = "frozen BatchNormalization: also runs in inference mode (uses its moving statistics)"
#: Rows on a page: what bounds the widgets (and the saved state) of the tab.
PAGE_SIZE = 20
#: Widths of the columns folded into a row's label (one HTML widget).
_COLUMNS = (("name", 240), ("type", 160), ("shape", 130), ("params", 80))
#: The labels' cells, styled once per panel rather than inline in every row's state.
_CSS = (
    "<style>.kk-layer-cells span{display:inline-block;overflow:hidden;white-space:nowrap;"
    "text-overflow:ellipsis;vertical-align:middle}"
    + "".join(f".kk-layer-cells .kk-{name}{{width:{width}px}}" for name, width in _COLUMNS)
    + ".kk-layer-cells .kk-params{text-align:right;margin-right:12px}"
    ".kk-layer-cells .kk-notes{display:inline;white-space:normal}</style>"
)
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


def matches(info: Any, text: str) -> bool:
    """Whether a layer passes the filter box: a substring or a glob of its path or type.

    Args:
        info: a ``kernelkit.freezing.LayerInfo``.
        text: what the box holds; case does not matter; empty passes everything.

    Returns:
        True when ``text`` is in the path or the type (a glob with ``*``,
        ``?`` or ``[`` must match one of them whole).

    Example:
        >>> from kernelkit.freezing import LayerInfo
        >>> matches(LayerInfo("conv1_bn", "conv1_bn", "BatchNormalization", 0, "?", 4, True), "bn")
        True
    """
    text = text.strip().lower()
    fields = (info.path.lower(), info.type.lower())
    if any(c in text for c in "*?["):
        return any(fnmatch.fnmatchcase(f, text) for f in fields)
    return any(text in f for f in fields)


class _Shared:
    """The Layout and Style models every row of one panel points at.

    A widget made without them gets its own (two more comm models each);
    the rows' columns have the same width, so one of each serves them all.
    """

    def __init__(self) -> None:
        self.row = W.Layout(align_items="center")
        self.toggle = W.Layout(width="110px")
        self.label = W.Layout()
        self.lr = W.Layout(width="130px", display="none")  # shown when lr groups exist
        self.expand = W.Layout(width="32px")
        self.up_to = W.Layout(width="140px")
        # ipywidgets exports ButtonStyle only; the others live beside their widgets.
        self.checkbox = widget_bool.CheckboxStyle()
        self.html = widget_string.HTMLStyle()
        self.button = W.ButtonStyle()
        self.toggle_button = widget_bool.ToggleButtonStyle()
        self.auto = W.Layout()  # the panel's own labels and boxes


class LayerRow(W.HBox):
    """One row of the page, rewritten to show whichever layer is at its place.

    Attributes:
        path: the layer shown ("" before the first).
        info: its ``kernelkit.freezing.LayerInfo``.
        toggle: a Checkbox; its ``value`` is the trainable flag (a click sends it).
        up_to: the "freeze up to here" button.
        lr: the lr group of the layer (hidden when the model has none).
        expand: for a nested model, whether its layers are listed (else None).
        label: the path, type, output shape, parameters and notes: one HTML,
            as each widget more per row is saved page after page.
        note: the same HTML as ``label``; its last cell says what is worth
            knowing (pending, BatchNormalization, partly frozen).
    """

    def __init__(
        self,
        shared: _Shared,
        on_toggle: Callable[[LayerRow, bool], None],
        on_up_to: Callable[[LayerRow], None],
        on_expand: Callable[[LayerRow, bool], None],
    ) -> None:
        self.path = ""
        self.info: Any = None
        self._shared = shared
        self._on_expand = on_expand
        self.toggle = W.Checkbox(
            value=True,
            description="trainable",
            indent=False,
            layout=shared.toggle,
            style=shared.checkbox,
        )
        self.label = W.HTML(layout=shared.label, style=shared.html)
        self.lr = W.HTML(layout=shared.lr, style=shared.html)
        self.up_to = W.Button(
            description="freeze up to here",
            tooltip="freeze this layer and every one before it; the rest trainable "
            "(kernelkit.freeze_to, with the BN policy above)",
            layout=shared.up_to,
            style=shared.button,
        )
        self.note = self.label
        self.expand: W.ToggleButton | None = None
        self._expand_button: W.ToggleButton | None = None  # made when a nested model lands here
        super().__init__(self._children(), layout=shared.row)
        self.toggle.observe(lambda change: on_toggle(self, change["new"]), names="value")
        self.up_to.on_click(lambda _button: on_up_to(self))

    def _children(self) -> list[W.Widget]:
        middle = [self.expand] if self.expand is not None else []
        return [self.toggle, self.up_to, self.lr, *middle, self.label]

    def show(self, info: Any, flag: bool, expanded: bool, note: str, lr: str) -> None:
        """Rewrites the row's widgets to show ``info`` (only what changed is sent)."""
        self.path = info.path
        self.info = info
        self.toggle.value = flag
        indent = "&nbsp;" * 4 * info.depth
        cells = (
            f"{indent}<code title='{html.escape(info.path)}'>{html.escape(info.path)}</code>",
            html.escape(info.type),
            html.escape(info.output_shape),
            _fmt(info.params),
        )
        self.label.value = (
            "<div class='kk-layer-cells'>"
            + "".join(
                f"<span class='kk-{name}'>{cell}</span>"
                for (name, _), cell in zip(_COLUMNS, cells, strict=True)
            )
            + (f"<span class='kk-notes'>{note}</span>" if note else "")
            + "</div>"
        )
        self.lr.value = lr
        expand = None
        if info.nested:
            if self._expand_button is None:
                self._expand_button = W.ToggleButton(
                    value=expanded,
                    icon="caret-down",
                    tooltip="show / hide the layers inside",
                    layout=self._shared.expand,
                    style=self._shared.toggle_button,
                )
                self._expand_button.observe(
                    lambda change: self._on_expand(self, change["new"]), names="value"
                )
            self._expand_button.value = expanded
            self._expand_button.icon = "caret-down" if expanded else "caret-right"
            expand = self._expand_button
        if expand is not self.expand:
            self.expand = expand
            self.children = tuple(self._children())


class LayersPanel(StaticFallback, W.VBox):
    """Trainable toggles for every layer of a model, a page of rows at a time.

    Args:
        model: a ``keras.Model``.
        submit: where intents go; returns True when applied now, False when
            queued (a fit is running). Default: apply at once
            (``kernelkit.operations.submitter``).
        page_size: rows on a page.

    Attributes:
        rows: ``{path: LayerRow}`` of the rows shown now (the page, after the
            filter and the collapsed models); ``rows[path].toggle.value`` is the flag.
        pending: ``{path: flag}`` requested but not applied yet.
        filter: the filter box (a substring or glob of a path or type).
        page: the page shown, from 0.

    Example:
        >>> panel = LayersPanel(model)  # doctest: +SKIP
        >>> panel.rows["base"].toggle.value = False  # as a click does  # doctest: +SKIP

    """

    def __init__(
        self,
        model: Any,
        submit: Callable[[Intent], bool] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._model = model
        self._submit = submit if submit is not None else operations.submitter(model)
        self._syncing = False
        self.page_size = max(1, int(page_size))
        self.page = 0
        self.pending: dict[str, bool] = {}
        self.error = ""
        self.infos: dict[str, Any] = {}
        self.collapsed: set[str] = set()
        self._shared = _Shared()
        self._pool: list[LayerRow] = []
        self.rows: dict[str, LayerRow] = {}
        shared = self._shared
        plain = {"layout": shared.auto, "style": shared.html}
        self.totals = W.HTML(**plain)
        button = {"layout": W.Layout(width="140px"), "style": shared.button}
        self.freeze_all = W.Button(description="freeze all", icon="lock", **button)
        self.unfreeze_all = W.Button(description="unfreeze all", icon="unlock", **button)
        self.freeze_all.on_click(lambda _b: self._send(SetTrainable((), False), self._all(False)))
        self.unfreeze_all.on_click(lambda _b: self._send(SetTrainable((), True), self._all(True)))
        self.bn_policy = W.Dropdown(
            options=BN_POLICIES,
            value="frozen",
            description="",
            tooltip="What 'freeze up to here' does with BatchNormalization layers",
            layout=W.Layout(width="330px"),
        )
        # Applied on Enter or leaving the box: a page rewrite per keystroke would queue up.
        self.filter = W.Text(
            placeholder="filter: path or type, e.g. bn or *conv* (Enter)",
            continuous_update=False,
            layout=W.Layout(width="330px"),
        )
        self.filter.observe(lambda _c: self._go(0), names="value")
        narrow = {"layout": W.Layout(width="36px"), "style": shared.button}
        self.prev = W.Button(icon="chevron-left", tooltip="previous page", **narrow)
        self.next = W.Button(icon="chevron-right", tooltip="next page", **narrow)
        self.prev.on_click(lambda _b: self._go(self.page - 1))
        self.next.on_click(lambda _b: self._go(self.page + 1))
        self.page_label = W.HTML(**plain)
        self.status = W.HTML("", **plain)
        self._rows_box = W.VBox(layout=shared.auto)
        box = {"layout": shared.row}
        super().__init__(
            [
                W.HTML(_CSS, **plain),
                self.totals,
                W.HBox([self.freeze_all, self.unfreeze_all, self.bn_policy], **box),
                W.HBox([self.filter, self.prev, self.page_label, self.next], **box),
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
        infos = {info.path: info for info in self.summary.rows}
        if list(infos) != list(self.infos):
            self._index(infos)
            # A new model (or new layers): nested models start collapsed unless all fits.
            nested = {path for path, info in infos.items() if info.nested}
            self.collapsed = nested if len(infos) > self.page_size else set()
            self.page = 0
        self.infos = infos
        self._render()

    def _index(self, infos: dict[str, Any]) -> None:
        """Each layer's enclosing models and each nested model's layers, walked once."""
        from ..reporting import task

        self._parents: dict[str, tuple[str, ...]] = {}
        self._within: dict[str, list[str]] = {}
        # Built in the card's comm handler: a model of thousands of layers says how far it is.
        with task(f"layers of {self._model.name}", len(infos), "layers") as progress:
            for done, path in enumerate(infos):
                progress.update(done)
                parts = path.split("/")
                parents = tuple(
                    p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in infos
                )
                self._parents[path] = parents
                for parent in parents:
                    self._within.setdefault(parent, []).append(path)

    def _flag(self, path: str) -> bool:
        """The flag shown: pending if any; a nested model with every layer frozen shows frozen."""
        if path in self.pending:
            return self.pending[path]
        info = self.infos[path]
        return bool(info.trainable) and not (info.nested and info.frozen_inside == info.nested)

    def _inside(self, path: str) -> list[str]:
        return self._within.get(path, [])

    def listed(self) -> list[Any]:
        """The layers the filter and the collapsed models leave, in model order (all pages).

        A filter searches inside collapsed models too: a match is listed by its full path.
        """
        text = self.filter.value.strip()
        if text:
            return [info for info in self.infos.values() if matches(info, text)]
        collapsed = self.collapsed
        return [
            info
            for path, info in self.infos.items()
            if not any(parent in collapsed for parent in self._parents[path])
        ]

    def _note(self, info: Any) -> str:
        path = info.path
        flag = self._flag(path)
        notes = []
        if path in self.pending:
            notes.append(f"pending: {_state_word(flag)} when the running fit ends")
        if info.nested:
            inside = self._inside(path)
            frozen = sum(1 for p in inside if not self._flag(p))
            if frozen and frozen < len(inside):
                notes.append(f"{frozen} of {len(inside)} layers inside frozen")
        if info.batch_norm and not flag:
            notes.append(_BN_NOTE)
        elif info.batch_norm and path in self.bn_notes and path not in self.pending:
            notes.append(self.bn_notes[path])
        return "; ".join(notes)

    def _row(self, index: int) -> LayerRow:
        # The pool only grows up to a page: rows are reused, page after page.
        while len(self._pool) <= index:
            self._pool.append(LayerRow(self._shared, self._toggled, self._up_to, self._expanded))
        return self._pool[index]

    def _render(self, navigated: bool = False) -> None:
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
        listed = self.listed()
        pages = max(1, -(-len(listed) // self.page_size))
        self.page = min(max(self.page, 0), pages - 1)
        first = self.page * self.page_size
        shown = listed[first : first + self.page_size]
        self._shared.lr.display = None if self.lr_labels else "none"
        self._syncing = True
        try:
            for index, info in enumerate(shown):
                note = self._note(info)
                color = "#b26b00" if info.path in self.pending else "#666"
                label = self.lr_labels.get(info.path, "")
                self._row(index).show(
                    info,
                    self._flag(info.path),
                    info.path not in self.collapsed,
                    f"<span style='color:{color}'>{html.escape(note)}</span>" if note else "",
                    f"<span style='color:#555'>{html.escape(label)}</span>" if label else "",
                )
        finally:
            self._syncing = False
        rows = tuple(self._pool[: len(shown)])
        if rows != self._rows_box.children:
            self._rows_box.children = rows
        self.rows = {row.path: row for row in rows}
        where = f"rows {first + 1}–{first + len(shown)}" if shown else "no rows"
        hidden = len(self.infos) - len(listed)
        self.page_label.value = (
            f"{where} of {len(listed)}"
            + (f" ({hidden} filtered out or collapsed)" if hidden else "")
            + (f" · page {self.page + 1} of {pages}" if pages > 1 else "")
        )
        self.prev.disabled = self.page == 0
        self.next.disabled = self.page >= pages - 1
        self.status.value = (
            f"<span style='color:#d62728'>{html.escape(self.error)}</span>" if self.error else ""
        )
        if not navigated:  # a page or a filter leaves the saved table as it was
            self.fallback_changed()

    # -- clicks -------------------------------------------------------------

    def _go(self, page: int) -> None:
        self.page = page
        self._render(navigated=True)

    def _expanded(self, row: LayerRow, value: bool) -> None:
        if self._syncing:
            return
        if value:
            self.collapsed.discard(row.path)
        else:
            self.collapsed.add(row.path)
        self._render(navigated=True)

    def _all(self, flag: bool) -> dict[str, bool]:
        return dict.fromkeys(self.infos, flag)

    def _toggled(self, row: LayerRow, value: bool) -> None:
        if self._syncing:
            return
        expected = {row.path: bool(value)}
        expected.update(dict.fromkeys(self._inside(row.path), bool(value)))
        self._send(SetTrainable((row.path,), bool(value)), expected)

    def _up_to(self, row: LayerRow) -> None:
        # What the rows will show once the session applies it (kernelkit.freeze_to): the
        # layers up to here frozen, the rest trainable, BN as the policy says.
        policy = self.bn_policy.value
        paths = list(self.infos)
        leaves = [p for p in paths if not self.infos[p].nested]
        inside = [p for p in leaves if p == row.path or p.startswith(row.path + "/")]
        cut = leaves.index(inside[-1]) + 1 if inside else 0
        expected: dict[str, bool] = {}
        for i, path in enumerate(leaves):
            flag = i >= cut
            if self.infos[path].batch_norm:
                flag = {"train": True, "inference": False}.get(policy, flag)
            expected[path] = flag
        for path in paths:
            if self.infos[path].nested:
                expected[path] = any(expected[p] for p in self._inside(path) if p in expected)
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
