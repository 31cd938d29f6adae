"""A fine-tuning assistant on top of freezing: freeze_to, a BatchNormalization policy, layer_lrs.

:func:`freeze_to` freezes every layer before a cut and leaves the rest
trainable, in one step, with the model recompiled (optimizer state kept or
reset, as you choose) and a report of what changed: trainable parameters
before -> after, where BatchNormalization runs in inference mode, and the
optimizer state. :func:`layer_lrs` gives layer groups their own learning
rates (discriminative rates) with Keras's own ``MultiOptimizer``.

BatchNormalization and ``training=False`` (measured: Keras 3.15.1, both backends)
    Keras's transfer-learning guide builds the model as
    ``x = base(inputs, training=False)`` so that the base's BatchNormalization
    layers stay in inference mode when the base is unfrozen for fine-tuning.
    In Keras 3.15.1 that recorded ``training=False`` does not protect them:
    ``Functional.call`` hands fit's ``training=True`` to every operation it
    runs (``operation_fn`` in ``keras/src/models/functional.py`` overwrites
    the recorded value; keras-team/keras#20285). On MobileNetV2 unfrozen
    above its last 20 layers, the 7 BatchNormalization layers among them
    become trainable and one fit changes all 14 of their moving statistics
    (tests/test_finetune.py reproduces it in plain Keras). What keeps a BN
    layer in inference mode in Keras 3 is ``trainable=False``: a frozen BN
    uses and keeps its moving statistics. Hence the policy:

    - ``bn="frozen"`` (default, Keras 3's semantics): BN layers follow their
      block; those in the frozen part run in inference mode, those in the
      trainable part train and update their statistics.
    - ``bn="train"``: BN layers stay trainable even in frozen blocks, as
      fastai's ``train_bn`` does (their scale, offset and statistics adapt to
      the new data while the rest of the block stays frozen).
    - ``bn="inference"``: every BN layer is frozen, in the trainable part too,
      which is what the guide's ``training=False`` means to do (their scale
      and offset are frozen with them).

Discriminative learning rates (measured: Keras 3.15.1)
    Keras 3's optimizers take one learning rate for all their variables, but
    Keras 3.15 ships ``keras.optimizers.MultiOptimizer`` with an
    ``OptimizerMap``: a real ``Optimizer`` that hands each variable to an
    inner optimizer chosen by the variable's path. It trains on TensorFlow
    and JAX and survives ``model.save`` / ``keras.saving.load_model`` with its
    state, so kernelkit builds on it instead of wrapping optimizers itself.
    Each layer group gets one inner optimizer (a copy of the compiled one
    with the group's rate) under one pattern that lists its variables' paths
    exactly; one pattern per group matters, because a saved map with one key
    per variable would load as one optimizer per variable.

Example:
    >>> kernelkit.freeze_to(model, "base/block_16_expand")  # doctest: +SKIP
    >>> kernelkit.layer_lrs(model, {"base": 1e-5, "head": 1e-3})  # doctest: +SKIP

"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np

from . import freezing
from ._fitting import queued_during_fit
from .freezing import count_parameters

BNPolicy = Literal["frozen", "train", "inference"]
_BN_POLICIES = ("frozen", "train", "inference")
_ISSUE = "keras-team/keras#20285"


def _plural(n: int, word: str) -> str:
    return freezing._plural(n, word)


def _is_bn(layer: Any) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


# --------------------------------------------------------------------------
# The walk: leaf layers in model order (nested models' layers in place)
# --------------------------------------------------------------------------


def _leaves(model: Any) -> list[Any]:
    """The Layers tab's rows that are layers, not nested models or inputs."""
    return [
        r for r in freezing._rows(model) if not r.is_input and not isinstance(r.layer, keras.Model)
    ]


def _cut(model: Any, leaves: list[Any], n_or_layer: Any) -> int:
    """How many leading leaf layers ``n_or_layer`` freezes."""
    count = len(leaves)
    if isinstance(n_or_layer, bool):
        raise TypeError("freeze_to() takes a layer count or a layer; got a bool.")
    if isinstance(n_or_layer, numbers.Integral):
        n = int(n_or_layer)
        if not -count <= n <= count:
            raise ValueError(
                f"freeze_to({n}): model {model.name!r} has {_plural(count, 'layer')} "
                f"(nested models' layers counted in place); use -{count}..{count}."
            )
        return n if n >= 0 else count + n
    rows = list(freezing._rows(model))
    found = freezing._resolve(model, rows, n_or_layer, "layers")
    if len(found) != 1:
        names = ", ".join(r.path for r in found[:4])
        raise ValueError(f"freeze_to({n_or_layer!r}) must name one layer; it names {names}.")
    row = found[0]
    for i, leaf in enumerate(leaves):
        if leaf.layer is row.layer or leaf.path.startswith(row.path + "/"):
            return i
    raise ValueError(f"freeze_to({n_or_layer!r}): {row.path!r} has no layers to cut before.")


def _bn_inside(row: Any) -> list[Any]:
    return [layer for layer in row.layer._flatten_layers(include_self=True) if _is_bn(layer)]


def _path_of(model: Any) -> dict[int, str]:
    paths = {id(r.layer): r.path for r in freezing._rows(model)}
    for leaf in _leaves(model):  # layers inside custom layers: named after their leaf
        for inner in leaf.layer._flatten_layers(include_self=False):
            paths.setdefault(id(inner), f"{leaf.path}/{inner.name}")
    return paths


def _called_with_training_false(model: Any) -> list[Any]:
    """Nested models this model calls with ``training=False`` recorded (the guide's recipe)."""
    found = []
    for row in freezing._rows(model):
        if not isinstance(row.layer, keras.Model) or row.is_input:
            continue
        parent = row.ancestors[-1] if row.ancestors else model
        keys = getattr(parent, "_nodes", ())
        with contextlib.suppress(Exception):
            for index, node in enumerate(row.layer._inbound_nodes):
                recorded = node.arguments.kwargs.get("training")
                if f"{id(row.layer)}_ib-{index}" in keys and recorded is False:
                    found.append(row)
                    break
    return found


def _bn_lines(model: Any, policy: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(BN paths in inference mode, BN paths that train, the report's line)."""
    paths = _path_of(model)
    layers = [layer for layer in freezing._all_layers(model) if _is_bn(layer)]
    inference = tuple(paths.get(id(b), b.name) for b in layers if not b.trainable)
    training = tuple(paths.get(id(b), b.name) for b in layers if b.trainable)
    if not layers:
        return (), (), "no BatchNormalization layers"
    how = {
        "frozen": 'bn="frozen" (Keras 3: a frozen BatchNormalization runs in inference mode)',
        "train": 'bn="train" (BatchNormalization trains in frozen blocks too, as fastai\'s '
        "train_bn)",
        "inference": 'bn="inference" (every BatchNormalization frozen, in inference mode)',
    }[policy]
    line = (
        f"{how}: {len(inference)} in inference mode (moving statistics kept), "
        f"{len(training)} training (statistics updated by fit)"
    )
    guarded = [
        r.path
        for r in _called_with_training_false(model)
        if any(p.startswith(r.path + "/") for p in training)
    ]
    if guarded:
        count = sum(1 for p in training if any(p.startswith(g + "/") for g in guarded))
        line += (
            f"; {count} of those are in {', '.join(repr(g) for g in guarded)}, called with "
            f"training=False, which Keras 3.15 overrides in fit ({_ISSUE}): "
            'bn="inference" keeps them'
        )
    return inference, training, line


def bn_notes(model: Any) -> dict[str, str]:
    """A note per BatchNormalization layer whose mode is worth knowing (for the Layers tab).

    Args:
        model: a ``keras.Model``.

    Returns:
        ``{path: note}``: trainable BN layers inside a nested model called
        with ``training=False`` (fit updates their statistics all the same).
        Frozen BN layers are noted by the tab itself (inference mode).

    Example:
        >>> kernelkit.finetune.bn_notes(model)  # doctest: +SKIP
        {'base/Conv_1_bn': 'trainable BatchNormalization: fit updates its moving ...'}

    """
    freezing._check_model(model, "bn_notes")
    guarded = [r.path for r in _called_with_training_false(model)]
    notes = {}
    for path, layer in _path_layers(model):
        if _is_bn(layer) and layer.trainable and any(path.startswith(g + "/") for g in guarded):
            notes[path] = (
                "trainable BatchNormalization: fit updates its moving statistics although "
                f"its model is called with training=False ({_ISSUE})"
            )
    return notes


def _path_layers(model: Any) -> list[tuple[str, Any]]:
    return [(r.path, r.layer) for r in freezing._rows(model) if not r.is_input]


# --------------------------------------------------------------------------
# freeze_to
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTuneReport:
    """What :func:`freeze_to` did (its repr is a few aligned lines).

    Attributes:
        model: the model's name.
        cut: the path of the first trainable layer ("" when every layer is frozen).
        frozen_layers: layers frozen (before the cut), nested models' layers counted.
        trainable_layers: layers left trainable (from the cut on).
        trainable_params: trainable parameter count (before, after).
        non_trainable_params: non-trainable parameter count (before, after).
        bn: the BatchNormalization policy.
        bn_inference: paths of BN layers that run in inference mode now.
        bn_training: paths of BN layers whose statistics fit updates.
        bn_note: the policy and its effect in one line.
        optimizer_state: "keep" or "reset".
        compile_note: what was compiled, in one line.
        recompiled: whether the model was recompiled.
        changed: paths of the layers whose flag changed.

    """

    model: str
    cut: str
    frozen_layers: int
    trainable_layers: int
    trainable_params: tuple[int, int]
    non_trainable_params: tuple[int, int]
    bn: str
    bn_inference: tuple[str, ...]
    bn_training: tuple[str, ...]
    bn_note: str
    optimizer_state: str
    compile_note: str
    recompiled: bool
    changed: tuple[str, ...] = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        t0, t1 = self.trainable_params
        n0, n1 = self.non_trainable_params
        width = max(len(f"{v:,}") for v in (t0, n0))
        frozen = (
            f"the first {_plural(self.frozen_layers, 'layer')}" if self.frozen_layers else "none"
        )
        trainable = (
            f"{self.trainable_layers} from {self.cut}" if self.cut else "none (all frozen)"
        )
        lines = [
            f"FineTuneReport for model {self.model!r}",
            f"  {'frozen:':<15}{frozen}",
            f"  {'trainable:':<15}{trainable}",
            f"  {'trainable:':<15}{t0:>{width},} -> {t1:,} params",
            f"  {'non-trainable:':<15}{n0:>{width},} -> {n1:,} params",
            f"  {'BatchNorm:':<15}{self.bn_note}",
            f"  {'optimizer:':<15}{self._optimizer_line()}",
        ]
        return "\n".join(lines)

    def _optimizer_line(self) -> str:
        return f'optimizer_state="{self.optimizer_state}": {self.compile_note}'

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _flags(model: Any) -> dict[int, bool]:
    return {id(layer): bool(layer.trainable) for layer in freezing._all_layers(model)}


@queued_during_fit
def freeze_to(
    model: Any,
    n_or_layer: int | str | Any,
    *,
    bn: BNPolicy = "frozen",
    optimizer_state: Literal["keep", "reset"] = "keep",
    recompile: bool = True,
) -> FineTuneReport:
    """Freezes every layer before a cut and leaves the rest trainable; recompiles.

    Layers are counted in model order with nested models' layers in place
    (the Layers tab's rows, nested models themselves left out), so the cut
    can fall inside a base model. The whole change is one step: flags,
    BatchNormalization policy, recompile, report.

    Args:
        model: a ``keras.Model``.
        n_or_layer: how many leading layers to freeze (negative counts from
            the end: -20 leaves the last 20 trainable), or the first layer to
            leave trainable (a name, a path such as "base/block_16_expand",
            a glob that names one layer, or the layer itself; a nested model
            means its first layer).
        bn: the BatchNormalization policy: "frozen" (default: BN follows its
            block; frozen BN runs in inference mode, Keras 3's semantics),
            "train" (BN trains in frozen blocks too, fastai's ``train_bn``)
            or "inference" (every BN frozen, in inference mode).
        optimizer_state: "keep" (default: iterations and the slots of the
            variables that stay trainable carry over) or "reset" (a fresh
            optimizer; the model is recompiled even if no flag changed).
        recompile: recompile so that the change takes effect (default).

    Returns:
        A :class:`FineTuneReport`: the cut, trainable and non-trainable
        parameters before -> after, where BN runs in inference mode, and
        the optimizer state. Called while a kernelkit fit of ``model`` runs
        (from a callback, another thread), it is queued until the fit ends,
        with one line saying so, and returns None: recompiling under a
        running training loop would break it.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``, or ``n_or_layer``'s type is wrong.
        ValueError: the layer is not found (closest names listed), the count
            is out of range, ``bn`` or ``optimizer_state`` is unknown, or the
            model can't be recompiled. Nothing changed.

    Example:
        >>> kernelkit.freeze_to(model, base.layers[-20])  # doctest: +SKIP
        FineTuneReport for model 'transfer'
          frozen:        the first 133 layers
          trainable:     22 from base/block_15_expand
          trainable:       3,843 -> 252,915 params
          non-trainable: 410,208 -> 161,136 params
          BatchNorm:     bn="frozen" (Keras 3: a frozen BatchNormalization runs in inference
                         mode): 45 in inference mode (moving statistics kept), 7 training
                         (statistics updated by fit); 7 of those are in 'base', called with
                         training=False, which Keras 3.15 overrides in fit
                         (keras-team/keras#20285): bn="inference" keeps them
          optimizer:     optimizer_state="keep": recompiled 'transfer' (Adam state kept for
                         2 variables, 21 start fresh)

    """
    freezing._check_model(model, "freeze_to")
    if bn not in _BN_POLICIES:
        raise ValueError(f"bn={bn!r} is not a policy; use one of {', '.join(_BN_POLICIES)}.")
    if optimizer_state not in ("keep", "reset"):
        raise ValueError(f"optimizer_state must be 'keep' or 'reset'; got {optimizer_state!r}.")
    leaves = _leaves(model)
    n = _cut(model, leaves, n_or_layer)
    compiled = freezing._is_compiled(model)
    if recompile and compiled:
        freezing._check_recompilable(model)  # before any flag changes
    before_flags = _flags(model)
    before_params = freezing.parameter_counts(model)

    frozen, kept = leaves[:n], leaves[n:]
    bn_frozen = [b for row in frozen for b in _bn_inside(row)]
    bn_kept = [b for row in kept for b in _bn_inside(row)]
    freezing.set_trainable(model, [r.layer for r in kept], True)
    freezing.set_trainable(model, [r.layer for r in frozen], False)
    if bn == "train":
        freezing.set_trainable(model, bn_frozen, True)
    elif bn == "inference":
        freezing.set_trainable(model, bn_kept, False)

    flags = freezing._compiled_flags(model)
    needs = flags is not None and bool(freezing._differences(model, flags))
    recompiled = False
    if not compiled:
        note = "model not compiled yet: the flags apply when you compile it"
    elif recompile and (needs or optimizer_state == "reset"):
        note = str(freezing._recompile(model, optimizer_state))
        recompiled = True
    elif needs:
        note = "not recompiled (recompile=False): call kernelkit.recompile(model) before fit"
    else:
        note = "no recompile needed: the flags in force are unchanged"
    inference, training, bn_note = _bn_lines(model, bn)
    after = _flags(model)
    paths = _path_of(model)
    changed = tuple(
        paths.get(id(layer), layer.name)
        for layer in freezing._all_layers(model)[1:]
        if after[id(layer)] != before_flags[id(layer)]
    )
    params = freezing.parameter_counts(model)
    return FineTuneReport(
        model=model.name,
        cut=kept[0].path if kept else "",
        frozen_layers=len(frozen),
        trainable_layers=len(kept),
        trainable_params=(before_params[0], params[0]),
        non_trainable_params=(before_params[1], params[1]),
        bn=bn,
        bn_inference=inference,
        bn_training=training,
        bn_note=bn_note,
        optimizer_state=optimizer_state,
        compile_note=note,
        recompiled=recompiled,
        changed=changed,
    )


def freeze_through(model: Any, path: str, *, bn: BNPolicy = "frozen") -> FineTuneReport:
    """Freezes every layer up to and including ``path``; the rest stay trainable.

    The Layers tab's "freeze up to here" (a ``FreezeTo`` intent). A nested
    model's path means all of its layers.

    Args:
        model: a ``keras.Model``.
        path: a layer path ("base/block_16_project_BN").
        bn: the BatchNormalization policy, as for :func:`freeze_to`.

    Returns:
        The :class:`FineTuneReport` of :func:`freeze_to`.

    Raises:
        ValueError: ``path`` names no layer, or a nested model without layers.
    """
    leaves = _leaves(model)
    rows = list(freezing._rows(model))
    (row,) = freezing._resolve(model, rows, path, "layers")[:1]
    inside = [
        i for i, leaf in enumerate(leaves)
        if leaf.layer is row.layer or leaf.path.startswith(row.path + "/")
    ]
    if not inside:
        raise ValueError(f"{path!r} has no layers to freeze")
    return freeze_to(model, inside[-1] + 1, bn=bn)


# --------------------------------------------------------------------------
# layer_lrs: discriminative learning rates with Keras's MultiOptimizer
# --------------------------------------------------------------------------

_PREFIX = "lr_"
_REST = "rest"


def _multi_class() -> Any:
    found = getattr(keras.optimizers, "MultiOptimizer", None)
    if found is None:  # pragma: no cover - Keras < 3.15
        raise ValueError(
            f"Keras {keras.__version__} has no keras.optimizers.MultiOptimizer; "
            "layer_lrs needs Keras 3.15 or later"
        )
    return found


def _unwrap(optimizer: Any) -> Any:
    inner = getattr(optimizer, "inner_optimizer", None)
    return inner if isinstance(inner, keras.optimizers.Optimizer) else optimizer


def _groups_of(optimizer: Any) -> list[Any]:
    """The inner optimizers of a MultiOptimizer (possibly loss-scaled), else []."""
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    optimizer = _unwrap(optimizer)
    if multi is None or not isinstance(optimizer, multi):
        return []
    return list(optimizer.optimizers)


def _group_name(optimizer: Any) -> str:
    name = str(getattr(optimizer, "name", ""))
    return name[len(_PREFIX) :] if name.startswith(_PREFIX) else name


def _rate_text(rate: Any) -> str:
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return type(rate).__name__
    if isinstance(rate, Mapping):  # a serialized schedule
        return str(rate.get("class_name", "schedule"))
    with contextlib.suppress(TypeError, ValueError):
        mantissa, exponent = f"{float(keras.ops.convert_to_numpy(rate)):.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"  # 1e-03, 8.41e-05
    return str(rate)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "group"


@dataclass(frozen=True)
class LayerGroup:
    """One learning-rate group: its name, rate, and what it covers."""

    name: str
    rate: str
    layers: int
    params: int  # trainable parameters now


@dataclass(frozen=True)
class LayerLRsReport:
    """What :func:`layer_lrs` did (its repr is a few aligned lines).

    Attributes:
        model: the model's name.
        groups: one :class:`LayerGroup` per group, the rest (default) last.
        trainable_params: trainable parameter count (before, after).
        non_trainable_params: non-trainable parameter count (before, after).
        optimizer: what the model is compiled with now, in words.
        optimizer_state: "keep" or "reset".
        compile_note: what was compiled, in one line.

    """

    model: str
    groups: tuple[LayerGroup, ...]
    trainable_params: tuple[int, int]
    non_trainable_params: tuple[int, int]
    optimizer: str
    optimizer_state: str
    compile_note: str

    def __repr__(self) -> str:
        t0, t1 = self.trainable_params
        n0, n1 = self.non_trainable_params
        width = max(len(f"{v:,}") for v in (t0, n0))
        label = max([15, *(len(g.name) + 2 for g in self.groups)])
        lines = [f"LayerLRsReport for model {self.model!r}"]
        for g in self.groups:
            lines.append(
                f"  {g.name + ':':<{label}}lr {g.rate} · {_plural(g.layers, 'layer')} · "
                f"{g.params:,} trainable params"
            )
        lines += [
            f"  {'trainable:':<{label}}{t0:>{width},} -> {t1:,} params",
            f"  {'non-trainable:':<{label}}{n0:>{width},} -> {n1:,} params",
            f"  {'optimizer:':<{label}}{self.optimizer}; "
            f'optimizer_state="{self.optimizer_state}": {self.compile_note}',
        ]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@queued_during_fit
def layer_lrs(
    model: Any,
    rates: Mapping[Any, Any],
    *,
    default: Any = None,
    optimizer_state: Literal["keep", "reset"] = "keep",
) -> LayerLRsReport:
    """Gives layer groups their own learning rates (discriminative rates) and recompiles.

    Each group is a layer spec as :func:`kernelkit.freeze` takes it (a
    name, a path into a nested model, a glob, a layer); a nested model's
    group holds every layer inside it. The model is compiled again with a
    ``keras.optimizers.MultiOptimizer``: one copy of the compiled optimizer
    per group, with the group's rate, and one for the other layers with
    ``default`` (the compiled rate when None). An empty ``rates`` goes back
    to one optimizer. It works on TensorFlow and JAX, is saved and loaded by
    ``model.save`` / ``keras.saving.load_model``, and later
    :func:`kernelkit.freeze` / :func:`freeze_to` recompiles keep it.

    Args:
        model: a compiled ``keras.Model``.
        rates: ``{group: learning rate}``; a rate is a float or a
            ``LearningRateSchedule``.
        default: the rate of the layers in no group (default: the compiled one).
        optimizer_state: "keep" (default: every variable keeps its slots and
            ``iterations`` carries over into each group) or "reset".

    Returns:
        A :class:`LayerLRsReport`: each group's rate, layers and trainable
        parameters, the totals before -> after, the optimizer state. Called
        while a kernelkit fit of ``model`` runs (from a callback, another
        thread), it is queued until the fit ends, with one line saying so,
        and returns None: recompiling under a running training loop breaks it.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``, a spec's type is wrong,
            or a rate is not a number or a ``LearningRateSchedule``.
        ValueError: the model is not compiled or can't be recompiled, a
            group is not found, a layer is in two groups, two variables in
            different groups share a path (the map matches variables by
            path), a rate is not positive and finite, or ``optimizer_state``
            is unknown. Nothing changed.

    Example:
        >>> kernelkit.layer_lrs(model, {"base": 1e-5, "head": 1e-3})  # doctest: +SKIP
        LayerLRsReport for model 'transfer'
          base:          lr 1e-05 · 153 layers · 249,072 trainable params
          head:          lr 1e-03 · 1 layer · 3,843 trainable params
          rest:          lr 1e-03 · 0 layers · 0 trainable params
          trainable:     252,915 -> 252,915 params
          non-trainable: 161,136 -> 161,136 params
          optimizer:     MultiOptimizer of 3 Adams; optimizer_state="keep": recompiled
                         'transfer' (state kept for 23 variables)

    """
    freezing._check_model(model, "layer_lrs")
    if optimizer_state not in ("keep", "reset"):
        raise ValueError(f"optimizer_state must be 'keep' or 'reset'; got {optimizer_state!r}.")
    if not freezing._is_compiled(model):
        raise ValueError(
            f"model {model.name!r} is not compiled: compile it first (layer_lrs copies the "
            "compiled optimizer for each group)."
        )
    freezing._check_recompilable(model)
    if not isinstance(rates, Mapping):
        raise TypeError(f"rates must be a mapping {{group: rate}}; got {type(rates).__name__}.")
    for spec, rate in rates.items():
        _check_rate(rate, f"the rate of group {_spec_name(spec)!r}")
    if default is not None:
        _check_rate(default, "default")
    rows = list(freezing._rows(model))
    old = model.optimizer
    inner = _groups_of(old)
    base = inner[-1] if inner else _unwrap(old)  # a MultiOptimizer's default comes last

    # Which group each variable is in (checked before anything changes).
    owner: dict[int, str] = {}
    members: dict[str, list[Any]] = {}
    layer_counts: dict[str, int] = {}
    for spec in rates:
        name = _spec_name(spec)
        found = freezing._resolve(model, rows, spec, "layers")
        layers = {id(r.layer): r.layer for r in found}
        for r in found:
            for layer in r.layer._flatten_layers(include_self=True):
                layers.setdefault(id(layer), layer)
        layer_counts[name] = sum(
            1
            for layer in layers.values()
            if not isinstance(layer, (keras.Model, keras.layers.InputLayer))
        )
        group: dict[int, Any] = {}
        for layer in layers.values():
            for v in layer.weights:
                group.setdefault(id(v), v)
        for key, v in group.items():
            if key in owner and owner[key] != name:
                raise ValueError(
                    f"{v.path!r} is in groups {owner[key]!r} and {name!r}: give each layer "
                    "one group."
                )
            owner[key] = name
        members[name] = list(group.values())
    paths: dict[str, str] = {}
    for v in {id(v): v for v in model.weights}.values():
        group_name = owner.get(id(v), _REST)
        if paths.setdefault(v.path, group_name) != group_name:
            raise ValueError(
                f"two variables share the path {v.path!r} but are in groups "
                f"{paths[v.path]!r} and {group_name!r}: the optimizer map matches variables by "
                "path; rename one of the layers."
            )

    before = freezing.parameter_counts(model)
    config = dict(model._compile_config.config)
    LossScale = keras.optimizers.LossScaleOptimizer
    with freezing._strategy_scope(model):
        base_config = base.get_config()

        def copy(rate: Any, name: str) -> Any:
            return type(base).from_config({**base_config, "learning_rate": rate, "name": name})

        if rates:
            rest = copy(base_config["learning_rate"] if default is None else default,
                        _PREFIX + _REST)
            table = keras.optimizers.OptimizerMap(default_optimizer=rest)
            for name, variables in members.items():
                if not variables:
                    continue
                pattern = "(?:" + "|".join(sorted({re.escape(v.path) for v in variables})) + ")"
                table[pattern] = copy(_rate_for(rates, name), _PREFIX + _safe(name))
            optimizer = _multi_class()(table, name="layer_lrs")
        else:
            optimizer = copy(
                base_config["learning_rate"] if default is None else default, base.name
            )
        config["optimizer"] = optimizer
        config["auto_scale_loss"] = isinstance(old, LossScale)
        had_state = bool(getattr(old, "built", False))
        freezing._raw_compile(model, **config)
        model.optimizer.build(model.trainable_variables)
        if had_state and optimizer_state == "keep":
            kept, fresh = _carry_state(old, model.optimizer)
            note = f"state kept for {_plural(kept, 'variable')}" + (
                f", {fresh} start fresh" if fresh else ""
            )
        elif had_state:
            note = "state reset"
        else:
            note = "the old optimizer had no state yet"
    freezing._record_compile(model)

    groups = []
    now = _groups_of(model.optimizer)
    trainable = {id(v) for v in model.trainable_variables}
    for opt in now or [_unwrap(model.optimizer)]:
        name = _group_name(opt) if now else "all"
        variables = [v for v in _variables_of(model, opt) if id(v) in trainable]
        layers = layer_counts.get(name, _rest_layers(model, owner) if name == _REST else 0)
        groups.append(
            LayerGroup(
                name,
                _rate_text(opt.get_config()["learning_rate"]),
                layers,
                count_parameters(variables),
            )
        )
    # The default group ("rest") last, as the map holds it.
    groups.sort(key=lambda g: g.name == _REST)
    params = freezing.parameter_counts(model)
    kind = type(base).__name__
    described = (
        f"MultiOptimizer of {_plural(len(now), kind)}" if now else f"{kind} (one learning rate)"
    )
    return LayerLRsReport(
        model=model.name,
        groups=tuple(groups),
        trainable_params=(before[0], params[0]),
        non_trainable_params=(before[1], params[1]),
        optimizer=described,
        optimizer_state=optimizer_state,
        compile_note=f"recompiled {model.name!r} ({note})",
    )


def _spec_name(spec: Any) -> str:
    """A group's name: the spec itself, or the name of the layer it is."""
    return spec if isinstance(spec, str) else getattr(spec, "name", str(spec))


def _check_rate(rate: Any, what: str) -> None:
    """Refuses a learning rate that is not a positive finite number, a schedule or a callable.

    A negative rate would make the group ascend the loss, zero would freeze it
    without saying so, and NaN or inf would spread through its weights; each
    is caught here, in one line, before anything changes.
    """
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(rate) and not isinstance(rate, type)
    ):
        return  # Keras's optimizers take schedules and callables returning the rate
    fix = "pass a positive learning rate such as 1e-3, or a LearningRateSchedule"
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"layer_lrs: {what} is {rate!r} ({type(rate).__name__}); {fix}.")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"layer_lrs: {what} is {rate!r}, not a positive finite number; {fix}.")


def _rate_for(rates: Mapping[Any, Any], name: str) -> Any:
    """The rate given for group ``name`` (specs that are layers are keyed by their name)."""
    for spec, rate in rates.items():
        if _spec_name(spec) == name:
            return rate
    raise KeyError(name)  # pragma: no cover


def _rest_layers(model: Any, owner: dict[int, str]) -> int:
    count = 0
    for layer in freezing._all_layers(model)[1:]:
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        if all(id(v) not in owner for v in layer.weights):
            count += 1
    return count


def _variables_of(model: Any, optimizer: Any) -> list[Any]:
    """The model variables a MultiOptimizer's inner ``optimizer`` is (or would be) given."""
    multi = _unwrap(model.optimizer)
    table = getattr(multi, "_optimizer_map", None)
    if table is None or not callable(table):
        return list(model.trainable_variables)
    chosen = []
    for v in {id(v): v for v in model.weights}.values():
        with contextlib.suppress(Exception):
            if table(v) is optimizer:
                chosen.append(v)
    return chosen


def _carry_state(old: Any, new: Any) -> tuple[int, int]:
    """Every variable's slots from the old optimizer(s) into the new groups; (kept, fresh)."""
    olds = _groups_of(old) or [_unwrap(old)]
    news = _groups_of(new) or [_unwrap(new)]
    for target in news:
        rate = target.__dict__.get("_learning_rate")
        value = (
            keras.ops.convert_to_numpy(rate) if isinstance(rate, keras.Variable) else None
        )
        for source in olds:
            freezing._copy_optimizer_state(source, target)
        if value is not None:  # the group keeps its own rate, not the copied one
            rate.assign(value)
    outer_old, outer_new = _unwrap(old), _unwrap(new)
    if outer_new is not news[0]:  # the MultiOptimizer's own iterations
        outer_new.iterations.assign(outer_old.iterations)
    # One old value went into several groups (iterations, shared slots): on JAX an assigned
    # variable may hold the very buffer it was given, and a train step that donates its
    # state refuses one buffer twice ("Attempt to donate the same buffer twice"). Copies.
    for variable in _unwrap(new).variables:
        variable.assign(np.array(keras.ops.convert_to_numpy(variable), copy=True))
    known = {id(v) for o in olds for v in getattr(o, "_trainable_variables", [])}
    now = list(getattr(outer_new, "_trainable_variables", []))
    kept = sum(1 for v in now if id(v) in known)
    return kept, len(now) - kept


def lr_groups(model: Any) -> dict[str, str]:
    """Each layer's learning-rate group, for the Layers tab's lr column.

    Args:
        model: a ``keras.Model``.

    Returns:
        ``{path: "head · 1e-03"}`` for the layers with weights when the model
        is compiled with a ``MultiOptimizer`` (``"mixed"`` for a layer whose
        weights are in several groups); an empty dict otherwise.

    Example:
        >>> kernelkit.finetune.lr_groups(model)["head"]  # doctest: +SKIP
        'head · 1e-03'

    """
    freezing._check_model(model, "lr_groups")
    groups = _groups_of(getattr(model, "optimizer", None))
    if not groups:
        return {}
    table = getattr(_unwrap(model.optimizer), "_optimizer_map", None)
    labels = {
        id(o): f"{_group_name(o)} · {_rate_text(o.get_config()['learning_rate'])}"
        for o in groups
    }
    out = {}
    for path, layer in _path_layers(model):
        chosen = set()
        for v in layer.weights:
            with contextlib.suppress(Exception):
                chosen.add(id(table(v)))
        if len(chosen) == 1:
            out[path] = labels.get(next(iter(chosen)), "?")
        elif chosen:
            out[path] = "mixed"
    return out
