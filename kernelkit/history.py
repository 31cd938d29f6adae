"""A pure metric store and a throttle: no Keras, no UI.

``RunHistory`` keeps what the progress view draws: every epoch's logs and,
per metric, a bounded series of batch-level points on a fractional-epoch
axis. When a series is full it halves its resolution (keeps every other
point) and doubles its stride, so a run of a million steps still holds at
most ``capacity`` points per metric.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from . import events as ev

Clock = Callable[[], float]


class Throttle:
    """Says yes at most once per ``interval`` seconds.

    Args:
        interval: the smallest gap between two yeses, in seconds.
        clock: a monotonic clock; tests pass a fake one.
    """

    __slots__ = ("_clock", "_next", "interval")

    def __init__(self, interval: float, clock: Clock = time.monotonic) -> None:
        self.interval = float(interval)
        self._clock = clock
        self._next = -math.inf

    def ready(self) -> bool:
        """Returns True (and restarts the wait) when the interval has passed."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def reset(self) -> None:
        """Makes the next ``ready()`` return True."""
        self._next = -math.inf


@dataclass
class Series:
    """A bounded, downsampled list of (x, y) points."""

    capacity: int = 512
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    stride: int = 1
    _skipped: int = 0

    def append(self, x: float, y: float) -> None:
        """Adds a point, keeping one point per ``stride`` offered."""
        self._skipped += 1
        if self._skipped < self.stride:
            return
        self._skipped = 0
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) >= self.capacity:
            # Halve the resolution: memory stays bounded whatever the run length.
            self.xs = self.xs[::2]
            self.ys = self.ys[::2]
            self.stride *= 2

    def __len__(self) -> int:
        return len(self.xs)


def is_scalar(value: object) -> bool:
    """True for values a curve can draw (finite or not): ints, floats, 0-d numbers."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    shape = getattr(value, "shape", ())
    return shape in ((), None)


def scalar_logs(logs: Mapping[str, object] | None) -> dict[str, float]:
    """Keeps the scalar entries of Keras logs as floats; skips the rest."""
    if not logs:
        return {}
    out: dict[str, float] = {}
    for key, value in logs.items():
        if is_scalar(value):
            out[key] = float(value)  # type: ignore[arg-type]
    return out


class RunHistory:
    """Everything the curves and the epoch table need, across several fits.

    Epoch numbers are absolute: a second fit of the same model continues
    the x axis where the first stopped (``begin_fit`` computes the offset,
    respecting ``initial_epoch``).

    Args:
        capacity: the most batch-level points kept per metric.
    """

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self.epochs: list[dict[str, float]] = []  # one dict per finished epoch
        self.epoch_index: list[int] = []  # absolute epoch number of each entry
        self.batch: dict[str, Series] = {}
        self.offset = 0
        self.fits = 0
        self._steps: int | None = None  # steps per epoch of the current fit, once known

    @property
    def next_epoch(self) -> int:
        """The absolute epoch number a continuing fit starts at."""
        return self.epoch_index[-1] + 1 if self.epoch_index else 0

    def begin_fit(self, initial_epoch: int) -> None:
        """Starts a fit; epochs it reports are shifted to continue the curves."""
        self.fits += 1
        self.offset = max(0, self.next_epoch - initial_epoch)

    def add_step(self, epoch: int, fraction: float, logs: Mapping[str, float]) -> None:
        """Adds batch-level points at ``epoch + fraction`` (epoch as Keras counts it)."""
        x = epoch + self.offset + fraction
        for key, value in logs.items():
            series = self.batch.get(key)
            if series is None:
                series = self.batch[key] = Series(self.capacity)
            series.append(x, value)

    def add_epoch(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Records a finished epoch's logs (training and validation)."""
        self.epoch_index.append(epoch + self.offset)
        self.epochs.append(dict(logs))

    def seed(
        self, epochs: Iterator[int] | tuple[int, ...], logs: Mapping[str, list[float]]
    ) -> None:
        """Adds finished epochs from a saved ``History``-style dict (a resumed run)."""
        for i, epoch in enumerate(epochs):
            self.epoch_index.append(int(epoch))
            self.epochs.append({k: float(v[i]) for k, v in logs.items() if i < len(v)})

    def drop_from(self, epoch: int) -> None:
        """Forgets finished epochs from absolute ``epoch`` on (a resumed fit redoes them)."""
        keep = [i for i, e in enumerate(self.epoch_index) if e < epoch]
        self.epoch_index = [self.epoch_index[i] for i in keep]
        self.epochs = [self.epochs[i] for i in keep]
        for series in self.batch.values():
            n = bisect.bisect_right(series.xs, epoch)
            del series.xs[n:], series.ys[n:]

    def apply(self, event: ev.Event) -> None:
        """Records one event (the only way the callback and views feed the store)."""
        if isinstance(event, ev.TrainBegin):
            self.begin_fit(event.initial_epoch)
            self._steps = event.steps
        elif isinstance(event, ev.Step):
            if event.logs and self._steps:
                self.add_step(event.epoch, min(event.step / self._steps, 1.0), event.logs)
        elif isinstance(event, ev.EpochEnd):
            self.add_epoch(event.epoch, event.logs)
            if self._steps is None and event.steps:
                self._steps = event.steps  # unknown cardinality: learnt after one epoch

    def metric_names(self) -> list[str]:
        """Training metric names in first-seen order (no ``val_`` prefix)."""
        names: dict[str, None] = {}
        for logs in self.epochs:
            for key in logs:
                names[key[4:] if key.startswith("val_") else key] = None
        for key in self.batch:
            names[key] = None
        return [n for n in names if n != "learning_rate"] + (
            ["learning_rate"] if "learning_rate" in names else []
        )

    def epoch_series(self, key: str) -> tuple[list[float], list[float]]:
        """Epoch-level points of ``key``, at x = epoch + 1 (an epoch's end)."""
        xs, ys = [], []
        # Not strict: see rows().
        for epoch, logs in zip(self.epoch_index, self.epochs, strict=False):
            if key in logs:
                xs.append(epoch + 1.0)
                ys.append(logs[key])
        return xs, ys

    def rows(self) -> Iterator[tuple[int, dict[str, float]]]:
        """(absolute epoch, logs) for each finished epoch."""
        # Not strict: the two lists are equal between updates, but a view's fallback renders
        # on a timer thread and can read them mid add_epoch/drop_from; the finished part wins.
        return zip(self.epoch_index, self.epochs, strict=False)

    def last(self) -> dict[str, float]:
        """The last finished epoch's logs, or an empty dict."""
        return dict(self.epochs[-1]) if self.epochs else {}
