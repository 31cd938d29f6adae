"""Intermediate-layer activations for any kind of Keras model, as NumPy arrays.

The usual Keras recipe, ``keras.Model(model.inputs, [l.output for l in
model.layers])``, needs symbolic ``layer.output`` tensors. Subclassed models
have none, a nested model's inner layers have outputs relative to the nested
model's own inputs, and a shared layer's ``output`` is only its first call.
kernelkit records outputs during a real forward pass instead:

1. Each target layer's ``call`` is replaced, on that instance only, by a thin
   wrapper that appends what the original returns (Keras itself wraps
   ``build`` per instance the same way). Every wrapper is removed in
   ``finally``, so the model is unchanged afterwards even when the pass fails.
2. The wrapped pass runs once per batch for all targets together. On the
   TensorFlow backend it is traced once by ``tf.function`` (the wrappers are
   only present while tracing), on JAX by ``jax.jit`` over a stateless call;
   other backends run it eagerly. The compiled pass is cached per model, so
   repeated extractions cost what ``model.predict`` costs.

That one mechanism covers Sequential, Functional, nested and subclassed models,
shared layers (one record per call) and multi-output layers.

Example:
    >>> import keras, numpy as np, kernelkit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
    ...                           keras.layers.Dense(1, name="out")])
    >>> acts = kernelkit.extract(model, np.zeros((10, 4)))
    >>> {name: a.shape for name, a in acts.items()}
    {'hidden': (10, 3), 'out': (10, 1)}

"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from .freezing import check_model, layer_list
from .paths import into_sublayers, walk

__all__ = ["LayerStats", "Scan", "extract", "layer_names", "scan"]

#: What ``extract`` gives for one layer: an array, a list of arrays (one per
#: output of a multi-output layer), or a list with one such entry per call of a
#: shared layer.
Activation = np.ndarray | list


# --------------------------------------------------------------------------------------
# Which layers a model has, by path


def _walk(model: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer]]:
    """Every layer inside ``model`` once, depth first, as ``(path, layer)`` (``kernelkit.paths``).

    Extraction enters custom layers too; RNN cells run once per time step inside
    a backend loop (tf.while_loop, lax.scan), and wrappers such as TimeDistributed
    map their inner layer the same way: tensors made in there cannot leave the
    loop, so those layers are extracted as a whole.
    """
    return [(p.path, p.layer) for p in walk(model, enter=into_sublayers)]


def layer_names(model: keras.layers.Layer) -> list[str]:
    """The names ``extract`` accepts for ``model``: nested layers as paths.

    Args:
        model: a Keras model of any kind.

    Returns:
        Paths such as ``"dense"`` or ``"base/conv2"``, depth first in the order
        the model tracks its layers (input layers are left out).

    Example:
        >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")],
        ...                         name="base")
        >>> layer_names(keras.Sequential([base, keras.layers.Dense(1, name="out")]))
        ['base', 'base/d', 'out']

    """
    return [path for path, _ in _walk(model)]


def _resolve(
    model: keras.layers.Layer,
    layers: str | keras.layers.Layer | Sequence[Any] | None,
    fn: str = "extract",
) -> tuple[list[tuple[str, keras.layers.Layer]], bool]:
    """The target layers and whether the user named them (True) or wants all."""
    everything = _walk(model)
    layers = layer_list(
        layers, fn, kinds=(str, keras.layers.Layer), expected="a layer name or path, or a layer"
    )
    if layers is None:
        return everything, False
    by_path = dict(everything)
    path_of = {id(layer): path for path, layer in everything}
    targets: list[tuple[str, keras.layers.Layer]] = []
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            path = path_of.get(id(item))
            if path is None:
                raise ValueError(
                    f"layer {item.name!r} is not part of model {model.name!r}; "
                    "pass a layer of this model or its name"
                )
        elif isinstance(item, str):
            path = item
            if path not in by_path:
                raise ValueError(_unknown_layer_message(model, path, list(by_path)))
        else:
            raise TypeError(
                f"layers must hold layer names or layers, got {type(item).__name__}: {item!r}"
            )
        if path not in (p for p, _ in targets):
            targets.append((path, by_path[path]))
    if not targets:
        raise ValueError("layers is empty: pass layer names, or layers=None for every layer")
    return targets, True


def _unknown_layer_message(model: keras.layers.Layer, name: str, paths: list[str]) -> str:
    # A bare name that lives in a nested model is the likeliest slip: offer its path first.
    leaf = name.rsplit("/", 1)[-1]
    nested = [p for p in paths if p.endswith("/" + leaf)]
    close = difflib.get_close_matches(name, paths, n=3, cutoff=0.5)
    hints = list(dict.fromkeys(nested + close))[:3]
    hint = f"; closest: {', '.join(repr(h) for h in hints)}" if hints else ""
    return (
        f"model {model.name!r} has no layer {name!r}{hint} "
        f"(kernelkit.extraction.layer_names(model) lists all {len(paths)})"
    )


# --------------------------------------------------------------------------------------
# Recording outputs during a forward pass


@contextlib.contextmanager
def _recording(targets: Sequence[tuple[str, keras.layers.Layer]]) -> Iterator[list[list[Any]]]:
    """Wraps each target's ``call`` to record ``[path, outputs]``; undoes it on exit.

    Keras's ``Layer.__call__`` looks ``self.call`` up on the instance on every
    call, so an instance attribute shadows the class method for that one layer.
    It is set with ``object.__setattr__`` because it is not layer state: Keras's
    attribute tracker need not see it. Records are in call-start order, so an
    enclosing model comes before its inner layers.
    """
    records: list[list[Any]] = []
    installed: list[tuple[keras.layers.Layer, str, Any]] = []
    try:
        for path, layer in targets:
            # Quantized layers run `quantized_call` instead of `call`.
            name = "quantized_call" if getattr(layer, "quantization_mode", None) else "call"
            own = vars(layer).get(name, _MISSING)
            object.__setattr__(layer, name, _recorder(getattr(layer, name), path, records))
            installed.append((layer, name, own))
        yield records
    finally:
        for layer, name, own in reversed(installed):
            if own is _MISSING:
                object.__delattr__(layer, name)
            else:
                object.__setattr__(layer, name, own)


_MISSING = object()


def _recorder(original: Any, path: str, records: list[list[Any]]) -> Any:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        record = [path, None]
        records.append(record)  # before the call: nested layers record after their parent
        outputs = original(*args, **kwargs)
        record[1] = outputs
        return outputs

    return call


@dataclass(frozen=True)
class _Entry:
    """Where one recorded tensor came from."""

    path: str
    call: int  # 0 for the first call of the layer in the pass
    output: int  # index among the layer's flattened outputs
    calls: int  # how many times the layer ran in the pass
    outputs: int  # how many tensors the layer returned

    @property
    def label(self) -> str:
        """``path``, plus ``" (call k)"`` for shared layers, ``"[i]"`` for multi-output."""
        label = self.path
        if self.calls > 1:
            label += f" (call {self.call + 1})"
        if self.outputs > 1:
            label += f"[{self.output}]"
        return label


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


class _Pass:
    """One forward pass of ``model`` that returns the targets' outputs as a flat list.

    The pass is compiled where the backend allows it; ``layout`` describes the
    flat list and is known after the first call.
    """

    def __init__(
        self,
        model: keras.layers.Layer,
        targets: Sequence[tuple[str, keras.layers.Layer]],
        training: bool,
    ) -> None:
        self.layout: list[_Entry] | None = None
        self._backend = keras.backend.backend()
        # A weak reference: the pass is cached per model and must not keep it alive.
        model_ref = weakref.ref(model)
        targets = list(targets)

        def forward(batch: Any) -> list[Any]:
            # In compiled mode this body runs only while tracing.
            with _recording(targets) as records:
                model_ref()(batch, training=training)  # type: ignore[misc]
            return self._flatten(records)

        self._forward = forward
        self._run: Any = None
        self._state: list[Any] | None = None
        self._stateless = False  # True for the JAX pass: it never writes variables
        if getattr(model, "run_eagerly", False):
            # The user compiled it with run_eagerly=True: it may not trace.
            self._run = forward
        elif self._backend == "jax":
            import jax

            variables = list(model.variables)

            def stateless(values: list[Any], batch: Any) -> tuple[list[Any], list[Any]]:
                # Inside jit, variables must come in as arguments. A stateless
                # scope maps them; the updates a training-mode pass makes
                # (BatchNormalization statistics, dropout seeds) come back as
                # values, carried from batch to batch and then dropped.
                mapping = list(zip(variables, values, strict=True))
                with keras.StatelessScope(state_mapping=mapping) as scope:
                    flat = forward(batch)
                return flat, [scope.get_current_value(v) for v in variables]

            jitted = jax.jit(stateless)

            def run(batch: Any) -> list[Any]:
                if self._state is None:
                    self._state = [v.value for v in variables]
                flat, state = jitted(self._state, batch)
                if training:  # inference leaves the state as it was
                    self._state = state
                return flat

            self._run = run
            self._stateless = True
        elif self._backend != "tensorflow":
            self._run = forward  # eager (torch, numpy)

    def begin(self) -> None:
        """Starts a run over new data: the JAX pass reads the variables afresh."""
        self._state = None

    def _compile_tf(self, batch: Any) -> Any:
        import tensorflow as tf

        # A signature with any batch size: one trace serves full and last batches.
        signature = keras.tree.map_structure(
            lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), batch
        )
        # TF counts retracing per code object and warns when one traces often;
        # every pass shares `forward`'s code but traces only once, so a partial
        # (which has no code object) gives each pass its own count.
        return tf.function(functools.partial(self._forward), input_signature=[signature])

    def _flatten(self, records: list[list[Any]]) -> list[Any]:
        calls: dict[str, int] = {}
        for path, _ in records:
            calls[path] = calls.get(path, 0) + 1
        seen: dict[str, int] = {}
        layout: list[_Entry] = []
        flat: list[Any] = []
        for path, outputs in records:
            call = seen.get(path, 0)
            seen[path] = call + 1
            leaves = [leaf for leaf in keras.tree.flatten(outputs) if _is_tensor(leaf)]
            for i, leaf in enumerate(leaves):
                layout.append(_Entry(path, call, i, calls[path], len(leaves)))
                flat.append(leaf)
        self.layout = layout
        return flat

    def dispatch(self, batch: Any) -> list[Any]:
        """Starts the pass on ``batch``; returns the outputs as backend tensors."""
        if self._run is None:
            self._run = self._compile_tf(batch)
        outputs = self._run(batch)
        for tensor in outputs:
            # JAX: start the copy to the host now, behind the next batch's compute.
            start_copy = getattr(tensor, "copy_to_host_async", None)
            if start_copy is not None:
                start_copy()
        return list(outputs)

    def fetch(self, outputs: list[Any]) -> list[np.ndarray]:
        """The outputs of ``dispatch`` as NumPy arrays (waits for them)."""
        if self._backend == "jax":
            import jax

            return list(jax.device_get(outputs))  # one wait for all, not one per tensor
        if self._backend == "tensorflow":
            import tensorflow as tf

            # np.asarray views a dense CPU tensor without copying (on a GPU it is the copy
            # to the host); convert_to_numpy copied it, and the column copies it again.
            return [
                np.asarray(t) if isinstance(t, tf.Tensor) else keras.ops.convert_to_numpy(t)
                for t in outputs
            ]
        return [keras.ops.convert_to_numpy(t) for t in outputs]

    def __call__(self, batch: Any) -> list[np.ndarray]:
        return self.fetch(self.dispatch(batch))

    @property
    def writes_state(self) -> bool:
        """Whether a training-mode pass writes to the model's variables."""
        return not self._stateless


# A few cached passes per model, reused while the model, its variables, the
# request and the input signature stay the same (model.predict caches its
# predict function likewise).
_cache: weakref.WeakKeyDictionary[Any, dict[Any, _Pass]] = weakref.WeakKeyDictionary()
_CACHE_SIZE = 4


def _pass_for(
    model: keras.layers.Layer,
    targets: Sequence[tuple[str, keras.layers.Layer]],
    training: bool,
    x: Any,
) -> _Pass:
    key = (
        tuple((path, id(layer)) for path, layer in targets),
        # Layers and trainable flags (BatchNormalization's mode depends on it when traced).
        tuple((id(layer), layer.trainable) for _, layer in _walk(model)),
        tuple(id(v) for v in model.variables),
        bool(training),
        str(keras.tree.map_structure(lambda a: (a.shape[1:], str(a.dtype)), x)),
    )
    try:
        passes = _cache.setdefault(model, {})
    except TypeError:  # a model that cannot be weakly referenced: no caching
        passes = {}
    forward = passes.pop(key, None) or _Pass(model, targets, training)
    passes[key] = forward  # most recently used last
    while len(passes) > _CACHE_SIZE:
        passes.pop(next(iter(passes)))
    return forward


# --------------------------------------------------------------------------------------
# Input checks and batching


def _as_array(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(value))


def _standardize(model: keras.layers.Layer, x: Any) -> tuple[Any, int]:
    """``x`` as NumPy leaves in the structure the model takes, and its sample count."""
    if x is None:
        raise ValueError(
            "x is None: pass sample inputs, e.g. kernelkit.extract(model, x_test[:100])"
        )
    if isinstance(x, Mapping):
        x = {key: _as_array(value) for key, value in x.items()}
        leaves = list(x.values())
    elif isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") for v in x):
        x = [_as_array(value) for value in x]
        leaves = x
    else:
        x = _as_array(x)
        leaves = [x]
    if not leaves or any(leaf.ndim == 0 for leaf in leaves):
        raise ValueError(
            "x has no sample axis: pass an array (or a list/dict of arrays) of samples"
        )
    counts = {int(leaf.shape[0]) for leaf in leaves}
    if len(counts) > 1:
        raise ValueError(
            f"the inputs in x have different numbers of samples ({sorted(counts)}): "
            "give every input the same first dimension"
        )
    count = counts.pop()
    if count == 0:
        raise ValueError("x is empty (0 samples): pass at least one sample")
    _check_inputs(model, x)
    return x, count


def _symbolic_inputs(model: keras.layers.Layer) -> list[Any] | None:
    try:
        inputs = model.inputs  # Functional and built Sequential models only
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _shape(shape: Sequence[Any]) -> str:
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


def _check_inputs(model: keras.layers.Layer, x: Any) -> None:
    """Compares ``x`` with the model's declared inputs, where it has any."""
    inputs = _symbolic_inputs(model)
    if inputs is None:
        return  # a subclassed model declares nothing: the pass reports mismatches
    names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(inputs)]
    if isinstance(x, dict):
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise ValueError(
                f"x has keys {sorted(x)} but model {model.name!r} takes inputs {names}: "
                "key x by input name"
            )
        pairs = [(name, tensor, x[name]) for name, tensor in zip(names, inputs, strict=True)]
    else:
        given = x if isinstance(x, list) else [x]
        if len(given) != len(inputs):
            raise ValueError(
                f"x holds {len(given)} input(s) but model {model.name!r} takes {len(inputs)} "
                f"({', '.join(names)}): pass a list or a dict keyed by input name"
            )
        pairs = list(zip(names, inputs, given, strict=True))
    for name, tensor, value in pairs:
        expected = tuple(tensor.shape)
        got = value.shape
        ok = len(expected) == len(got) and all(
            e is None or e == g for e, g in zip(expected[1:], got[1:], strict=True)
        )
        if not ok:
            where = f" for input {name!r}" if len(inputs) > 1 else ""
            raise ValueError(
                f"x has shape {_shape(got)}{where} but model {model.name!r} expects "
                f"{_shape(expected)} (None = any size)"
            )


def _batches(x: Any, count: int, batch_size: int) -> Iterator[tuple[Any, int]]:
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield keras.tree.map_structure(lambda a, s=start, e=stop: a[s:e], x), stop - start


def _check_args(model: Any, batch_size: Any, max_samples: Any, fn: str = "extract") -> None:
    check_model(model, fn, layer_ok=True)
    if not model.built:
        raise ValueError(
            f"model {model.name!r} has not been built yet: call it once on data (model(x[:1])) "
            "or build it (model.build(input_shape)); extract never builds a model itself"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")


def _describe(x: Any) -> str:
    shapes = [_shape(leaf.shape) for leaf in keras.tree.flatten(x)]
    return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"


def _gist(error: BaseException) -> str:
    """The line of an error that says what went wrong, without tracing noise."""
    text = str(error)
    # Keras puts the reason in bold inside its "Exception encountered" frame.
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", text, re.DOTALL)
    if bold:
        return bold.group(1).strip().splitlines()[0]
    lines = [line.strip() for line in text.splitlines()]
    # tf.function prefixes "in user code:" and a traceback; the last line that
    # names an error is the one that matters.
    named = [line for line in lines if re.match(r"^\w+(Error|Exception):", line)]
    if named:
        return named[-1]
    rest = [line for line in lines if line and not line.startswith(("in user code", "File "))]
    return rest[0] if rest else type(error).__name__


def _built_for(model: keras.layers.Layer) -> str:
    """Says which input shapes the model was built for, where Keras recorded them."""
    inputs = _symbolic_inputs(model)
    if inputs is not None:
        shapes = [_shape(tuple(t.shape)) for t in inputs]
    else:
        # A subclassed model declares no inputs; Keras keeps the shapes of the
        # first call it was built with (private, so read defensively).
        recorded = getattr(model, "_build_shapes_dict", None) or {}
        shapes = [_shape((None, *tuple(v)[1:])) for v in recorded.values() if isinstance(v, tuple)]
    return f" (the model was built for {', '.join(shapes)})" if shapes else ""


def _run(
    model: keras.layers.Layer,
    x: Any,
    targets: list[tuple[str, keras.layers.Layer]],
    *,
    batch_size: int,
    training: bool,
    count: int,
) -> Iterator[tuple[list[_Entry], list[np.ndarray], int]]:
    """Yields ``(layout, outputs, batch_length)`` for each batch of the first ``count`` samples."""
    forward = _pass_for(model, targets, training, x)
    # A training-mode pass updates BatchNormalization's moving statistics and
    # dropout seeds; put them back so that extracting leaves no trace.
    saved = (
        [(v, keras.ops.convert_to_numpy(v.value)) for v in model.non_trainable_variables]
        if training and forward.writes_state
        else []
    )
    forward.begin()

    def guarded(step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except Exception as error:
            raise ValueError(
                f"model {model.name!r} failed on x of shape {_describe(x)}"
                f"{_built_for(model)}: {_gist(error)}"
            ) from error

    # Batch k+1 is dispatched before batch k is copied to NumPy: on an
    # accelerator the copy then overlaps the next batch's compute. For every
    # layer of a model, the copy (not the compute) is most of the time there.
    pending: tuple[list[Any], int] | None = None
    from .reporting import task  # what draws it is injected (a notebook line)

    progress = task(f"extract {model.name}", -(-count // batch_size), "batches")
    try:
        for done, (batch, length) in enumerate(_batches(x, count, batch_size)):
            outputs = guarded(forward.dispatch, batch)
            if pending is not None:
                yield forward.layout or [], guarded(forward.fetch, pending[0]), pending[1]
            pending = (outputs, length)
            progress.update(done)
        if pending is not None:
            yield forward.layout or [], guarded(forward.fetch, pending[0]), pending[1]
    finally:
        progress.close()
        for variable, value in saved:
            variable.assign(value)


# --------------------------------------------------------------------------------------
# Public API


def extract(
    model: keras.layers.Layer,
    x: Any,
    layers: str | keras.layers.Layer | Sequence[Any] | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    max_samples: int | None = None,
) -> dict[str, Activation]:
    """Returns the outputs of a model's layers for ``x``, as NumPy arrays.

    One forward pass per batch serves every requested layer. Works for
    Sequential, Functional, nested and subclassed models alike; the model is
    left exactly as it was (weights, trainable flags, ``call`` methods), also
    when the pass fails.

    What each value holds:

    * a layer with one output, called once: an array ``(samples, ...)``;
    * a layer with several outputs (an RNN with ``return_state=True``, say):
      a list of arrays, in the order the layer returns them;
    * a layer called several times in one pass (a shared layer, a layer a
      subclassed model calls in a loop): a list with one entry per call, in
      call order, each entry as above.

    Nested layers are named by path, ``"base/conv2"``. With ``layers=None``
    every layer that runs is returned, in the order the layers start running;
    a layer that does not run for this input (an unused branch) is left out.
    RNN cells and layers inside wrappers such as ``TimeDistributed`` run
    inside backend loops and are only available as their enclosing layer.

    Memory: activations are computed batch by batch and only the requested
    samples are kept; with ``max_samples=n`` only the batches that hold the
    first ``n`` samples run at all.

    Args:
        model: a built Keras model (called once on data, or built with an input shape).
        x: the model's input: an array, or for a multi-input model a list of
            arrays in input order or a dict keyed by input name.
        layers: a layer name or path, a layer, or a list of them; ``None`` for all.
        batch_size: samples per forward pass.
        training: run layers in training mode (dropout active, batch statistics
            in BatchNormalization). Moving statistics are restored afterwards.
        max_samples: keep only the first ``max_samples`` samples of ``x``.

    Returns:
        A dict from layer path to its activations (see above).

    Raises:
        ValueError: unknown layer, an unbuilt model, empty ``x``, ``x`` whose
            shape does not fit the model, or a forward pass that fails.
        TypeError: ``model`` is not a Keras model, or ``layers`` holds other objects.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 1)),
        ...                           keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        ...                           keras.layers.Flatten(name="flat"),
        ...                           keras.layers.Dense(10, name="logits")])
        >>> acts = extract(model, np.zeros((5, 8, 8, 1)), layers=["conv", "logits"])
        >>> acts["conv"].shape, acts["logits"].shape
        ((5, 6, 6, 4), (5, 10))

    """
    _check_args(model, batch_size, max_samples)
    targets, named = _resolve(model, layers)
    x, count = _standardize(model, x)
    if max_samples is not None:
        count = min(count, max_samples)

    layout: list[_Entry] = []
    columns: list[_Column] = []
    for batch_layout, outputs, length in _run(
        model, x, targets, batch_size=batch_size, training=training, count=count
    ):
        layout = batch_layout  # the same every batch
        if not columns:
            columns = [_Column(count) for _ in outputs]
        for column, output in zip(columns, outputs, strict=True):
            column.add(output, length)

    if named:
        ran = {entry.path for entry in layout}
        for path, _ in targets:
            if path not in ran:
                raise ValueError(
                    f"layer {path!r} did not run in the forward pass of model {model.name!r} "
                    "on this input, so it has no output to extract"
                )
    order = [path for path, _ in targets] if named else None
    return _assemble(layout, [column.result() for column in columns], order)


class _Column:
    """Collects one recorded tensor's batches into one preallocated array."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.filled = 0
        self.array: np.ndarray | None = None
        self.chunks: list[np.ndarray] = []  # outputs without a sample axis

    def add(self, output: np.ndarray, length: int) -> None:
        if self.chunks or output.ndim == 0 or output.shape[0] != length:
            self.chunks.append(output)  # not per sample: kept per batch
            return
        if self.array is None:
            self.array = np.empty((self.count, *output.shape[1:]), dtype=output.dtype)
        self.array[self.filled : self.filled + length] = output
        self.filled += length

    def result(self) -> np.ndarray:
        if self.chunks:
            # A layer whose output has no sample axis: one row per batch.
            return np.stack(self.chunks)
        assert self.array is not None
        return self.array


def _assemble(
    layout: list[_Entry], arrays: list[np.ndarray], order: list[str] | None
) -> dict[str, Activation]:
    """Groups flat records back into one value per layer path (see ``extract``)."""
    grouped: dict[str, list[list[np.ndarray]]] = {}
    for entry, array in zip(layout, arrays, strict=True):
        calls = grouped.setdefault(entry.path, [[] for _ in range(entry.calls)])
        calls[entry.call].append(array)
    result: dict[str, Activation] = {}
    for path in order if order is not None else list(grouped):
        per_call: list[Any] = [outs[0] if len(outs) == 1 else outs for outs in grouped[path]]
        result[path] = per_call[0] if len(per_call) == 1 else per_call
    return result


@dataclass(frozen=True)
class LayerStats:
    """Summary of one layer's activations over every sample seen.

    Attributes:
        shape: the shape of one sample's activation.
        samples: how many samples went in.
        mean: the mean of all values.
        std: the standard deviation of all values.
        min: the smallest value.
        max: the largest value.
        zero_fraction: the fraction of values that are exactly 0 (ReLUs that did not fire).
        dead_fraction: the fraction of units (last axis: features or channels) that
            were exactly 0 for every sample and position: dead ReLUs.

    """

    shape: tuple[int, ...]
    samples: int
    mean: float
    std: float
    min: float
    max: float
    zero_fraction: float
    dead_fraction: float


class _Accumulator:
    """Running sums for LayerStats, one batch at a time (float64, so no overflow)."""

    def __init__(self) -> None:
        self.samples = 0
        self.values = 0
        self.total = 0.0
        self.squares = 0.0
        self.zeros = 0
        self.low = math.inf
        self.high = -math.inf
        self.alive: np.ndarray | None = None
        self.shape: tuple[int, ...] = ()

    def add(self, output: np.ndarray, length: int) -> None:
        values = np.asarray(output, dtype=np.float64)
        per_sample = values.ndim >= 1 and values.shape[0] == length
        self.shape = tuple(values.shape[1:] if per_sample else values.shape)
        self.samples += length
        if values.size == 0:
            return
        self.values += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())
        self.zeros += int(values.size - np.count_nonzero(values))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        units = values.reshape(-1, values.shape[-1]) if values.ndim >= 2 else values.reshape(1, -1)
        alive = np.any(units != 0, axis=0)
        self.alive = alive if self.alive is None else (self.alive | alive)

    def result(self) -> LayerStats:
        n = max(self.values, 1)
        mean = self.total / n
        variance = max(self.squares / n - mean * mean, 0.0)
        dead = 0.0 if self.alive is None else float(1.0 - self.alive.mean())
        return LayerStats(
            shape=self.shape,
            samples=self.samples,
            mean=mean,
            std=math.sqrt(variance),
            min=self.low if self.values else math.nan,
            max=self.high if self.values else math.nan,
            zero_fraction=self.zeros / n if self.values else math.nan,
            dead_fraction=dead,
        )


@dataclass
class Scan:
    """Statistics over all of ``x`` plus the activations of its first samples.

    Attributes:
        labels: one per recorded tensor, in the order the layers start running:
            the layer path, with ``" (call k)"`` for the k-th call of a shared layer
            and ``"[i]"`` for output ``i`` of a multi-output layer.
        paths: the layer path behind each label.
        samples: label -> activations of the first ``max_samples`` samples.
        stats: label -> LayerStats over every sample of ``x``.
        count: how many samples ``x`` had.

    """

    labels: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, LayerStats] = field(default_factory=dict)
    count: int = 0


def scan(
    model: keras.layers.Layer,
    x: Any,
    layers: str | keras.layers.Layer | Sequence[Any] | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    max_samples: int = 16,
) -> Scan:
    """One pass over all of ``x``: per-layer statistics, and the first samples' activations.

    This is what ``FeatureView`` shows: memory stays at one batch of
    activations plus ``max_samples`` samples, however large ``x`` is.

    Args:
        model: a built Keras model.
        x: as for ``extract``.
        layers: as for ``extract``.
        batch_size: samples per forward pass.
        training: as for ``extract``.
        max_samples: how many leading samples to keep the activations of.

    Returns:
        A ``Scan``.

    Raises:
        ValueError: as ``extract``.

    Example:
        >>> s = scan(model, np.ones((100, 8, 8, 1)), max_samples=4)
        >>> s.samples["conv"].shape, s.stats["conv"].samples
        ((4, 6, 6, 4), 100)

    """
    _check_args(model, batch_size, max_samples, "extraction.scan")
    targets, _ = _resolve(model, layers, "extraction.scan")
    x, count = _standardize(model, x)
    keep = min(max_samples, count)
    result = Scan(count=count)
    columns: list[_Column] = []
    accumulators: list[_Accumulator] = []
    seen = 0
    layout: list[_Entry] = []
    for batch_layout, outputs, length in _run(
        model, x, targets, batch_size=batch_size, training=training, count=count
    ):
        layout = batch_layout  # the same every batch
        if not columns:
            columns = [_Column(keep) for _ in outputs]
            accumulators = [_Accumulator() for _ in outputs]
        take = min(length, keep - seen)
        for column, accumulator, output in zip(columns, accumulators, outputs, strict=True):
            accumulator.add(output, length)
            if take > 0:
                per_sample = output.ndim >= 1 and output.shape[0] == length
                column.add(output[:take] if per_sample else output, take)
        seen += length
    for entry, column, accumulator in zip(layout, columns, accumulators, strict=True):
        result.labels.append(entry.label)
        result.paths[entry.label] = entry.path
        result.samples[entry.label] = column.result()
        result.stats[entry.label] = accumulator.result()
    return result
