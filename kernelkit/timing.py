"""Where a fit's time goes: each callback's own time, and the callbacks that slow Keras down.

Keras 3 dropped tf.keras's "on_train_batch_end is slow compared to the batch
update" warning (tensorflow/tensorflow#37876) and put nothing in its place.
On thread-safe backends (JAX, torch) any batch hook without
``async_safe = True`` also turns off Keras's async dispatch, which makes
every step wait for the device (``keras/src/callbacks/callback_list.py``).

:class:`CallbackTimer` measures, for one fit, the time spent inside each
given callback's hooks. It wraps only the hooks a callback overrides, so
Keras's own view of which hooks exist (and so its async choice and its
per-step log conversion) is unchanged. :func:`async_blockers` names the
callbacks that turn async dispatch off, with Keras's own rule.
:class:`InputTimer` measures how long the training steps waited for their
next batch, where the backend pulls batches in Python.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import keras

#: The hooks a callback can override (Keras's Callback API).
HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
    "on_batch_begin",
    "on_batch_end",
)
_BATCH_HOOKS = ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end")
#: A callback costing more than this share of the step time is named.
SLOW_SHARE = 0.03
#: Waiting for input is named when it is more than this share of the step time and more
#: than INPUT_FLOOR seconds in all: a tiny fit on in-memory arrays is never nagged.
INPUT_SHARE = 0.25
INPUT_FLOOR = 1.0


def thread_safe_backend() -> bool:
    """Whether Keras dispatches batch hooks asynchronously on this backend (JAX, torch)."""
    try:  # Keras keeps the flag in its private backend package
        from keras.src import backend

        return bool(backend.IS_THREAD_SAFE)
    except (ImportError, AttributeError):
        return keras.backend.backend() in ("jax", "torch")


def _is_default(method: Any) -> bool:
    return bool(getattr(method, "_is_default", False))


def async_blockers(callbacks: Iterable[Any]) -> list[str]:
    """Names of the callbacks that turn off Keras's async dispatch on this backend.

    Keras's rule (``CallbackList._configure_async_dispatch``): on a thread-safe
    backend, a callback that overrides a batch-end hook and does not say
    ``async_safe = True`` makes Keras wait for every step. On TensorFlow there
    is no async dispatch, so the list is empty.
    """
    if not thread_safe_backend():
        return []
    names = []
    for callback in callbacks:
        if getattr(callback, "async_safe", False):
            continue
        if any(not _is_default(getattr(callback, hook, None)) for hook in _BATCH_HOOKS):
            names.append(type(callback).__name__)
    return names


@dataclass
class CallbackTime:
    """One callback's time inside its own hooks during a fit."""

    name: str
    seconds: float = 0.0
    calls: int = 0
    batch_hooks: bool = False


@dataclass
class Breakdown:
    """A fit's time, part by part (seconds; None where not measured).

    Attributes:
        wall: the whole fit.
        compile: the estimated train-step compile time.
        validation: all validation passes.
        steps: what remains of the wall time: training steps, with the input
            pipeline and the callbacks' time inside it.
        callbacks: each timed callback's own time, slowest first.
        blockers: callbacks that turned async dispatch off (JAX, torch).
        step_count: training steps run.
        input: the steps' time spent waiting for the next batch (None where
            the backend pulls batches inside its graph: TensorFlow).
    """

    wall: float
    compile: float | None = None
    validation: float | None = None
    input: float | None = None
    callbacks: list[CallbackTime] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    step_count: int = 0

    @property
    def steps(self) -> float:
        """Seconds spent in the steps: the wall time less compile and validation."""
        return max(self.wall - (self.compile or 0.0) - (self.validation or 0.0), 0.0)

    def slow(self, share: float = SLOW_SHARE) -> list[CallbackTime]:
        """Callbacks whose own time is more than ``share`` of the steps' time."""
        budget = self.steps * share
        return [c for c in self.callbacks if c.seconds > budget and c.seconds > 0]

    def input_bound(self) -> bool:
        """Whether waiting for input is a large share of the steps' time."""
        waited = self.input or 0.0
        return waited > INPUT_FLOOR and waited > self.steps * INPUT_SHARE

    def line(self) -> str:
        """The breakdown as one line, then what slows the fit and the fix, if anything does.

        Returns:
            ``time: compile 2.1 s · steps 9.8 s (input 0.3 s) · validation 1.0 s ·
            callbacks 0.2 s``, followed by ``; ``-separated notes on slow input,
            slow callbacks and callbacks that turned off async dispatch.
        """
        parts = []
        if self.compile is not None:
            parts.append(f"compile {_seconds(self.compile)}")
        waited = f" (input {_seconds(self.input)})" if self.input is not None else ""
        parts.append(f"steps {_seconds(self.steps)}{waited}")
        if self.validation:
            parts.append(f"validation {_seconds(self.validation)}")
        own = sum(c.seconds for c in self.callbacks)
        if self.callbacks:
            parts.append(f"callbacks {_seconds(own)}")
        text = "time: " + " · ".join(parts)
        notes = []
        if self.input_bound():
            notes.append(
                f"waiting for input takes {(self.input or 0.0) / self.steps:.0%} of the step "
                "time: load batches in parallel (a keras.utils.PyDataset with workers=4, or "
                "tf.data with .prefetch(tf.data.AUTOTUNE)), or keep the data in memory"
            )
        for c in self.slow():
            notes.append(
                f"{c.name} takes {c.seconds / self.steps:.0%} of the step time "
                f"({_seconds(c.seconds)} in {c.calls} calls): do less per batch, or use epoch hooks"
            )
        if self.blockers:
            notes.append(
                f"{', '.join(self.blockers)} turned off Keras's async dispatch (a batch hook "
                "without async_safe = True): set async_safe = True on the callback if its "
                "batch hook only reads logs, or move the work to on_epoch_end"
            )
        return text + ("; " + "; ".join(notes) if notes else "")


def _seconds(value: float) -> str:
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.0f} s"


class CallbackTimer:
    """Times the given callbacks' own hooks for the length of a ``with timer.timing():``.

    Args:
        callbacks: the callbacks to time (kernelkit's own are better left out:
            their cost is measured in the benchmark).
    """

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]
        self.times = [CallbackTime(type(c).__name__) for c in self.callbacks]

    @contextmanager
    def timing(self) -> Iterator[CallbackTimer]:
        """Wrap the overridden hooks, and unwrap them however the fit ends."""
        wrapped: list[tuple[Any, str]] = []
        try:
            for callback, record in zip(self.callbacks, self.times, strict=True):
                for hook in HOOKS:
                    method = getattr(callback, hook, None)
                    if method is None or _is_default(method) or hook in vars(callback):
                        continue  # a default hook stays default: Keras reads that
                    setattr(callback, hook, _timed(method, record))
                    wrapped.append((callback, hook))
                    record.batch_hooks |= hook.endswith("batch_end") or hook.endswith("batch_begin")
            yield self
        finally:
            for callback, hook in wrapped:
                with suppress(AttributeError):
                    delattr(callback, hook)  # the class's method shows through again

    def sorted(self) -> list[CallbackTime]:
        """The callbacks' times, slowest first."""
        return sorted(self.times, key=lambda t: -t.seconds)


def _timed(method: Any, record: CallbackTime) -> Any:
    clock = time.perf_counter

    @functools.wraps(method)
    def hook(*args: Any, **kwargs: Any) -> Any:
        began = clock()
        try:
            return method(*args, **kwargs)
        finally:
            record.seconds += clock() - began
            record.calls += 1

    return hook


class InputTimer:
    """Times how long a fit's training steps wait for their next batch.

    On JAX (and torch) Keras's train step pulls each batch in Python, from
    the iterator that ``EpochIterator._get_iterator`` returns; a clock
    around that iterator's ``__next__`` is the time the step waited for
    input: loading, augmenting and moving the batch to the device. On
    TensorFlow the pull happens inside the traced graph, so nothing is
    measured there (``attach`` says False). One clock pair per step, never
    more.

    Attributes:
        seconds: the time spent waiting, in all, in the last fit attached.
        batches: the batches pulled.
        measured: whether the last fit's batches were timed.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self.measured = False
        self._attached: Any = None

    def attach(self, epoch_iterator: Any) -> bool:
        """Times the batches ``epoch_iterator`` hands out from now on (this fit only)."""
        self.detach()
        self.seconds, self.batches, self.measured = 0.0, 0, False
        get = getattr(epoch_iterator, "_get_iterator", None)
        if keras.backend.backend() == "tensorflow" or get is None:
            return False
        timer = self

        def timed_iterator() -> _TimedIterator:
            return _TimedIterator(iter(get()), timer)

        # An instance attribute: this fit's iterator only, never Keras's class (the
        # validation pass inside the fit builds its own iterator and stays untimed).
        epoch_iterator._get_iterator = timed_iterator
        self._attached = epoch_iterator
        self.measured = True
        return True

    def detach(self) -> None:
        """Puts the iterator's own method back (the fit is over)."""
        attached, self._attached = self._attached, None
        if attached is not None:
            with suppress(AttributeError):
                del attached._get_iterator


class _TimedIterator:
    """An iterator that adds the time of each ``next`` to an :class:`InputTimer`."""

    __slots__ = ("_clock", "_iterator", "_timer")

    def __init__(self, iterator: Iterator[Any], timer: InputTimer) -> None:
        self._iterator = iterator
        self._timer = timer
        self._clock = time.perf_counter

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        clock = self._clock
        began = clock()
        timer = self._timer
        try:
            batch = next(self._iterator)
        finally:  # the last wait ends in StopIteration, and is a wait all the same
            timer.seconds += clock() - began
        timer.batches += 1
        return batch
