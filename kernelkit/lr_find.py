"""A learning-rate finder that leaves the model exactly as it was.

:func:`lr_find` trains the model for a bounded number of steps while the
learning rate grows exponentially from ``start_lr`` to ``end_lr``, records
the loss of every step, stops early when the smoothed loss diverges (a
multiple of its minimum), and suggests a rate. Then it puts everything
back: the weights (BatchNormalization statistics and seed states
included), the optimizer's state and ``iterations``, its learning rate or
schedule, and the model's compiled train function. The next ``fit`` runs as
if the finder had never run (the tests compare the weights bit for bit).

How the rate moves
    The sweep is a ``LearningRateSchedule`` of the optimizer's own
    ``iterations``, swapped in for the optimizer's learning rate for the
    sweep only. A schedule is evaluated inside the compiled train step, so
    the rate changes at every step on every backend, under
    ``steps_per_execution`` and in a distribution strategy, where assigning
    ``optimizer.learning_rate`` from a callback would not: Keras's JAX
    trainer holds the optimizer's variables in its own state during an
    epoch. A learning-rate schedule the model was compiled with is replaced
    the same way and put back afterwards.

What a step's loss is
    Keras's logs carry the running mean of the epoch's loss, weighted by
    batch size. The finder recovers each step's own loss from two
    consecutive means, with the exact batch sizes for arrays (the last,
    shorter batch included) and equal weights for datasets and generators.
    Under ``steps_per_execution=k`` a point is the mean over its k steps.

The suggestion
    ``suggestion`` is the rate of the steepest descent of the smoothed loss
    against log10 of the rate, searched before the loss reaches its minimum;
    ``minimum / 10`` (the rate of the smallest smoothed loss divided by ten)
    is given as a second opinion. The smoothing is a bias-corrected
    exponential moving average, as in fastai's finder, and each smoothed
    value is placed at the rate it describes: an average of the last steps
    lags behind the rate by its centroid (``beta / (1 - beta)`` steps once
    it is warm). Unplaced, the smoothed curve is shifted towards larger
    rates, by four decades with fastai's ``beta=0.98`` over 100 steps, and
    so is its steepest point; measured on digits, the unplaced suggestion of
    plain SGD did not train at all. ``beta=0.8`` (the default) follows a
    100-step sweep closely; the divergence check uses the same average.

Layer groups (discriminative rates)
    A model with :func:`kernelkit.layer_lrs` in place trains with a
    ``MultiOptimizer``, one inner optimizer per group. The sweep scales every
    group by the same factor, so the groups keep the ratios of their rates
    (as fastai's finder does with discriminative rates): the swept rate is
    that of the reference group, the group with the highest rate among those
    that train (usually the head), and every other group runs at its ratio
    to it. The suggestion is the reference group's rate; ``found.rates`` and
    ``found.default`` are every group's rate at the same ratios, ready for
    ``kernelkit.layer_lrs(model, found.rates, default=found.default)``. A
    group's rate is read when the sweep starts (a schedule's current value).

Example:
    >>> found = kernelkit.lr_find(model, x, y, batch_size=64)  # doctest: +SKIP
    >>> model.optimizer.learning_rate = found.suggestion  # doctest: +SKIP

"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from . import _fitting, freezing
from .callback import _HISTORIES, LiveProgress
from .display import lr_find_view
from .history import RunHistory

#: The fewest recorded steps a suggestion is made from.
MIN_STEPS = 10

_DISPLAYS = ("auto", "widget", "text", "none")

# fit() arguments that describe the data and how it is batched: the sweep uses them.
_DATA_ARGS = ("batch_size", "sample_weight", "class_weight", "shuffle", "steps_per_epoch")
# fit() arguments the sweep leaves out (it validates nothing, saves nothing, reports itself).
_DROPPED_ARGS = (
    "epochs",
    "verbose",
    "callbacks",
    "validation_split",
    "validation_data",
    "initial_epoch",
    "validation_steps",
    "validation_batch_size",
    "validation_freq",
)


class LRFindError(ValueError):
    """lr_find could not run or could not suggest a rate: one line saying why."""


# --------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:.2e}"


@dataclass(frozen=True)
class LRFindResult:
    """What :func:`lr_find` measured and suggests (its repr is one line).

    Attributes:
        model: the name shown (the registered name or the model's own).
        suggestion: the suggested learning rate (the steepest descent of the
            smoothed loss).
        method: how ``suggestion`` was chosen, in words.
        steepest: the rate of the steepest descent of the smoothed loss.
        minimum: the rate at which the smoothed loss is smallest.
        min_over_10: ``minimum / 10``.
        lrs: the learning rate of every recorded step.
        losses: every recorded step's own loss.
        smoothed: the smoothed losses (bias-corrected moving average).
        smoothed_lrs: the rate each smoothed value describes (its step's
            rate, moved back by the average's delay).
        start_lr: the first rate of the sweep.
        end_lr: the last rate the sweep would have reached.
        steps: the steps asked for.
        stopped: why the sweep ended: "end" (all steps ran), "diverged",
            "user" (the Stop button or an interrupt) or "data" (the data ran
            out first).
        restored: True once the model was put back as it was.
        diverge: the multiple of its minimum at which the loss diverged.
        group: the reference group swept (the layer group with the highest
            rate, see :func:`kernelkit.layer_lrs`); None for one optimizer.
        ratios: ``(group, rate / the reference's rate)`` for every group, in
            the optimizer's order (the default group last); empty for one
            optimizer.
        default_group: the group of the layers in no group (``"rest"``), or None.

    """

    model: str
    suggestion: float
    method: str
    steepest: float
    minimum: float
    min_over_10: float
    lrs: tuple[float, ...] = field(repr=False)
    losses: tuple[float, ...] = field(repr=False)
    smoothed: tuple[float, ...] = field(repr=False)
    smoothed_lrs: tuple[float, ...] = field(repr=False)
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    stopped: str = "end"
    restored: bool = True
    diverge: float = 4.0
    group: str | None = None
    ratios: tuple[tuple[str, float], ...] = ()
    default_group: str | None = None

    @property
    def rates(self) -> dict[str, float]:
        """Each named group's suggested rate: the suggestion times its ratio.

        For :func:`kernelkit.layer_lrs`: ``layer_lrs(model, found.rates,
        default=found.default)`` gives every group its rate at the ratios the
        sweep kept. Empty for one optimizer.
        """
        return {
            name: self.suggestion * ratio
            for name, ratio in self.ratios
            if name != self.default_group
        }

    @property
    def default(self) -> float | None:
        """The suggested rate of the default group (layers in no group), or None."""
        for name, ratio in self.ratios:
            if name == self.default_group:
                return self.suggestion * ratio
        return None

    def groups_text(self) -> str:
        """How the layer groups were swept and what to pass back, in words ("" for one group)."""
        if self.group is None:
            return ""
        others = ", ".join(f"{n} x{r:.3g}" for n, r in self.ratios if n != self.group)
        rates = ", ".join(f"{n!r}: {_rate(r)}" for n, r in self.rates.items())
        default = self.default
        return (
            f"every group swept at its ratio to {self.group!r} ({others or 'no others'}): "
            f"layer_lrs(model, {{{rates}}}"
            + (f", default={_rate(default)}" if default is not None else "")
            + ")"
        )

    @property
    def ran(self) -> int:
        """How many steps were recorded."""
        return len(self.lrs)

    def stop_text(self) -> str:
        """Why the sweep ended, in words."""
        return {
            "end": "all steps ran",
            "diverged": f"stopped when the loss diverged ({self.diverge:g} x its minimum)",
            "user": "stopped by user",
            "data": "the data ran out",
        }.get(self.stopped, self.stopped)

    def summary(self) -> str:
        """The one-line ``text/plain`` of the final output."""
        head = f"kernelkit lr_find {self.model}: " if self.model else "kernelkit lr_find: "
        last = self.lrs[-1] if self.lrs else self.end_lr
        group = f" for group {self.group!r}" if self.group is not None else ""
        groups = f" · {self.groups_text()}" if self.group is not None else ""
        return (
            f"{head}suggested learning rate {_rate(self.suggestion)}{group} ({self.method}; "
            f"minimum / 10: {_rate(self.min_over_10)}){groups} · {self.ran} steps from "
            f"{_rate(self.start_lr)} to {_rate(last)}, {self.stop_text()}"
            + (" · model restored" if self.restored else "")
        )

    def __repr__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.summary())


# --------------------------------------------------------------------------
# The analysis (pure: lists in, numbers out)
# --------------------------------------------------------------------------


def smooth(losses: list[float] | tuple[float, ...], beta: float = 0.8) -> list[float]:
    """A bias-corrected exponential moving average of ``losses``.

    Args:
        losses: the per-step losses.
        beta: the weight of the past.

    Returns:
        The smoothed losses, one per input; the first equals the first loss.

    Example:
        >>> smooth([1.0, 1.0, 1.0])
        [1.0, 1.0, 1.0]

    """
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def delays(count: int, beta: float = 0.8) -> list[float]:
    """How many steps each smoothed value lags behind its step (the average's centroid).

    The bias-corrected average at step ``i`` weighs the loss of ``k`` steps
    back by ``beta ** k``, so it describes the rate of about ``delay`` steps
    earlier: ``sum(k * beta**k) / sum(beta**k)`` over its ``i`` terms.

    Args:
        count: the number of steps.
        beta: the weight of the past.

    Returns:
        One delay per step, in steps (0 for the first).

    Example:
        >>> delays(2, 0.5)
        [0.0, 0.3333333333333333]

    """
    out, weights, moments = [], 0.0, 0.0
    for i in range(count):
        weights += beta**i
        moments += i * beta**i
        out.append(moments / weights)
    return out


def at_rates(lrs: list[float] | tuple[float, ...], lags: list[float]) -> list[float]:
    """The rate each smoothed value describes: ``lags`` steps back, on the log scale.

    Args:
        lrs: the rate of every step.
        lags: the delay of every smoothed value, in steps (see :func:`delays`).

    Returns:
        One rate per step.

    """
    logs = [math.log(r) for r in lrs]
    out = []
    for i, lag in enumerate(lags):
        j = max(i - lag, 0.0)
        lo = math.floor(j)
        hi = min(lo + 1, len(logs) - 1)
        frac = j - lo
        out.append(math.exp((1 - frac) * logs[lo] + frac * logs[hi]))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """The steepest-descent rate and the rate of the minimum of a swept curve.

    The first tenth of the curve (at least 3 points) is where the loss
    starts: its median is the starting level and its spread the noise. The
    minimum is searched after it, and must lie below the start by more than
    1% and more than twice the noise, or the loss "never decreased" (a
    dip of one noisy batch is not a rate to suggest). The steepest descent
    is the most negative slope of the smoothed loss against log10 of the
    rate between the onset of the descent and the minimum (past the
    minimum the loss only climbs). The onset is the last point before the
    minimum still at the starting level (within half that margin), and not
    before the end of the first tenth: on a curve that stays flat for
    decades, as when a trained head is fine-tuned, a noisy dip on the flat
    part is not the descent.

    Args:
        lrs: the rates each smoothed value describes, increasing.
        smoothed: the smoothed losses, one per rate.

    Returns:
        (steepest, minimum).

    Raises:
        LRFindError: the loss never decreased, as above.

    Example:
        >>> suggest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.4, 2.0])
        (0.01, 0.1)

    """
    values = np.asarray(smoothed, dtype="float64")
    warm = min(max(3, len(values) // 10), len(values) - 1)
    start = float(np.median(values[:warm]))
    noise = float(np.std(values[:warm]))
    best = warm + int(np.nanargmin(values[warm:]))
    margin = max(0.01 * abs(start), 2 * noise)
    if not values[best] < start - margin:
        raise LRFindError(
            f"the loss never decreased from {start:.4g} (beyond its noise) between learning "
            f"rates {_rate(lrs[0])} and {_rate(lrs[-1])}: check the data, the loss and the "
            "model's output, or sweep more steps, larger batches or other rates "
            "(steps=, batch_size=, start_lr=, end_lr=)"
        )
    logs = np.log10(np.asarray(lrs[: best + 1], dtype="float64"))
    part = values[: best + 1]
    slopes = np.gradient(part, logs)
    level = np.flatnonzero(part[:best] >= start - margin / 2)
    onset = int(level[-1]) if level.size else 0
    first = max(min(warm - 1, best), min(onset, best))
    steepest = first + int(np.argmin(slopes[first:]))
    return float(lrs[steepest]), float(lrs[best])


# --------------------------------------------------------------------------
# The sweep: a schedule of the optimizer's iterations, and a callback
# --------------------------------------------------------------------------


class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """``scale * start_lr * (end_lr / start_lr) ** ((step - offset) / (steps - 1))``, clipped.

    Args:
        start_lr: the rate at ``step == offset``.
        end_lr: the rate at ``step == offset + steps - 1`` (and after).
        steps: the number of steps of the sweep.
        offset: the optimizer's ``iterations`` when the sweep starts.
        scale: a factor on every rate: a layer group's ratio to the swept
            group, so that the groups keep their ratios (0 holds a group at 0).

    Example:
        >>> ExponentialSweep(1e-4, 1.0, 5)(4)  # doctest: +SKIP
        1.0

    """

    def __init__(
        self, start_lr: float, end_lr: float, steps: int, offset: int = 0, scale: float = 1.0
    ) -> None:
        self.start_lr = float(start_lr)
        self.end_lr = float(end_lr)
        self.steps = int(steps)
        self.offset = int(offset)
        self.scale = float(scale)

    def rate(self, index: int) -> float:
        """The rate of the sweep's step ``index`` (0-based), in Python."""
        t = min(max(index / max(self.steps - 1, 1), 0.0), 1.0)
        return self.scale * self.start_lr * math.exp(t * math.log(self.end_lr / self.start_lr))

    def __call__(self, step: Any) -> Any:
        """The rate at optimizer step ``step``, as a backend tensor (Keras calls this).

        Args:
            step: the optimizer's ``iterations``, a scalar tensor or an int.

        Returns:
            A float32 scalar: :meth:`rate` of ``step - offset``, computed with
            ``keras.ops`` so that it traces inside the train step.
        """
        ops = keras.ops
        t = (ops.cast(step, "float32") - float(self.offset)) / float(max(self.steps - 1, 1))
        t = ops.clip(t, 0.0, 1.0)
        start = self.scale * self.start_lr
        return start * ops.exp(t * math.log(self.end_lr / self.start_lr))

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, so the schedule saves and loads with the model.

        Returns:
            ``start_lr``, ``end_lr``, ``steps``, ``offset`` and ``scale``.
        """
        return {
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "steps": self.steps,
            "offset": self.offset,
            "scale": self.scale,
        }


class _Sweep(keras.callbacks.Callback):
    """Records each step's loss and rate; stops at the last step or when the loss diverges.

    Not ``async_safe``: it must see each step before the next one starts, to stop in time.
    """

    def __init__(
        self,
        schedule: ExponentialSweep,
        steps: int,
        diverge: float,
        beta: float,
        sizes: Callable[[int, int], list[int]] | None,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.steps = steps
        self.diverge = diverge
        self.beta = beta
        self.sizes = sizes  # (epoch_begin_step, count) -> batch sizes, for arrays
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped = "data"
        self._done = 0  # steps done before this epoch
        self._epoch_steps = 0  # steps done in this epoch
        self._mean = 0.0  # the epoch's running mean of the loss so far
        self._weight = 0.0  # ... and its total weight
        self._avg = 0.0
        self._best = math.inf

    def points(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """(lrs, losses, smoothed, the rates the smoothed values describe) so far.

        What the live view draws; the lists only grow, so a copy is consistent.
        """
        n = len(self.smoothed)
        lrs = self.lrs[:n]
        return lrs, self.losses[:n], self.smoothed[:n], at_rates(lrs, delays(n, self.beta))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._done += self._epoch_steps
        self._epoch_steps = 0
        self._mean = 0.0
        self._weight = 0.0

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        end = batch + 1  # steps done in this epoch (end_step is the last index)
        count = end - self._epoch_steps
        if count <= 0:
            return
        weights = (
            self.sizes(self._epoch_steps, count) if self.sizes is not None else [1.0] * count
        )
        if "loss" not in (logs or {}):
            self._stop("no loss")
            return
        mean = float(logs["loss"])  # type: ignore[index]
        weight = self._weight + float(sum(weights))
        loss = (mean * weight - self._mean * self._weight) / float(sum(weights))
        first = self._done + self._epoch_steps
        self._epoch_steps, self._mean, self._weight = end, mean, weight
        # The point stands for its steps: its rate is the middle one's, on a log scale.
        middle = first + (count - 1) / 2
        rate = self.schedule.rate
        lr = math.sqrt(rate(math.floor(middle)) * rate(math.ceil(middle)))
        if not math.isfinite(loss):
            self._stop("diverged")
            return
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        self._best = min(self._best, smoothed)
        if self._best > 0 and smoothed > self.diverge * self._best:
            self._stop("diverged")
        elif first + count >= self.steps:
            self._stop("end")

    def _stop(self, why: str) -> None:
        self.stopped = why
        self.model.stop_training = True


# --------------------------------------------------------------------------
# Putting the model back
# --------------------------------------------------------------------------


def _numpy(variable: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable), copy=True)


def _base_optimizers(optimizer: Any) -> list[Any]:
    """The optimizers whose learning rate the sweep replaces (inside wrappers)."""
    inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer
    if isinstance(inner, keras.optimizers.Optimizer):
        return _base_optimizers(inner)
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is not None and isinstance(optimizer, multi):
        return [o for inner in optimizer.optimizers for o in _base_optimizers(inner)]
    return [optimizer]


@dataclass(frozen=True)
class _Groups:
    """The layer groups of a MultiOptimizer, as the sweep scales them.

    Attributes:
        names: each target optimizer's group name (as layer_lrs names them).
        ratios: each target's rate divided by the reference's.
        reference: the index of the reference target (the swept one).
        default: the name of the default group (the layers in no group), or None.
    """

    names: tuple[str, ...]
    ratios: tuple[float, ...]
    reference: int
    default: str | None

    @property
    def many(self) -> bool:
        return len(self.names) > 1


def _current_rate(optimizer: Any) -> float:
    """An optimizer's learning rate now (a schedule's value at its iterations)."""
    try:
        value = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # an unusual rate: the group then sweeps at ratio 1
        return math.nan
    return value


def _groups(optimizer: Any, targets: list[Any]) -> _Groups:
    """Each target's name and ratio to the reference group (the highest rate that trains)."""
    if len(targets) < 2:
        return _Groups(("",), (1.0,), 0, None)
    from .finetune import _group_name, _unwrap

    rates = [_current_rate(o) for o in targets]
    training = [
        i for i, o in enumerate(targets) if getattr(o, "_trainable_variables", None)
    ] or list(range(len(targets)))
    # max() keeps the first of equal rates: a named group before the default, last in the map.
    reference = max(training, key=lambda i: rates[i] if math.isfinite(rates[i]) else -math.inf)
    top = rates[reference]
    usable = math.isfinite(top) and top > 0
    ratios = tuple(
        r / top if usable and math.isfinite(r) and r >= 0 else 1.0 for r in rates
    )
    table = getattr(_unwrap(optimizer), "_optimizer_map", None)
    default = getattr(table, "default_optimizer", None)
    return _Groups(
        tuple(_group_name(o) for o in targets),
        ratios,
        reference,
        _group_name(default) if default is not None and default in targets else None,
    )


class _Snapshot:
    """Every value lr_find may change, and how to put it back."""

    _ATTRS = ("train_function", "train_step", "stop_training", "history")

    def __init__(self, model: Any) -> None:
        self.model = model
        variables: dict[int, Any] = {}
        for v in [*model.variables, *model.optimizer.variables, *model.metrics_variables]:
            variables.setdefault(id(v), v)
        self.values = [(v, _numpy(v)) for v in variables.values()]
        self.attrs = {name: model.__dict__.get(name, _MISSING) for name in self._ATTRS}
        self.rates = [(o, o.__dict__["_learning_rate"]) for o in _base_optimizers(model.optimizer)]

    def restore(self) -> None:
        # Python attributes first: the compiled train function and the learning rate (a
        # variable, a schedule or a callable) are the very objects the model had.
        for optimizer, rate in self.rates:
            object.__setattr__(optimizer, "_learning_rate", rate)
        for name, value in self.attrs.items():
            if value is _MISSING:
                self.model.__dict__.pop(name, None)
            else:
                object.__setattr__(self.model, name, value)
        for variable, value in self.values:
            variable.assign(value)

    def same(self) -> bool:
        """Whether every variable holds its saved value again, bit for bit."""
        return all(np.array_equal(_numpy(v), value) for v, value in self.values)


_MISSING = object()


@contextlib.contextmanager
def _own_history(model: Any) -> Iterator[RunHistory]:
    """Keeps the sweep out of the model's curves: its own RunHistory while it runs."""
    try:
        previous = _HISTORIES.get(model)
    except TypeError:  # not weak-referenceable: LiveProgress makes a fresh one anyway
        yield RunHistory()
        return
    mine = _HISTORIES[model] = RunHistory()
    try:
        yield mine
    finally:
        if previous is None:
            _HISTORIES.pop(model, None)
        else:
            _HISTORIES[model] = previous


# --------------------------------------------------------------------------
# The data: how many steps a pass gives, and each step's batch size
# --------------------------------------------------------------------------


def _first_array(x: Any) -> Any:
    leaves = keras.tree.flatten(x)
    return leaves[0] if leaves and hasattr(leaves[0], "shape") else None


def _is_arrays(x: Any) -> bool:
    leaves = keras.tree.flatten(x) if x is not None else []
    return bool(leaves) and all(hasattr(leaf, "shape") and len(leaf.shape) > 0 for leaf in leaves)


def _plan(x: Any, fit_args: dict[str, Any], steps: int) -> tuple[dict[str, Any], Any]:
    """fit() arguments for the sweep, and the batch sizes of array data (or None)."""
    per_pass = fit_args.get("steps_per_epoch")
    sizes = None
    if _is_arrays(x):
        count = int(_first_array(x).shape[0])
        batch = int(fit_args.get("batch_size") or 32)
        full = max(math.ceil(count / batch), 1)
        per_pass = min(int(per_pass), full) if per_pass else full
        last = count - batch * (full - 1)

        def sizes(begin: int, n: int) -> list[int]:
            return [last if i == full - 1 else batch for i in range(begin, begin + n)]

    elif per_pass is None and hasattr(x, "num_batches"):  # a PyDataset
        per_pass = x.num_batches
    elif per_pass is None and hasattr(x, "cardinality"):  # a tf.data.Dataset
        cardinality = int(x.cardinality())
        per_pass = cardinality if cardinality > 0 else None
    run = {k: v for k, v in fit_args.items() if k in _DATA_ARGS and v is not None}
    if per_pass is None or per_pass >= steps:
        run.update(epochs=1, steps_per_epoch=steps)
    else:
        run["epochs"] = math.ceil(steps / per_pass)
        if fit_args.get("steps_per_epoch"):
            run["steps_per_epoch"] = per_pass
    return run, sizes


# --------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------


def _keras_fit(model: Any) -> Callable[..., Any]:
    """Keras's own ``fit``, past kernelkit's routing of ``keras.Model.fit`` in a cell."""
    for klass in type(model).__mro__:
        if klass is keras.Model:
            continue  # %%kmodel cells route keras.Model.fit through kernelkit.fit
        found = vars(klass).get("fit")
        if found is not None:
            return found  # type: ignore[no-any-return]
    raise LRFindError(f"{type(model).__name__} has no fit()")  # pragma: no cover


def _check(model: Any, start_lr: float, end_lr: float, steps: int, diverge: float) -> None:
    freezing.check_model(model, "lr_find")
    name = model.name
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise LRFindError(
            f"model {name!r} is not compiled: call {name}.compile(optimizer=..., loss=...) "
            "first (lr_find sweeps the compiled optimizer's learning rate)"
        )
    if not model.built:
        raise LRFindError(
            f"model {name!r} is not built yet: give it a keras.Input (or call model.build) "
            "first, so that lr_find can put its weights back"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise LRFindError(
            f"steps={steps!r} is too few: lr_find needs at least {MIN_STEPS} steps "
            "(100 is the default)"
        )
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise LRFindError(
            f"the sweep needs 0 < start_lr < end_lr; got start_lr={start_lr!r}, end_lr={end_lr!r}"
        )
    if not diverge > 1:
        raise LRFindError(f"diverge={diverge!r} must be more than 1 (a multiple of the minimum)")
    flags = freezing._compiled_flags(model)
    if flags is not None and freezing._differences(model, flags):
        raise LRFindError(
            f"trainable flags of {name!r} changed since it was compiled: call "
            f"kernelkit.recompile({name}) first, so that the sweep trains what fit would"
        )


def _fresh_train_step(model: Any) -> None:
    """Gives the sweep's trace a step function of its own (JAX).

    Keras's JAX trainer jits the bound method ``self.train_step``. Bound
    methods of one model compare equal, and jax caches traces by function
    while the function lives; the snapshot keeps the model's own train
    function (and so its bound method) alive to put it back, so a new
    ``jit(self.train_step)`` would reuse that trace, learning rate included,
    and sweep nothing (measured: Keras 3.15.1, jax 0.10.2, after a first fit).
    An instance attribute that is a new function is a new cache key; the
    snapshot removes it afterwards.
    """
    own = model.__dict__.get("train_step")
    step = own if own is not None else type(model).train_step.__get__(model)

    def train_step(*args: Any, **kwargs: Any) -> Any:
        return step(*args, **kwargs)

    object.__setattr__(model, "train_step", train_step)


def _registered(model: Any) -> tuple[str | None, Any]:
    """(registered name, the distribution it was built in) of ``model``; (None, None) if none."""
    found = _fitting.registered(model)
    return found if found is not None else (None, None)


def lr_find(
    model: Any,
    x: Any = None,
    y: Any = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    diverge: float = 4.0,
    beta: float = 0.8,
    display: str = "auto",
    name: str | None = None,
    **fit_kwargs: Any,
) -> LRFindResult:
    """Sweeps the learning rate, suggests one, and puts the model back exactly.

    Trains for at most ``steps`` steps on ``x`` (and ``y``) with fit's own
    data handling (arrays, ``tf.data`` datasets, ``PyDataset``, generators;
    arrays are passed over again when one pass is shorter than the sweep),
    the rate growing exponentially from ``start_lr`` to ``end_lr``. It stops
    early when the smoothed loss exceeds ``diverge`` times its minimum.
    The live view is the usual progress view with the loss drawn against
    the rate on a log axis; its final output is static HTML (an SVG chart)
    with a plotly figure and a one-line ``text/plain``. Validation,
    callbacks and ``epochs`` of the fit arguments are left out.

    With layer groups (:func:`kernelkit.layer_lrs`) every group is swept
    at its ratio to the group with the highest rate (the reference, usually
    the head), so the ratios hold; ``start_lr`` and ``end_lr`` are that
    group's rates, the suggestion is its rate, and ``found.rates`` /
    ``found.default`` give every group's rate at the same ratios.

    Afterwards the weights (BatchNormalization statistics and seed states
    included), the optimizer's variables (``iterations``, slots, its
    learning rate), a compiled learning-rate schedule, the compiled train
    function and ``model.history`` are what they were (every group's
    optimizer, its ``iterations`` and rate or schedule), also when the sweep
    fails or is interrupted. An optimizer that was never used is built
    first (its state is where a first fit would start).

    Args:
        model: a compiled, built ``keras.Model``.
        x: the training inputs, as for ``Model.fit``.
        y: the targets, as for ``Model.fit``.
        start_lr: the first learning rate.
        end_lr: the last learning rate (reached at the last step).
        steps: the number of steps to sweep over (at least 10).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum.
        beta: the weight of the past in the smoothed loss (a bias-corrected
            exponential moving average, aligned with the rates it describes).
        display: "auto", "widget", "text" or "none".
        name: the name shown (default: the registered name or ``model.name``).
        **fit_kwargs: ``batch_size``, ``sample_weight``, ``class_weight``,
            ``shuffle``, ``steps_per_epoch``; other ``Model.fit`` arguments
            are accepted and left out.

    Returns:
        An :class:`LRFindResult` (its repr is the one-line suggestion).

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        LRFindError: (a ``ValueError``, one line) the model is not compiled
            or not built, its trainable flags changed since it was compiled,
            ``steps`` is too few, the rates are not increasing, fewer than 10
            steps were recorded, or the loss never decreased. The model is
            put back before it is raised.

    Example:
        >>> found = kernelkit.lr_find(model, x_train, y_train, batch_size=64)  # doctest: +SKIP
        kernelkit lr_find model: suggested learning rate 3.16e-03 (steepest descent ...
        >>> model.optimizer.learning_rate = found.suggestion  # doctest: +SKIP
        >>> kernelkit.layer_lrs(model, {"base": 1e-5, "head": 1e-3})  # doctest: +SKIP
        >>> found = kernelkit.lr_find(model, x_train, y_train, batch_size=64)  # doctest: +SKIP
        kernelkit lr_find model: suggested learning rate 2.51e-03 for group 'head' ...
        >>> kernelkit.layer_lrs(model, found.rates, default=found.default)  # doctest: +SKIP

    """
    _check(model, start_lr, end_lr, steps, diverge)
    if display not in _DISPLAYS:
        raise LRFindError(f"display={display!r} is not allowed; use one of {', '.join(_DISPLAYS)}")
    unknown = sorted(set(fit_kwargs) - set(_DATA_ARGS) - set(_DROPPED_ARGS))
    if unknown:
        raise TypeError(f"lr_find() got unexpected keyword argument(s): {', '.join(unknown)}")
    registered_as, planned = _registered(model)
    shown = name or registered_as or model.name
    run, sizes = _plan(x, {"steps_per_epoch": None, **fit_kwargs}, steps)
    # The sweep feeds x in batch_size batches over the distribution in force (the
    # registered model's, or the cell's): refuse in one line where Keras could not split them.
    from .strategy import check_batches, in_distribution

    try:
        check_batches(planned, x, batch_size=run.get("batch_size"), purpose="lr_find")
    except ValueError as err:
        raise LRFindError(str(err)) from None

    with in_distribution(planned):
        optimizer = model.optimizer
        if not optimizer.built:
            # Built before the snapshot, so that its state is put back to where a first fit
            # would start it (Keras builds it the same way in fit).
            strategy = getattr(model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                optimizer.build(model.trainable_variables)
        snapshot = _Snapshot(model)
        targets = _base_optimizers(optimizer)
        groups = _groups(optimizer, targets)
        # One factor for every group: each runs at its ratio to the reference group's rate.
        sweeps = [
            ExponentialSweep(
                start_lr,
                end_lr,
                steps,
                int(keras.ops.convert_to_numpy(o.iterations)),
                scale=ratio,
            )
            for o, ratio in zip(targets, groups.ratios, strict=True)
        ]
        sweep = _Sweep(sweeps[groups.reference], steps, diverge, beta, sizes)
        live = LiveProgress(display="none", model_name=shown)
        view = None
        failure: BaseException | None = None
        current = _fitting.CURRENT
        try:
            with _own_history(model) as history:
                if display != "none":
                    view = lr_find_view(display, history, sweep.points, live.submit)
                    live.view = view
                for optimizer_, schedule in zip(targets, sweeps, strict=True):
                    # Not the learning_rate setter: it would untrack the rate's variable and
                    # change the optimizer's variables (its state on JAX, its checkpoint).
                    object.__setattr__(optimizer_, "_learning_rate", schedule)
                object.__setattr__(model, "train_function", None)  # traced again, with the sweep
                if keras.backend.backend() == "jax":
                    _fresh_train_step(model)
                if current is not None:
                    current.append(live)  # the JupyterLab Stop command reaches it
                try:
                    _keras_fit(model)(model, x, y, callbacks=[sweep, live], verbose=0, **run)
                finally:
                    if current is not None and live in current:
                        current.remove(live)
        except BaseException as err:
            failure = err
            live.fail(err)
        finally:
            snapshot.restore()
    if live.stop_requested and sweep.stopped not in ("end", "diverged"):
        sweep.stopped = "user"
    if failure is not None:
        if view is not None:
            view.conclude(None, f"lr_find failed: {type(failure).__name__}: {failure}")
        raise failure
    try:
        result = _analyse(shown, sweep, start_lr, end_lr, steps, diverge, beta, groups)
    except LRFindError as err:
        if view is not None:
            view.conclude(None, f"lr_find {shown}: {err}")
        raise
    if view is not None:
        view.conclude(result, None)
    return result


def _analyse(
    shown: str,
    sweep: _Sweep,
    start_lr: float,
    end_lr: float,
    steps: int,
    diverge: float,
    beta: float,
    groups: _Groups | None = None,
) -> LRFindResult:
    lrs, losses = sweep.lrs, sweep.losses
    if len(lrs) < MIN_STEPS:
        why = {
            "diverged": "the loss diverged",
            "user": "it was stopped",
            "data": "the data ran out",
        }.get(sweep.stopped, sweep.stopped)
        if sweep.stopped == "no loss":
            raise LRFindError(
                f"the fit logs of {shown!r} have no 'loss' (a custom train_step?): lr_find "
                "sweeps the loss that fit reports"
            )
        raise LRFindError(
            f"lr_find recorded only {len(lrs)} steps before {why}; it needs {MIN_STEPS}: "
            "give it more data or steps, a smaller start_lr, or steps_per_execution=1"
        )
    smoothed = smooth(losses, beta)
    described = at_rates(lrs, delays(len(smoothed), beta))
    steepest, minimum = suggest(described, smoothed)
    return LRFindResult(
        model=shown,
        suggestion=steepest,
        method="steepest descent of the smoothed loss",
        steepest=steepest,
        minimum=minimum,
        min_over_10=minimum / 10,
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed=tuple(smoothed),
        smoothed_lrs=tuple(described),
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        stopped=sweep.stopped,
        restored=True,
        diverge=diverge,
        group=groups.names[groups.reference] if groups is not None and groups.many else None,
        ratios=(
            tuple(zip(groups.names, groups.ratios, strict=True))
            if groups is not None and groups.many
            else ()
        ),
        default_group=groups.default if groups is not None and groups.many else None,
    )


def lr_find_fit_call(model: Any, args: tuple, kwargs: dict[str, Any], name: str) -> LRFindResult:
    """Runs :func:`lr_find` on the arguments of a ``Model.fit`` call (``%%kmodel --lr-find``).

    Args:
        model: the model whose ``fit`` was called.
        args: fit's positional arguments.
        kwargs: fit's keyword arguments.
        name: the cell's NAME, shown in the view.

    Returns:
        The :class:`LRFindResult`, which the cell's ``fit`` returns instead of a History.

    Raises:
        TypeError: the arguments do not fit ``Model.fit``'s signature.

    """
    signature = inspect.signature(_keras_fit(model))
    bound = signature.bind(model, *args, **kwargs)
    values = dict(bound.arguments)
    values.pop(next(iter(signature.parameters)), None)  # self
    extra = values.pop("kwargs", {}) or {}
    values.update(extra)
    x, y = values.pop("x", None), values.pop("y", None)
    return lr_find(model, x, y, name=name, **values)


# ``kernelkit.lr_find`` is this module once it is imported (Python binds submodules on the
# package): calling it runs the finder, as kernelkit.devices() and kernelkit.strategy() do.
from ._env import make_callable  # noqa: E402 - after lr_find() is defined

make_callable(__name__, lr_find)
