"""Stateful recurrent layers: find them, reset them, summarize them, guard fits.

Keras 3 removed ``Model.reset_states()`` (keras-team/keras#18467); only RNN
layers still have ``reset_state()``. This module resets every stateful
recurrent layer of a model (nested models, both directions of a
``Bidirectional`` wrapper and ``ConvLSTM`` layers included), reports their
state tensors, offers a ``ResetStates`` callback (fastai's ``ModelResetter``
for Keras) and checks a fit's arguments against the rules of stateful
training before Keras runs it.

Everything here uses ``keras.ops`` / numpy, never TensorFlow directly, so it
also works with ``KERAS_BACKEND=jax``. No UI is imported.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ._fitting import queued_during_fit
from .data import num_samples as _num_samples
from .data import split_samples
from .freezing import check_model, layer_list
from .paths import into_sublayers, walk

#: The auto-reset policies: never, at the start of each epoch, once per fit.
EVERY = ("never", "epoch", "fit")

#: Keras fit's batch size when ``batch_size`` is None and x is an array.
KERAS_DEFAULT_BATCH_SIZE = 32

__all__ = [
    "EVERY",
    "ResetStates",
    "StateRow",
    "StateSummary",
    "check_every",
    "check_stateful_fit",
    "fixed_batch_size",
    "reset_states",
    "state_summary",
    "stateful_layers",
]


# --------------------------------------------------------------------------
# Finding stateful layers
# --------------------------------------------------------------------------


def _is_stateful(layer: Any) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) and bool(
        getattr(layer, "stateful", False)
    )


def _all_layers(model: Any) -> list[tuple[str, Any]]:
    # The walk of kernelkit.paths: an RNN (or Bidirectional) is one unit, its cells and
    # its forward and backward copies are not reported on their own.
    return [(p.path, p.layer) for p in walk(model, enter=into_sublayers)]


def stateful_layers(model: Any) -> dict[str, Any]:
    """Returns the stateful recurrent layers of ``model`` by path.

    A path is the chain of layer names from the model down, joined by "/"
    ("inner/lstm" is the layer "lstm" of the nested model "inner"). A
    ``Bidirectional`` wrapper counts as one layer (both its directions).

    Args:
        model: a Keras model (or any layer).

    Returns:
        An ordered dict ``{path: layer}``; empty when nothing is stateful.

    Example:
        >>> list(stateful_layers(model))  # doctest: +SKIP
        ['lstm', 'inner/gru']

    """
    return {path: layer for path, layer in _all_layers(model) if _is_stateful(layer)}


def _state_labels(layer: Any, count: int) -> list[str]:
    cell = type(getattr(layer, "cell", None)).__name__
    if count == 2 and cell in ("LSTMCell", "ConvLSTMCell"):
        return ["h", "c"]  # Keras's memory state and carry state
    if count == 1:
        return ["h"]
    return [f"state{i}" for i in range(count)]


def _state_variables(layer: Any) -> list[tuple[str, Any]]:
    """``(label, variable)`` for each state tensor; empty until the layer is built."""
    if isinstance(layer, keras.layers.Bidirectional):
        sides = (("forward", layer.forward_layer), ("backward", layer.backward_layer))
        return [
            (f"{side}.{label}", var)
            for side, inner in sides
            for label, var in _state_variables(inner)
        ]
    states = getattr(layer, "states", None)
    if states is None:
        return []
    # Stacked cells nest their states: flatten so that each variable is seen.
    variables = keras.tree.flatten(states)
    return list(zip(_state_labels(layer, len(variables)), variables, strict=True))


def _sync(model: Any) -> None:
    # The JAX trainer keeps variable values outside the variables during an
    # epoch (Model.jax_state_sync docs). Syncing first makes a reset made
    # from a callback mid-epoch land, and makes reading the state possible.
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def fixed_batch_size(model: Any) -> int | None:
    """Returns the batch size the model's stateful layers are built for.

    Args:
        model: a Keras model.

    Returns:
        The batch size, or None when no stateful layer is built yet.

    Raises:
        ValueError: when stateful layers were built for different batch sizes.

    """
    sizes: dict[str, int] = {}
    for path, layer in stateful_layers(model).items():
        variables = _state_variables(layer)
        if variables:
            sizes[path] = int(variables[0][1].shape[0])
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"stateful layers of model {model.name!r} have different batch sizes {sizes}; "
            "build them all from one keras.Input(batch_shape=...)."
        )
    return next(iter(sizes.values()), None)


# --------------------------------------------------------------------------
# Resetting
# --------------------------------------------------------------------------


def _layer_names(layers: Any, fn: str, found: dict[str, Any] | None = None) -> list[str] | None:
    """A ``layers`` argument as a list of names (None stays None); one line on a wrong type."""
    return layer_list(
        layers,
        fn,
        kinds=(str,),
        expected="names or paths (str) of stateful layers",
        hint=f"stateful layers: {list(found)}" if found else "",
    )


def _resolve(
    model: Any, found: dict[str, Any], names: str | Sequence[str], fn: str = "reset_states"
) -> list[str]:
    """Maps names or paths to stateful-layer paths; raises before anything changes."""
    chosen: list[str] = []
    for name in _layer_names(names, fn, found) or []:
        if name in found:
            matches = [name]
        else:
            matches = [path for path in found if path.rsplit("/", 1)[-1] == name]
        if len(matches) > 1:
            raise ValueError(f"layer name {name!r} is ambiguous: pass one of the paths {matches}.")
        if not matches:
            all_paths = [path for path, _ in _all_layers(model)]
            if name in all_paths or name in {p.rsplit("/", 1)[-1] for p in all_paths}:
                raise ValueError(
                    f"layer {name!r} is not a stateful recurrent layer; "
                    f"the stateful layers are {list(found)}."
                )
            candidates = list(dict.fromkeys([*found, *(p.rsplit("/", 1)[-1] for p in found)]))
            close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.4)
            hint = f"closest names: {close}" if close else f"stateful layers: {list(found)}"
            raise ValueError(f"no stateful layer named {name!r} in model {model.name!r}; {hint}.")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


@queued_during_fit
def reset_states(model: Any, layers: str | Sequence[str] | None = None) -> list[str]:
    """Resets the state of stateful recurrent layers to zeros.

    Keras 3's replacement for the removed ``Model.reset_states()``: it finds
    every stateful ``RNN`` (LSTM, GRU, SimpleRNN, ConvLSTM1D/2D/3D, custom
    cells) and stateful ``Bidirectional`` wrapper, in nested models too.

    Args:
        model: a Keras model.
        layers: None for all stateful layers, or names / paths ("lstm",
            "inner/lstm") of the ones to reset.

    Returns:
        The paths of the layers that were reset. A layer not built yet has no
        state to reset, and is listed all the same.

    Raises:
        ValueError: the model has no stateful layer, or a name is unknown,
            ambiguous or not stateful (nothing is reset then).
        TypeError: ``model`` is not a Keras model, or ``layers`` is neither a
            name, a path nor a list of them (one line listing the stateful layers).

    Example:
        >>> kernelkit.reset_states(model)  # doctest: +SKIP
        ['lstm']

    """
    check_model(model, "reset_states")
    found = stateful_layers(model)
    if not found:
        raise ValueError(
            f"model {model.name!r} has no stateful recurrent layer "
            "(create the RNN with stateful=True to keep state between batches)."
        )
    paths = list(found) if layers is None else _resolve(model, found, layers)
    _sync(model)
    for path in paths:
        for _label, variable in _state_variables(found[path]):
            variable.assign(keras.ops.zeros_like(variable.value))
    return paths


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class StateRow:
    """One state tensor of a stateful layer.

    Attributes:
        path: the layer's path ("inner/lstm").
        layer: the layer's class name ("LSTM").
        state: which tensor: "h" (memory state), "c" (carry state),
            "forward.h" for a Bidirectional, "state0"... otherwise; "" when the
            layer is not built yet.
        shape: the tensor's shape, None when not built.
        norm: the L2 (Frobenius) norm of the tensor, None when not built.

    """

    path: str
    layer: str
    state: str
    shape: tuple[int, ...] | None
    norm: float | None


def format_norm(norm: float | None) -> str:
    """Formats a norm for display: 4 significant digits, "-" when unknown."""
    return "-" if norm is None else f"{norm:.4g}"


def format_shape(shape: tuple[int, ...] | None) -> str:
    """Formats a shape as "(32, 16)", "-" when unknown."""
    return "-" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


class StateSummary:
    """The state tensors of a model's stateful layers (``state_summary``'s result).

    Iterating gives ``StateRow`` values; ``repr`` is a plain-text table and
    ``_repr_html_`` a static HTML table (it reads without a kernel).

    Attributes:
        model_name: the model's name.
        rows: one ``StateRow`` per state tensor (one per unbuilt layer).
        batch_size: the fixed batch size, None when unknown.

    """

    def __init__(self, model_name: str, rows: Sequence[StateRow], batch_size: int | None):
        self.model_name = model_name
        self.rows = tuple(rows)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[StateRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> StateRow:
        return self.rows[index]

    @property
    def layers(self) -> list[str]:
        """The paths of the stateful layers, in model order."""
        return list(dict.fromkeys(row.path for row in self.rows))

    def norms(self) -> dict[tuple[str, str], float | None]:
        """``{(path, state): norm}`` for every row."""
        return {(row.path, row.state): row.norm for row in self.rows}

    def title(self) -> str:
        """One line: model, number of stateful layers, batch size."""
        count = len(self.layers)
        batch = (
            "batch size not fixed yet"
            if self.batch_size is None
            else (f"batch size {self.batch_size}")
        )
        plural = "" if count == 1 else "s"
        return f"States of model {self.model_name!r}: {count} stateful layer{plural}, {batch}"

    def _cells(self) -> list[list[str]]:
        return [
            [row.path, row.layer, row.state or "-", format_shape(row.shape), format_norm(row.norm)]
            for row in self.rows
        ]

    def __repr__(self) -> str:
        if not self.rows:
            return f"States of model {self.model_name!r}: no stateful layer"
        header = ["layer", "class", "state", "shape", "norm"]
        table = [header, *self._cells()]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in table
        ]
        return "\n".join([self.title(), *lines])

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(repr(self))}</p>"
        head = "".join(
            f"<th style='text-align:left;padding:0 8px'>{h}</th>"
            for h in ("layer", "class", "state", "shape", "norm")
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:{'right' if i == 4 else 'left'};padding:0 8px'>"
                f"{html.escape(c)}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
            for cells in self._cells()
        )
        return (
            f"<div class='kernelkit-states'><b>{html.escape(self.title())}</b>"
            f"<table style='font-family:monospace;font-size:12px'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )


def state_summary(model: Any) -> StateSummary:
    """Summarizes the state tensors of every stateful layer of ``model``.

    Args:
        model: a Keras model.

    Returns:
        A ``StateSummary``: iterable ``StateRow`` values (path, class, state
        name, shape, L2 norm), with a text and an HTML table as reprs. It is
        empty for a model without stateful layers.

    Raises:
        TypeError: ``model`` is not a Keras model.

    Example:
        >>> kernelkit.state_summary(model)  # doctest: +SKIP
        States of model 'sequential': 1 stateful layer, batch size 32
        layer  class  state  shape     norm
        lstm   LSTM   h      (32, 32)  3.142
        lstm   LSTM   c      (32, 32)  6.029

    """
    check_model(model, "state_summary")
    found = stateful_layers(model)
    if found:
        _sync(model)
    rows: list[StateRow] = []
    for path, layer in found.items():
        variables = _state_variables(layer)
        if not variables:
            rows.append(StateRow(path, type(layer).__name__, "", None, None))
        for label, variable in variables:
            value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)
            rows.append(
                StateRow(
                    path,
                    type(layer).__name__,
                    label,
                    tuple(int(d) for d in value.shape),
                    float(np.sqrt(np.sum(np.square(value)))),
                )
            )
    return StateSummary(model.name, rows, fixed_batch_size(model) if found else None)


# --------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------


def check_every(every: str) -> None:
    """Checks an auto-reset policy: one of :data:`EVERY`.

    Raises:
        ValueError: naming the policies allowed.
    """
    if every not in EVERY:
        raise ValueError(f"every must be one of {list(EVERY)}, got {every!r}.")


class ResetStates(keras.callbacks.Callback):
    """Resets stateful layers automatically, as fastai's ``ModelResetter`` does.

    With ``every="epoch"`` the state is zeroed at the start of each epoch and
    before each validation run (validation sequences do not continue the
    training ones); with ``every="fit"`` once, when the fit begins.
    ``every="never"`` does nothing (so a session can always add one).

    Args:
        every: "epoch", "fit" or "never".
        layers: None for all stateful layers, or names / paths to reset.

    Attributes:
        resets: how many times this callback has reset the state.

    Raises:
        ValueError: for an unknown ``every``; at the start of a fit, when the
            model has no stateful layer or a name is unknown.

    Example:
        >>> model.fit(x, y, batch_size=32, shuffle=False,
        ...           callbacks=[kernelkit.ResetStates(every="epoch")])  # doctest: +SKIP

    """

    def __init__(self, every: str = "epoch", layers: str | Sequence[str] | None = None):
        super().__init__()
        check_every(every)
        _layer_names(layers, "ResetStates")  # a wrong type now, not at the first epoch
        self.every = every
        self.layers = layers
        self.resets = 0

    def __repr__(self) -> str:
        layers = "" if self.layers is None else f", layers={self.layers!r}"
        return f"ResetStates(every={self.every!r}{layers})"

    def _reset(self) -> None:
        reset_states(self.model, self.layers)
        self.resets += 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Resets once, for ``every="fit"``."""
        # With every="epoch", on_epoch_begin follows at once: a bad layer name
        # fails there, before the first step.
        if self.every == "fit":
            self._reset()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Resets before each epoch, for ``every="epoch"``."""
        if self.every == "epoch":
            self._reset()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Resets before validation (and ``evaluate``), for ``every="epoch"``."""
        if self.every == "epoch":
            self._reset()


# --------------------------------------------------------------------------
# Guards for fits
# --------------------------------------------------------------------------


def _leaves(x: Any) -> list[Any]:
    try:
        return list(keras.tree.flatten(x))
    except Exception:  # an unusual container: treat it as opaque data
        return [x]


def _is_dataset_like(x: Any) -> bool:
    # tf.data datasets, PyDatasets, generators, torch loaders: Keras ignores
    # `shuffle` and `batch_size` for them (the data decides).
    return x is not None and _num_samples(x) is None


def _dataset_batch(x: Any) -> int | None:
    spec = getattr(x, "element_spec", None)
    if spec is None:
        return None
    leaves = _leaves(spec)
    shape = getattr(leaves[0], "shape", None) if leaves else None
    if shape is None or len(shape) == 0 or shape[0] is None:
        return None
    return int(shape[0])


def _input_shape_hint(x: Any, batch: int) -> str:
    leaves = _leaves(x) if x is not None else []
    shape = getattr(leaves[0], "shape", None) if leaves else None
    if shape is not None and len(shape) > 1:
        dims = ", ".join(str(int(d)) for d in shape[1:])
        return f"keras.Input(batch_shape=({batch}, {dims}))"
    return f"keras.Input(batch_shape=({batch}, ...))"


def _trim_hint(what: str, n: int, batch: int, fix: str = "") -> str:
    extra = n % batch
    keep = n - extra
    fix = fix or f"trim {extra} sample{'s' if extra != 1 else ''} or pad to {keep + batch}"
    return (
        f"{what} has {n} samples, not a multiple of the fixed batch size {batch}: the last batch "
        f"would hold {extra}; {fix}."
    )


def check_stateful_fit(
    model: Any,
    x: Any = None,
    *,
    batch_size: int | None = None,
    shuffle: bool | str = True,
    steps_per_epoch: int | None = None,
    **fit_kwargs: Any,
) -> None:
    """Checks a fit's arguments against the rules of stateful training.

    Call it with the arguments of ``model.fit`` before fitting. For a model
    with stateful recurrent layers, consecutive batches must continue each
    other's sequences: the samples keep their order (``shuffle=False``;
    Keras's default is True), every batch has the batch size the state was
    built for (Keras's default is 32), and so the sample count must be a
    multiple of it. ``validation_data`` / ``validation_split`` are checked
    the same way. Models without stateful layers pass at once.

    For datasets and generators Keras ignores ``shuffle`` and ``batch_size``;
    only a dataset's static batch dimension is checked. On the JAX backend a
    correct fit is refused too: Keras 3 drops RNN state updates there, so the
    layer would silently train as if it were stateless.

    Args:
        model: the Keras model about to be fitted.
        x: the fit's ``x`` (arrays, dicts/lists of arrays, or a dataset).
        batch_size: the fit's ``batch_size`` (None means Keras's 32).
        shuffle: the fit's ``shuffle`` (Keras's default is True).
        steps_per_epoch: the fit's ``steps_per_epoch``; when it stops before
            the last, partial batch, the sample count may be uneven.
        **fit_kwargs: the fit's other arguments (``validation_data``,
            ``validation_split``, ``validation_batch_size``,
            ``validation_steps`` are checked; others are ignored).

    Raises:
        ValueError: one line naming the broken rule and the fix. Nothing is
            changed: the model, its weights and its states stay as they were.

    Example:
        >>> check_stateful_fit(model, x, batch_size=32, shuffle=False)  # doctest: +SKIP

    """
    found = stateful_layers(model)
    if not found:
        return
    first = next(iter(found))
    batch = fixed_batch_size(model)
    dataset = _is_dataset_like(x)
    if batch is None:
        wanted = batch_size or _dataset_batch(x) or KERAS_DEFAULT_BATCH_SIZE
        raise ValueError(
            f"stateful layer {first!r} has no fixed batch size: start the model with "
            f"{_input_shape_hint(x, wanted)} (Keras 3 dropped batch_input_shape)."
        )
    if dataset:
        data_batch = _dataset_batch(x)
        if data_batch is not None and data_batch != batch:
            raise ValueError(
                f"the dataset's batches hold {data_batch} samples but stateful layer {first!r} "
                f"has a fixed batch size of {batch}; batch it with .batch({batch}, "
                "drop_remainder=True)."
            )
        _check_backend(first)
        return
    if shuffle is not False:
        given = "shuffle=True is Keras's default" if shuffle is True else f"shuffle={shuffle!r}"
        raise ValueError(
            f"fit would shuffle the samples ({given}), but stateful layer {first!r} carries each "
            "sample's state into the same row of the next batch, so the order matters; "
            "pass shuffle=False."
        )
    if batch_size is None:
        if batch != KERAS_DEFAULT_BATCH_SIZE:
            raise ValueError(
                f"batch_size is not given, so Keras uses {KERAS_DEFAULT_BATCH_SIZE}, but stateful "
                f"layer {first!r} has a fixed batch size of {batch}; pass batch_size={batch}."
            )
    elif batch_size != batch:
        raise ValueError(
            f"batch_size={batch_size} differs from the fixed batch size {batch} of stateful "
            f"layer {first!r}; pass batch_size={batch}."
        )
    n = _num_samples(x)
    split = float(fit_kwargs.get("validation_split") or 0.0)
    if n is not None:
        n_train = split_samples(n, split)[0]
        whole = steps_per_epoch is not None and steps_per_epoch <= n_train // batch
        if n_train % batch and not whole:
            extra = n_train % batch
            if split:
                raise ValueError(
                    _trim_hint(
                        "the training part of x (validation_split)",
                        n_train,
                        batch,
                        "change validation_split or the number of samples",
                    )
                )
            raise ValueError(
                _trim_hint(
                    "x",
                    n,
                    batch,
                    f"trim {extra} sample{'s' if extra != 1 else ''} "
                    f"(x[:{n - extra}]) or pad to {n - extra + batch}",
                )
            )
        if split and (n - n_train) % batch:
            raise ValueError(
                _trim_hint(
                    "the validation part of x (validation_split)",
                    n - n_train,
                    batch,
                    "change validation_split or the number of samples",
                )
            )
    _check_validation(fit_kwargs, batch, first)
    _check_backend(first)


def _check_backend(first: str) -> None:
    # Keras 3 (checked up to 3.15) creates RNN state variables untracked
    # (`RNN._create_state_variables` is wrapped in
    # `no_automatic_dependency_tracking`), so they are not among the model's
    # non_trainable_variables. The JAX trainer's stateless, jitted steps only
    # thread those through: the state a step computes is dropped, and the
    # state read is the value seen when the step was traced. fit, predict
    # and train_on_batch thus never carry state from batch to batch on JAX.
    if keras.backend.backend() == "jax":
        raise ValueError(
            f"stateful layer {first!r} would not keep its state between batches: Keras 3's JAX "
            "backend drops RNN state updates in fit, predict and train_on_batch; use "
            "KERAS_BACKEND=tensorflow for stateful training."
        )


def _check_validation(fit_kwargs: dict[str, Any], batch: int, first: str) -> None:
    data = fit_kwargs.get("validation_data")
    if data is None:
        return
    val_x = data[0] if isinstance(data, (tuple, list)) else data
    val_batch = fit_kwargs.get("validation_batch_size")
    if _is_dataset_like(val_x):
        data_batch = _dataset_batch(val_x)
        if data_batch is not None and data_batch != batch:
            raise ValueError(
                f"validation_data's batches hold {data_batch} samples but stateful layer "
                f"{first!r} has a fixed batch size of {batch}; batch it with .batch({batch}, "
                "drop_remainder=True)."
            )
        return
    if val_batch is not None and val_batch != batch:
        raise ValueError(
            f"validation_batch_size={val_batch} differs from the fixed batch size {batch} of "
            f"stateful layer {first!r}; pass validation_batch_size={batch} (or leave it out)."
        )
    n = _num_samples(val_x)
    steps = fit_kwargs.get("validation_steps")
    if n is not None and n % batch and not (steps is not None and steps <= n // batch):
        raise ValueError(_trim_hint("validation_data", n, batch))
