"""Freeze and unfreeze layers so that the change takes effect every time.

Keras reads ``layer.trainable`` when it builds the train function, not when
``fit`` runs: on TensorFlow the first ``fit`` after ``compile()`` traces the
step with the trainable variables of that moment and every later ``fit``
reuses it, so ``layer.trainable = False`` after a fit is silently ignored
until the model is compiled again (keras-team/keras#6405; Keras 3.15 added a
warning for it in PR #22787, which is unreachable in 3.15.1). kernelkit makes
the change take effect: :func:`freeze` and :func:`unfreeze` set the flags and
recompile with the model's own compile configuration, and
:func:`ensure_trainable_applied` (called by the session before each fit of a
registered model) recompiles when flags were changed by hand.

What a recompile keeps
    The optimizer class and hyper-parameters (including a learning rate you
    set on ``model.optimizer`` since), the losses, ``loss_weights``, metrics,
    weighted metrics, ``steps_per_execution``, ``jit_compile`` and
    ``run_eagerly``: everything ``model.compile`` was given, read back from
    Keras's record of that call.

Optimizer state (the policy)
    With ``optimizer_state="keep"`` (the default) ``model.optimizer`` becomes
    a new instance of the same class and configuration, built for the new set
    of trainable variables, and takes over the old instance's state:
    ``iterations`` (so learning-rate schedules continue), and the slot
    variables (momentum, Adam moments, EMA averages, ...) of every variable
    that stays trainable. Newly trainable variables start with fresh (zero)
    slots and the slots of frozen variables are dropped. Momentum carries on
    for the head while you freeze or unfreeze the base. ``"reset"`` (pass it
    to :func:`recompile`) starts the optimizer from scratch instead, as a
    manual ``model.compile(optimizer="adam")`` would. An optimizer that holds
    no state yet (never used by a fit) is reused as it is.

How kernelkit knows the flags in force at compile time
    A snapshot of every layer's flag is taken when the model is compiled.
    :func:`track_compile` installs a wrapper of ``model.compile`` on the
    instance (restored by :func:`untrack_compile`; ``type(model).compile`` is
    untouched) that records it after each compile, and every kernelkit
    recompile records it too. For a compile that kernelkit did not see (the
    model was compiled before it was registered, or by
    ``keras.Model.compile(model, ...)``) it reads ``_compiled_trainable_state``,
    which Keras 3.15+ records in ``compile()``; each compile is recognised by
    its compile-config object. With an older Keras, such a model's flags at
    first sight are taken as the ones in force.

Each model keeps the trainable state it was compiled with (the GAN pattern)
    The Keras 2 idiom compiles a discriminator while trainable, then sets
    ``discriminator.trainable = False`` and compiles the combined model. The
    discriminator's flags now differ from its own compile, but the change was
    made *for* the combined model, and a compile has applied it. kernelkit
    remembers which compile last applied each layer's current flag. Before a
    fit of model M, a difference explained by another model's later compile
    is not a forgotten recompile: the layers get back the flags M was compiled
    with (no recompile, no message), so the discriminator trains alone and
    stays frozen inside the combined model, on every backend and whichever
    model was traced first. Changes made by hand that no compile has applied
    yet recompile M with the current flags. :func:`freeze` and
    :func:`unfreeze` apply to the model you pass them.

Example:
    >>> report = kernelkit.freeze(model, "base")  # doctest: +SKIP
    >>> model.fit(x, y)  # the base stays as it is  # doctest: +SKIP

"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import numbers
import reprlib
import types
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import keras

from ._fitting import queued_during_fit
from .paths import LayerPath as _Row
from .paths import into_models, walk

#: What names a layer: a name, an index into ``model.layers``, a glob
#: pattern ("block3_*"), a path into a nested model ("base/conv2") or the
#: layer itself.
LayerSpec = Union[str, int, "keras.layers.Layer"]

_GLOB_CHARS = "*?["


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecompileInfo:
    """What :func:`recompile` did (its repr is one line).

    Attributes:
        model: the model's name.
        optimizer: the optimizer's class name.
        policy: "keep" or "reset".
        kept: variables whose optimizer state was carried over.
        fresh: trainable variables that start with fresh optimizer state.
        had_state: whether the old optimizer held any state (had been built).

    """

    model: str
    optimizer: str
    policy: str
    kept: int = 0
    fresh: int = 0
    had_state: bool = True

    def __str__(self) -> str:
        if not self.had_state:
            detail = f"{self.optimizer} had no state yet"
        elif self.policy == "reset":
            detail = f"{self.optimizer} state reset"
        else:
            detail = f"{self.optimizer} state kept for {_plural(self.kept, 'variable')}"
            if self.fresh:
                detail += f", {self.fresh} start fresh"
        return f"recompiled {self.model!r} ({detail})"

    __repr__ = __str__


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`set_trainable`, :func:`freeze` or :func:`unfreeze` changed.

    Attributes:
        model: the model's name.
        trainable: the flag that was set (False: freeze, True: unfreeze).
        changed: paths of the layers whose flag changed ("base", "base/conv2"),
            in model order, nested models' layers included.
        trainable_params: trainable parameter count (before, after).
        non_trainable_params: non-trainable parameter count (before, after).
        compiled: whether the model had been compiled.
        needs_recompile: whether the flags now differ from those in force
            (those of the model's last compile); False once recompiled.
        recompiled: whether a recompile was done.
        note: one line on compilation (recompiled, not compiled yet, ...).
        layers: the changed layers themselves (same order as ``changed``).

    """

    model: str
    trainable: bool
    changed: tuple[str, ...]
    trainable_params: tuple[int, int]
    non_trainable_params: tuple[int, int]
    compiled: bool
    needs_recompile: bool
    recompiled: bool = False
    note: str = ""
    layers: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    summary: str = field(default="", repr=False, compare=False)

    def __repr__(self) -> str:
        verb = "unfroze" if self.trainable else "froze"
        t0, t1 = self.trainable_params
        n0, n1 = self.non_trainable_params
        width = max(len(f"{v:,}") for v in (t0, n0))
        lines = [
            f"FreezeReport for model {self.model!r}",
            f"  {verb + ':':<15}{self.summary or 'nothing (no flag changed)'}",
            f"  {'trainable:':<15}{t0:>{width},} -> {t1:,} params",
            f"  {'non-trainable:':<15}{n0:>{width},} -> {n1:,} params",
            f"  {'compile:':<15}{self.note}",
        ]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# --------------------------------------------------------------------------
# Layers, rows and paths
# --------------------------------------------------------------------------


def _a(value: Any) -> str:
    """What ``value`` is, in a few words: "an int (42)", "a str ('clf')", "None"."""
    if value is None:
        return "None"
    kind = type(value).__name__
    if isinstance(value, keras.layers.Layer):
        return f"a {kind} layer ({value.name!r})"
    shown = reprlib.repr(value)
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{article} {kind} ({shown})" if shown != kind else f"{article} {kind}"


def check_model(model: Any, fn: str, *, arg: str = "model", layer_ok: bool = False) -> None:
    """The one check of a public function's model argument: one line naming what it expected.

    Every public function (``freeze``, ``reset_states``, ``extract``, ``fit``,
    ``card``...) calls it first, so a wrong argument reads the same everywhere.

    Args:
        model: what the caller passed.
        fn: the public function's name, as the user calls it (``"freeze"``).
        arg: the argument's name.
        layer_ok: also accept a single Keras layer (``extract`` runs on layers too).

    Raises:
        TypeError: ``model`` is not a ``keras.Model`` (nor a layer, with ``layer_ok``).

    Example:
        >>> check_model(42, "state_summary")  # doctest: +SKIP
        TypeError: kernelkit.state_summary() expects a keras.Model; got an int (42): pass ...
    """
    if isinstance(model, keras.layers.Layer if layer_ok else keras.Model):
        return
    wanted = "a keras.Model or layer" if layer_ok else "a keras.Model"
    if arg != "model":
        wanted += f" as {arg}"
    if isinstance(model, str):
        fix = f"pass the model itself, e.g. kernelkit.{fn}(kernelkit.get({model!r}))"
    elif isinstance(model, keras.layers.Layer):
        fix = "pass the model that holds this layer"
    else:
        fix = "pass a Sequential, Functional or subclassed Keras model"
    raise TypeError(f"kernelkit.{fn}() expects {wanted}; got {_a(model)}: {fix}")


_check_model = check_model  # the name the sibling modules (finetune) already use


def layer_list(
    layers: Any,
    fn: str,
    *,
    kinds: tuple[type, ...],
    expected: str,
    arg: str = "layers",
    hint: str = "",
    check_items: bool = True,
) -> list[Any] | None:
    """The one check of a layer argument: None, one spec, or a list of specs -> a list.

    ``freeze``, ``reset_states``, ``extract`` and ``ResetStates`` take one layer
    spec or a list of them; this turns the argument into a list, or says in
    one line what was expected. A dict is refused (iterating it would
    silently take its keys).

    Args:
        layers: what the caller passed.
        fn: the public function's name.
        kinds: the types one spec may have (bools are never specs).
        expected: what a spec is, in words ("names or paths (str)").
        arg: the argument's name.
        hint: added after the fix (e.g. the model's stateful layers).
        check_items: also check each item's type (False: the caller's
            resolver checks each spec itself).

    Returns:
        None for None, else the specs as a list.

    Raises:
        TypeError: one line naming the argument, what it got and what it takes.
    """
    if layers is None:
        return None
    tail = f"; {hint}" if hint else ""

    def wrong(value: Any, where: str = "") -> TypeError:
        fix = f"; pass its name, {value.name!r}" if isinstance(value, keras.layers.Layer) else ""
        return TypeError(
            f"kernelkit.{fn}(): {arg} must be {expected}, or a list of them, got "
            f"{_a(value)}{where}{fix}{tail}"
        )

    def is_spec(value: Any) -> bool:
        return isinstance(value, kinds) and not isinstance(value, bool)

    if is_spec(layers):
        return [layers]
    if not check_items and not isinstance(layers, (Mapping, Iterable)):
        return [layers]  # one spec of a wrong type: the resolver says what a spec is
    if isinstance(layers, (Mapping, bool)) or not isinstance(layers, Iterable):
        raise wrong(layers)
    items = list(layers)
    if check_items:
        for item in items:
            if not is_spec(item):
                raise wrong(item, f" in {arg}")
    return items


def _rows(model: Any) -> list[_Row]:
    """Layers in model order; a nested model's layers follow it, with paths (``kernelkit.paths``).

    Freezing enters nested models only: a custom layer freezes as a whole. Input
    layers are listed (greyed in the Layers tab), never changed.
    """
    return walk(model, enter=into_models, inputs=True)


def _all_layers(model: Any) -> list[Any]:
    # Keras's own traversal (the one its compiled-state record uses): the
    # model first, every layer before the layers inside it.
    return list(model._flatten_layers(include_self=True, recursive=True))


def _is_compiled(model: Any) -> bool:
    return bool(getattr(model, "compiled", False)) and getattr(model, "optimizer", None) is not None


def count_parameters(variables: Iterable[Any]) -> int:
    """The number of values in ``variables``, a variable shared by several layers once.

    The one parameter count of kernelkit: the card, the Layers tab, the
    fine-tuning groups and the registry table all use it, so they agree.

    Example:
        >>> import numpy as np
        >>> shared = np.zeros((3, 4))
        >>> count_parameters([shared, np.zeros(5), shared])
        17
    """
    seen: dict[int, Any] = {id(v): v for v in variables}
    return sum(math.prod(int(d) for d in v.shape) for v in seen.values())


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, non-trainable) parameters of ``model``; (0, 0) before it is built."""
    if not getattr(model, "built", False):
        return 0, 0
    return count_parameters(model.trainable_weights), count_parameters(model.non_trainable_weights)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _changed_items(rows: list[_Row], changed: set[int]) -> list[str]:
    """Changed layers for display: a nested model whose layers all changed is one item."""
    items: list[str] = []
    collapsed: list[str] = []
    for row in rows:
        if row.is_input or id(row.layer) not in changed:
            continue
        if any(row.path.startswith(c + "/") for c in collapsed):
            continue
        inside = [r for r in rows if r.path.startswith(row.path + "/") and not r.is_input]
        if not inside:
            items.append(row.path)
        elif all(id(r.layer) in changed for r in inside):
            collapsed.append(row.path)
            items.append(f"{row.path} (+{len(inside)} inside)")
        # else: only some layers inside changed; they are listed themselves.
    return items


def _short_list(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _closest(spec: str, rows: list[_Row]) -> str:
    names = list(dict.fromkeys([r.path for r in rows] + [r.layer.name for r in rows]))
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    if close:
        return "closest: " + ", ".join(repr(c) for c in close)
    top = [r.path for r in rows if r.depth == 0 and not r.is_input]
    shown = ", ".join(top[:8]) + (", ..." if len(top) > 8 else "")
    return f"layers: {shown}" if top else "the model has no layers"


def _resolve(model: Any, rows: list[_Row], spec: Any, arg: str) -> list[_Row]:
    """The rows one spec names; raises ValueError/TypeError (nothing changed yet)."""
    where = f"{arg}={spec!r}: " if arg == "up_to" else ""
    if isinstance(spec, bool) or not isinstance(spec, (str, numbers.Integral, keras.layers.Layer)):
        raise TypeError(
            f"{where}a layer is named by a name, an index, a glob like 'block3_*', "
            f"a path like 'base/conv2' or the layer itself; got {type(spec).__name__}."
        )
    if isinstance(spec, numbers.Integral):
        spec = int(spec)
        count = len(model.layers)
        if not -count <= spec < count:
            span = f"indices 0..{count - 1}" if count else "no layers"
            raise ValueError(
                f"{where}layer index {spec} is out of range: model {model.name!r} has "
                f"{_plural(count, 'layer')} ({span})."
            )
        layer = model.layers[spec]
        return [next(r for r in rows if r.layer is layer)]
    if isinstance(spec, keras.layers.Layer):
        found = [r for r in rows if r.layer is spec]
        if found:
            return found[:1]
        if any(layer is spec for layer in _all_layers(model)[1:]):
            # A layer inside a custom (non-model) layer: it has no row of its own.
            return [_Row(spec.name, spec, 0)]
        raise ValueError(f"{where}layer {spec.name!r} is not part of model {model.name!r}.")
    if any(ch in spec for ch in _GLOB_CHARS):
        pool = rows if "/" in spec else [r for r in rows if r.depth == 0]
        found = [r for r in pool if fnmatch.fnmatchcase(r.path, spec)]
        if not found and "/" not in spec:
            found = [r for r in rows if fnmatch.fnmatchcase(r.layer.name, spec)]
        if not found:
            raise ValueError(
                f"{where}no layer of model {model.name!r} matches {spec!r}; {_closest(spec, rows)}."
            )
        return found
    found = [r for r in rows if r.path == spec]
    if not found and "/" not in spec:
        found = [r for r in rows if r.layer.name == spec]
        if len(found) > 1:
            paths = ", ".join(r.path for r in found)
            raise ValueError(
                f"{where}{spec!r} names {len(found)} layers of model {model.name!r} "
                f"({paths}); pass a path."
            )
    if not found:
        raise ValueError(
            f"{where}no layer {spec!r} in model {model.name!r}; {_closest(spec, rows)}."
        )
    return found


def _targets(
    model: Any, rows: list[_Row], layers: Any, up_to: Any, fn: str = "set_trainable"
) -> list[_Row]:
    chosen: list[_Row] = []
    if layers is None and up_to is None:
        chosen = [r for r in rows if r.depth == 0 and not r.is_input]
    elif layers is not None:
        specs = layer_list(
            layers,
            fn,
            kinds=(str, numbers.Integral, keras.layers.Layer),
            expected="a name, an index, a glob like 'block3_*', a path like 'base/conv2' or "
            "a layer",
            check_items=False,  # _resolve says what a spec is, for up_to too
        )
        for spec in specs or []:
            chosen += _resolve(model, rows, spec, "layers")
    if up_to is not None:
        found = _resolve(model, rows, up_to, "up_to")
        if len(found) != 1:
            raise ValueError(
                f"up_to={up_to!r} must name one layer; it matches {len(found)} "
                f"({', '.join(r.path for r in found[:4])})."
            )
        last = found[0]
        if last not in rows:
            raise ValueError(f"up_to={up_to!r}: pick a layer of the model or of a nested model.")
        for row in rows[: rows.index(last) + 1]:
            # The models that contain `last` are not frozen as a whole: only
            # their layers up to `last` are.
            if row.layer not in last.ancestors and not row.is_input:
                chosen.append(row)
    unique: dict[int, _Row] = {}
    for row in chosen:
        unique.setdefault(id(row.layer), row)
    return list(unique.values())


def _apply_flags(model: Any, target: dict[int, bool]) -> None:
    """Gives every layer its target flag with Keras's own setter.

    Setting a layer's flag also sets every layer inside it, so layers are set
    outermost first and each later one corrects what a cascade changed.
    """
    for layer in _all_layers(model):
        want = target.get(id(layer))
        if want is not None and layer.trainable != want:
            layer.trainable = want


# --------------------------------------------------------------------------
# The flags in force: snapshots at compile time, and which compile applied what
# --------------------------------------------------------------------------


@dataclass
class _Snapshot:
    flags: weakref.WeakKeyDictionary  # layer -> trainable at compile time
    token: Any  # weakref to the compile-config object of that compile (or None)


@dataclass(frozen=True)
class _Claim:
    flag: bool
    owner: Any  # weakref to the model whose compile applied `flag`; None: by hand


_SNAPSHOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CLAIMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ORIGINAL_COMPILE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _token(model: Any) -> Any:
    config = getattr(model, "_compile_config", None)
    return weakref.ref(config) if config is not None else None


def _claim(layer: Any, flag: bool, owner: Any) -> None:
    _CLAIMS[layer] = _Claim(flag, weakref.ref(owner) if owner is not None else None)


def _record_compile(model: Any, flags: dict[Any, bool] | None = None, claim: str = "all") -> None:
    """Records the flags in force for the model's current compile.

    Args:
        model: a compiled model.
        flags: the flags at compile time (default: the current ones).
        claim: "all" when this compile applied every current flag (a compile
            just ran); "missing" to attribute only flags no compile has
            applied yet (a compile seen after the fact).

    """
    layers = _all_layers(model)
    if flags is None:
        flags = {layer: layer.trainable for layer in layers}
    snapshot = weakref.WeakKeyDictionary()
    for layer in layers:
        if layer in flags:
            snapshot[layer] = bool(flags[layer])
    _SNAPSHOTS[model] = _Snapshot(snapshot, _token(model))
    for layer in layers:
        if layer in snapshot and layer.trainable == snapshot[layer]:
            old = _CLAIMS.get(layer)
            if claim == "all" or old is None or old.flag != layer.trainable:
                _claim(layer, layer.trainable, model)


def _compiled_flags(model: Any) -> weakref.WeakKeyDictionary | None:
    """The flags in force for the model's last compile (None: not compiled)."""
    if not _is_compiled(model):
        return None
    snapshot = _SNAPSHOTS.get(model)
    config = getattr(model, "_compile_config", None)
    if snapshot is not None and (snapshot.token is None or snapshot.token() is config):
        return snapshot.flags
    # A compile kernelkit did not see. Keras 3.15+ records the flags in compile().
    state = getattr(model, "_compiled_trainable_state", None)
    if isinstance(state, dict):
        _record_compile(model, dict(state), claim="missing")
    else:
        _record_compile(model, None, claim="missing")
    return _SNAPSHOTS[model].flags


def _differences(model: Any, flags: Any) -> list[Any]:
    return [layer for layer in _all_layers(model) if flags.get(layer) != layer.trainable]


def _claimed_elsewhere(layer: Any, model: Any) -> bool:
    claim = _CLAIMS.get(layer)
    if claim is None or claim.owner is None or claim.flag != layer.trainable:
        return False
    owner = claim.owner()
    return owner is not None and owner is not model and _is_compiled(owner)


def _tracked(model: Any) -> bool:
    method = model.__dict__.get("compile")
    return getattr(getattr(method, "__func__", None), "_kernelkit_tracked", False)


def _raw_compile(model: Any, *args: Any, **kwargs: Any) -> Any:
    """``model.compile`` without kernelkit's wrapper (which would record a claim)."""
    original = _ORIGINAL_COMPILE.get(model)
    if original is None:
        compile_fn = type(model).compile.__get__(model)
    else:  # an instance-level compile that was there before track_compile
        func, bound = original
        compile_fn = types.MethodType(func, model) if bound else func
    return compile_fn(*args, **kwargs)


def _tracked_compile(self: Any, *args: Any, **kwargs: Any) -> Any:
    result = _raw_compile(self, *args, **kwargs)
    _record_compile(self, claim="all")
    return result


_tracked_compile._kernelkit_tracked = True  # type: ignore[attr-defined]


def track_compile(model: Any) -> None:
    """Records the trainable flags in force each time ``model`` is compiled.

    Installs a wrapper of ``model.compile`` on this instance only (the class
    is untouched); :func:`untrack_compile` removes it. A copy made with
    ``copy.deepcopy`` is tracked on its own. If the model is already
    compiled, the flags of that compile are recorded now (read from Keras
    3.15+'s own record, so changes made since are still seen). Calling it
    again does nothing. The session calls it when a model is registered.

    Args:
        model: a ``keras.Model``.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.

    Example:
        >>> track_compile(model)  # doctest: +SKIP
        >>> model.compile(optimizer="adam", loss="mse")  # recorded  # doctest: +SKIP

    """
    _check_model(model, "track_compile")
    if not _tracked(model):
        original = model.__dict__.get("compile")
        if original is not None:
            # Unbound, so that this weak-keyed table holds no reference to the model.
            bound = getattr(original, "__self__", None) is model
            _ORIGINAL_COMPILE[model] = (original.__func__ if bound else original, bound)
        # A bound method (not a closure) so that copy.deepcopy rebinds it.
        model.compile = types.MethodType(_tracked_compile, model)
    _compiled_flags(model)


def untrack_compile(model: Any) -> None:
    """Removes the wrapper :func:`track_compile` installed (no-op if none).

    Args:
        model: a ``keras.Model``.

    """
    _check_model(model, "untrack_compile")
    if not _tracked(model):
        return
    original = _ORIGINAL_COMPILE.pop(model, None)
    if original is not None:
        func, bound = original
        model.compile = types.MethodType(func, model) if bound else func
    else:
        del model.compile


# --------------------------------------------------------------------------
# Recompiling with the model's own configuration
# --------------------------------------------------------------------------


def _check_recompilable(model: Any) -> None:
    if type(model).compile is not keras.Model.compile:
        raise ValueError(
            f"kernelkit can't recompile {model.name!r}: {type(model).__name__} overrides "
            f"compile(); pass recompile=False and call its compile(...) yourself."
        )
    if getattr(model, "_compile_config", None) is None:
        raise ValueError(
            f"kernelkit can't recompile {model.name!r}: Keras kept no record of its "
            f"compile(); pass recompile=False and compile it yourself."
        )


def _strategy_scope(model: Any) -> Any:
    # TensorFlow: optimizer variables belong in the model's strategy scope.
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None:
        return strategy.scope()
    # JAX: in the distribution the model was registered with (its %%kmodel cell's), so that
    # a new optimizer's variables lie on the model's devices (else fit fails: "incompatible
    # devices for jitted computation").
    from .strategy import scope_for

    return scope_for(model)


def _clone_optimizer(optimizer: Any) -> Any:
    return type(optimizer).from_config(optimizer.get_config())


def _is_variable(value: Any) -> bool:
    return isinstance(value, keras.Variable)


def _slot_list(value: Any, references: list[Any]) -> bool:
    """A list with one optimizer variable (or None) per model variable, aligned."""
    if not isinstance(value, (list, tuple)) or len(value) != len(references) or not value:
        return False
    pairs = [(slot, ref) for slot, ref in zip(value, references, strict=True) if slot is not None]
    return bool(pairs) and all(
        _is_variable(slot) and tuple(slot.shape) == tuple(ref.shape) for slot, ref in pairs
    )


def _optimizer_list(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(o, keras.optimizers.Optimizer) for o in value)
    )


def _copy_optimizer_state(old: Any, new: Any) -> tuple[int, int]:
    """Copies state from ``old`` to ``new`` (built); returns (kept, fresh) variable counts.

    Keras optimizers keep per-variable slots in lists aligned with the
    variables they were built for (``_momentums[i]`` for variable ``i``), and
    scalars (``iterations``, the loss scale) as plain attributes. Both are
    matched by attribute name, so custom optimizers that follow the same
    convention are covered too; anything else starts fresh.
    """
    old_vars = list(getattr(old, "_trainable_variables", []))
    new_vars = list(getattr(new, "_trainable_variables", []))
    old_index = {id(v): i for i, v in enumerate(old_vars)}
    pairs = [(j, old_index[id(v)]) for j, v in enumerate(new_vars) if id(v) in old_index]
    new_attrs = vars(new)
    for name, old_value in vars(old).items():
        if name in ("_variables", "_trainable_variables"):
            continue
        new_value = new_attrs.get(name)
        if _is_variable(old_value) and _is_variable(new_value):
            if (
                tuple(old_value.shape) == tuple(new_value.shape)
                and old_value.dtype == new_value.dtype
            ):
                new_value.assign(old_value)
        elif _slot_list(old_value, old_vars) and _slot_list(new_value, new_vars):
            for j, i in pairs:
                if old_value[i] is not None and new_value[j] is not None:
                    new_value[j].assign(old_value[i])
        elif isinstance(old_value, keras.optimizers.Optimizer) and isinstance(
            new_value, keras.optimizers.Optimizer
        ):
            _copy_optimizer_state(old_value, new_value)  # LossScaleOptimizer's inner one
        elif (
            _optimizer_list(old_value)
            and _optimizer_list(new_value)
            and len(old_value) == len(new_value)
        ):
            # MultiOptimizer (kernelkit.layer_lrs): one inner optimizer per layer group, in
            # the order of its config, each with slots for its own variables.
            for old_inner, new_inner in zip(old_value, new_value, strict=True):
                _copy_optimizer_state(old_inner, new_inner)
    return len(pairs), len(new_vars) - len(pairs)


@queued_during_fit
def recompile(model: Any, *, optimizer_state: Literal["keep", "reset"] = "keep") -> RecompileInfo:
    """Compiles ``model`` again with its own compile configuration.

    The optimizer (class and hyper-parameters), losses, loss_weights,
    metrics, weighted metrics, steps_per_execution, jit_compile and
    run_eagerly are those of the model's last ``compile()``. See the module
    docstring for the optimizer-state policy.

    Args:
        model: a compiled ``keras.Model``.
        optimizer_state: "keep" (default) carries ``iterations`` and the slot
            variables of the variables that stay trainable over to the new
            optimizer; "reset" starts the optimizer from scratch.

    Returns:
        A :class:`RecompileInfo` (its repr is one line).

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: the model was never compiled, or its class overrides
            ``compile()``, or ``optimizer_state`` is unknown.

    Example:
        >>> model.get_layer("base").trainable = False  # doctest: +SKIP
        >>> kernelkit.recompile(model)  # doctest: +SKIP
        recompiled 'model' (Adam state kept for 2 variables)

    """
    _check_model(model, "recompile")
    if optimizer_state not in ("keep", "reset"):
        raise ValueError(f"optimizer_state must be 'keep' or 'reset'; got {optimizer_state!r}.")
    if not _is_compiled(model):
        raise ValueError(
            f"model {model.name!r} was never compiled: call model.compile(...) first "
            f"(kernelkit.recompile reuses that configuration)."
        )
    _check_recompilable(model)
    return _recompile(model, optimizer_state)


def _recompile(model: Any, optimizer_state: str = "keep", claim: str = "all") -> RecompileInfo:
    config = dict(model._compile_config.config)
    old = model.optimizer
    LossScale = keras.optimizers.LossScaleOptimizer
    had_state = bool(getattr(old, "built", False))
    with _strategy_scope(model):
        given = config.get("optimizer", old)
        if had_state or getattr(given, "built", False):
            # A built optimizer only accepts the variables it was built for.
            config["optimizer"] = _clone_optimizer(given)
        else:
            config["optimizer"] = given
        # compile() wraps the optimizer in a LossScaleOptimizer (mixed
        # precision) only if it did so the first time.
        config["auto_scale_loss"] = isinstance(old, LossScale)
        _raw_compile(model, **config)
        kept, fresh = 0, 0
        if had_state and optimizer_state == "keep":
            model.optimizer.build(model.trainable_variables)
            kept, fresh = _copy_optimizer_state(old, model.optimizer)
    _record_compile(model, claim=claim)
    name = type(getattr(model.optimizer, "inner_optimizer", model.optimizer)).__name__
    return RecompileInfo(model.name, name, optimizer_state, kept, fresh, had_state)


# --------------------------------------------------------------------------
# The public API
# --------------------------------------------------------------------------


@queued_during_fit
def set_trainable(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None,
    trainable: bool,
    *,
    up_to: LayerSpec | None = None,
) -> FreezeReport:
    """Sets ``trainable`` on layers and says what changed; never recompiles.

    Setting a nested model's flag sets every layer inside it (Keras
    semantics). Unfreezing a layer inside a frozen nested model also
    unfreezes that model's own flag, leaving its other layers as they were,
    so that the layer really trains. Every name is checked before any flag
    changes: on error the model is untouched.

    Args:
        model: a ``keras.Model``.
        layers: what to change: a name, an index into ``model.layers``, a glob
            pattern ("block3_*"), a path into a nested model ("base/conv2"),
            a layer, or a list of these. None with ``up_to=None``: every layer.
        trainable: the new flag.
        up_to: also every layer before (and including) this one, in model
            order; for a path into a nested model, the layers before that
            model and the nested model's layers up to the named one.

    Returns:
        A :class:`FreezeReport`; ``needs_recompile`` says whether the flags
        now differ from those the model was compiled with.

    Raises:
        TypeError: ``model`` is not a ``keras.Model`` or a layer spec has the
            wrong type.
        ValueError: a layer is not found (the message lists the closest
            names), an index is out of range, or ``up_to`` matches several.

    Example:
        >>> plan = kernelkit.set_trainable(model, "block3_*", False)  # doctest: +SKIP
        >>> plan.needs_recompile  # doctest: +SKIP
        True

    """
    return _set_trainable(model, layers, trainable, up_to, "set_trainable")


def _set_trainable(model: Any, layers: Any, trainable: bool, up_to: Any, fn: str) -> FreezeReport:
    """set_trainable's body; ``fn`` is the public function the user called, for its lines."""
    _check_model(model, fn)
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable must be True or False; got {trainable!r}.")
    rows = list(_rows(model))
    targets = _targets(model, rows, layers, up_to, fn)
    compiled_flags = _compiled_flags(model)  # snapshot before any change
    before = parameter_counts(model)
    everything = _all_layers(model)
    old = {id(layer): layer.trainable for layer in everything}
    target = dict(old)
    for row in targets:
        for inner in row.layer._flatten_layers(include_self=True, recursive=True):
            target[id(inner)] = trainable
        if trainable:
            for outer in (model, *row.ancestors):
                target[id(outer)] = True
    _apply_flags(model, target)
    for layer in everything:
        if layer.trainable != old[id(layer)]:
            _claim(layer, layer.trainable, None)  # applied by no compile yet
    changed = [r for r in rows if not r.is_input and r.layer.trainable != old[id(r.layer)]]
    changed += [r for r in targets if r not in rows and r.layer.trainable != old[id(r.layer)]]
    compiled = compiled_flags is not None
    needs = compiled and bool(_differences(model, compiled_flags))
    if not compiled:
        note = "model not compiled yet: the flags apply when you compile it"
    elif needs:
        note = "not recompiled yet: call kernelkit.recompile(model) before fit"
    else:
        note = "no recompile needed: the flags in force are unchanged"
    return FreezeReport(
        model=model.name,
        trainable=trainable,
        changed=tuple(r.path for r in changed),
        trainable_params=(before[0], parameter_counts(model)[0]),
        non_trainable_params=(before[1], parameter_counts(model)[1]),
        compiled=compiled,
        needs_recompile=needs,
        note=note,
        layers=tuple(r.layer for r in changed),
        summary=_short_list(
            _changed_items(
                rows + [r for r in targets if r not in rows], {id(r.layer) for r in changed}
            )
        ),
    )


def _change(
    model: Any, layers: Any, trainable: bool, up_to: Any, recompile: bool, fn: str
) -> FreezeReport:
    _check_model(model, fn)
    if recompile and _is_compiled(model):
        _check_recompilable(model)  # before any flag changes
    report = _set_trainable(model, layers, trainable, up_to, fn)
    if recompile and report.needs_recompile:
        info = _recompile(model)
        return dataclasses.replace(report, needs_recompile=False, recompiled=True, note=str(info))
    if not recompile and report.needs_recompile:
        note = "not recompiled (recompile=False): call kernelkit.recompile(model) before fit"
        return dataclasses.replace(report, note=note)
    return report


@queued_during_fit
def freeze(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    *,
    up_to: LayerSpec | None = None,
    recompile: bool = True,
) -> FreezeReport:
    """Freezes layers (``trainable=False``) and recompiles so that it takes effect.

    The recompile reuses the model's compile configuration and keeps the
    optimizer state of the layers that stay trainable (see the module
    docstring; ``kernelkit.recompile(model, optimizer_state="reset")`` starts
    it from scratch). A model that was never compiled just gets the flags.
    A frozen ``BatchNormalization`` also runs in inference mode (it uses and
    no longer updates its moving statistics), as in Keras.

    Args:
        model: a ``keras.Model``.
        layers: a name, an index into ``model.layers``, a glob pattern
            ("block3_*"), a path into a nested model ("base/conv2"), a layer,
            or a list of these. None (with ``up_to=None``): every layer.
        up_to: also freeze every layer before (and including) this one.
        recompile: recompile now if the flags in force changed (default).

    Returns:
        A :class:`FreezeReport`: the changed layers, trainable and
        non-trainable parameter counts before and after, and what was
        compiled.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``, or a spec's type is wrong.
        ValueError: a layer is not found (the closest names are listed), an
            index is out of range, or the model can't be recompiled (its class
            overrides ``compile()``: pass ``recompile=False``).

    Example:
        >>> kernelkit.freeze(model, "base")  # doctest: +SKIP
        FreezeReport for model 'model'
          froze:         base (+4 inside)
          trainable:     1,203 -> 99 params
          non-trainable:     0 -> 1,104 params
          compile:       recompiled 'model' (Adam state kept for 2 variables)

    """
    return _change(model, layers, False, up_to, recompile, "freeze")


@queued_during_fit
def unfreeze(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    *,
    up_to: LayerSpec | None = None,
    recompile: bool = True,
) -> FreezeReport:
    """Unfreezes layers (``trainable=True``) and recompiles so that it takes effect.

    Same arguments as :func:`freeze`. The newly trainable variables start
    with fresh optimizer state; the others keep theirs. Set a lower learning
    rate for fine-tuning afterwards with
    ``model.optimizer.learning_rate = 1e-4``.

    Args:
        model: a ``keras.Model``.
        layers: as for :func:`freeze`; None (with ``up_to=None``): every layer.
        up_to: also unfreeze every layer before (and including) this one.
        recompile: recompile now if the flags in force changed (default).

    Returns:
        A :class:`FreezeReport`.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``, or a spec's type is wrong.
        ValueError: as for :func:`freeze`.

    Example:
        >>> kernelkit.unfreeze(model, "base/block2_*")  # doctest: +SKIP

    """
    return _change(model, layers, True, up_to, recompile, "unfreeze")


def ensure_trainable_applied(model: Any, name: str | None = None) -> str | None:
    """Makes the next fit train with the flags the model should train with.

    Called by the session before each fit of a registered model. If layers'
    flags were changed (by hand, by the API with ``recompile=False``, ...)
    since the model's last compile, it recompiles with the model's own
    configuration and returns the line to show. Flags that another model's
    later compile applied (the GAN pattern) are set back to this model's
    compile-time values instead (see the module docstring). Starts tracking
    the model's compiles (:func:`track_compile`) if not yet done.

    Args:
        model: a ``keras.Model``.
        name: what the returned line calls the model (the session passes the
            variable it is registered under); defaults to ``model.name``.

    Returns:
        "kernelkit: recompiled 'm' because 2 layers changed trainable (base
        frozen)" when it recompiled; None otherwise (also for a model that
        was never compiled: its fit raises Keras's own error).

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.

    Example:
        >>> model.get_layer("base").trainable = False  # doctest: +SKIP
        >>> kernelkit.freezing.ensure_trainable_applied(model)  # doctest: +SKIP
        "kernelkit: recompiled 'model' because 1 layer changed trainable (base frozen)"

    """
    _check_model(model, "ensure_trainable_applied")
    if not _is_compiled(model):
        return None
    track_compile(model)
    flags = _compiled_flags(model)
    assert flags is not None
    diff = _differences(model, flags)
    if not diff:
        return None
    claimed = [layer for layer in diff if layer in flags and _claimed_elsewhere(layer, model)]
    if claimed:
        target = {id(layer): layer.trainable for layer in _all_layers(model)}
        for layer in claimed:
            target[id(layer)] = flags[layer]
        _apply_flags(model, target)
        for layer in claimed:
            _claim(layer, layer.trainable, model)
        diff = _differences(model, flags)
        if not diff:
            return None
    rows = list(_rows(model))
    # A nested model whose layers all changed is named alone: "(base frozen)".
    items = [item.split(" (+")[0] for item in _changed_items(rows, {id(layer) for layer in diff})]
    if not items:  # only the model's own flag, or layers inside custom layers
        items = [layer.name for layer in diff if layer is not model][:3] or ["the model itself"]
    by_item = {r.path: r.layer for r in rows}
    by_item.update({layer.name: layer for layer in diff})
    by_item["the model itself"] = model
    for layer in diff:
        _claim(layer, layer.trainable, None)  # changed by hand: every model applies it
    try:
        _check_recompilable(model)
    except ValueError as err:
        count = _plural(len(items), "layer")
        return f"kernelkit: trainable changed on {count} of {model.name!r}, but {err}"
    # Flags changed by hand stay unclaimed, so every model that shares those
    # layers applies them at its next fit too.
    _recompile(model, claim="missing")

    def trainable(item: str) -> bool:
        return bool(by_item[item].trainable)

    frozen = [item for item in items if not trainable(item)]
    thawed = [item for item in items if trainable(item)]
    parts = [_short_list(frozen, 3) + " frozen"] if frozen else []
    parts += [_short_list(thawed, 3) + " unfrozen"] if thawed else []
    return (
        f"kernelkit: recompiled {name or model.name!r} because {_plural(len(items), 'layer')} "
        f"changed trainable ({'; '.join(parts)})"
    )


# --------------------------------------------------------------------------
# What the Layers panel shows (plain data; the view holds no Keras logic)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One row of the Layers panel.

    Attributes:
        path: "head", "base/conv2".
        name: the layer's name.
        type: the layer's class name.
        depth: 0 for the model's layers, 1 inside a nested model, ...
        output_shape: "(None, 8, 8, 16)", or "?" when unknown.
        params: parameter count of the layer (all its weights).
        trainable: the layer's own ``trainable`` flag.
        batch_norm: whether the layer is a ``BatchNormalization``.
        nested: layers inside when the layer is a nested model, else 0.
        frozen_inside: how many of those have ``trainable=False``.

    """

    path: str
    name: str
    type: str
    depth: int
    output_shape: str
    params: int
    trainable: bool
    batch_norm: bool = False
    nested: int = 0
    frozen_inside: int = 0


@dataclass(frozen=True)
class LayersSummary:
    """The model as the Layers panel shows it (see :func:`describe`)."""

    model: str
    rows: tuple[LayerInfo, ...]
    trainable_params: int
    non_trainable_params: int
    compiled: bool


def _output_shape(layer: Any) -> str:
    # Keras's summary reads the same place (keras/src/utils/summary_utils.py).
    try:
        nodes = layer._inbound_nodes
        if nodes:
            tensors = keras.tree.flatten(nodes[0].output_tensors)
            shapes = [str(tuple(t.shape)).replace(",)", ")") for t in tensors]
            return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"
    except Exception:
        pass
    return "?"


def describe(model: Any) -> LayersSummary:
    """Describes the model's layers for the Layers panel (plain data).

    Args:
        model: a ``keras.Model``.

    Returns:
        A :class:`LayersSummary`: a row per layer (InputLayers left out;
        nested models followed by their layers) and the parameter totals.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.

    """
    _check_model(model, "describe")
    rows = []
    all_rows = [r for r in _rows(model) if not r.is_input]
    for row in all_rows:
        layer = row.layer
        inside = [r for r in all_rows if r.path.startswith(row.path + "/")]
        rows.append(
            LayerInfo(
                path=row.path,
                name=layer.name,
                type=type(layer).__name__,
                depth=row.depth,
                output_shape=_output_shape(layer),
                params=count_parameters(layer.weights),
                trainable=bool(layer.trainable),
                batch_norm=isinstance(layer, keras.layers.BatchNormalization),
                nested=len(inside) if isinstance(layer, keras.Model) else 0,
                frozen_inside=sum(1 for r in inside if not r.layer.trainable),
            )
        )
    trainable, non_trainable = parameter_counts(model)
    return LayersSummary(model.name, tuple(rows), trainable, non_trainable, _is_compiled(model))
