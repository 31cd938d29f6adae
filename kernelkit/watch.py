"""Live activation statistics: each layer's mean, spread and dead units, once per epoch.

A fit that goes wrong often shows it in the activations first: a layer whose
outputs collapse to zero (dead ReLUs), or whose spread grows epoch after
epoch. fastai's ``ActivationStats`` records this for PyTorch; here it is a
Keras callback that, at each epoch end, runs one forward pass of a small
fixed probe batch through :func:`kernelkit.extraction.scan` and keeps the
numbers. It costs that one pass per epoch and nothing per step.

Example:
    >>> watch = ActivationWatch(x[:32])  # doctest: +SKIP
    >>> model.fit(x, y, epochs=5, callbacks=[watch])  # doctest: +SKIP
    >>> watch.table("dead_fraction")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import keras

from .extraction import scan

#: Statistics each epoch keeps per layer (names of ``extraction.LayerStats`` fields).
STATISTICS = ("mean", "std", "dead_fraction")


@dataclass(frozen=True)
class EpochStats:
    """One epoch's statistics: ``{layer label: {statistic: value}}``, and what they cost."""

    epoch: int
    layers: dict[str, dict[str, float]]
    seconds: float


class ActivationWatch(keras.callbacks.Callback):
    """Records per-layer activation statistics on a fixed probe batch at each epoch end.

    Args:
        probe: a few inputs (a batch, or the model's input structure of
            arrays); the first ``samples`` are used, the same ones every epoch.
        layers: which layers (as ``kernelkit.extract`` takes them); None for all.
        samples: how many probe samples to use.
        every: record every this many epochs.

    Attributes:
        epochs: one :class:`EpochStats` per recorded epoch, in order.

    Raises:
        ValueError: ``samples`` or ``every`` is not a positive int.
    """

    def __init__(
        self, probe: Any, layers: Any = None, *, samples: int = 32, every: int = 1
    ) -> None:
        super().__init__()
        for name, value in (("samples", samples), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ActivationWatch({name}={value!r}) is not allowed; use a positive int"
                )
        self.probe = _first(probe, samples)
        self.layers = layers
        self.samples = samples
        self.every = every
        self.epochs: list[EpochStats] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Run the probe and keep its statistics."""
        if (epoch + 1) % self.every:
            return
        began = time.perf_counter()
        # One batch: the probe is small, and one pass is the whole cost.
        result = scan(self.model, self.probe, self.layers, batch_size=self.samples, max_samples=1)
        layers = {
            label: {name: float(getattr(stats, name)) for name in STATISTICS}
            for label, stats in result.stats.items()
        }
        self.epochs.append(EpochStats(epoch, layers, time.perf_counter() - began))

    @property
    def labels(self) -> list[str]:
        """Every layer recorded, in the order the layers run."""
        seen: list[str] = []
        for stats in self.epochs:
            seen += [label for label in stats.layers if label not in seen]
        return seen

    def series(self, statistic: str) -> dict[str, list[float]]:
        """``{layer: [value per recorded epoch]}`` for one statistic (NaN where missing)."""
        if statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}")
        return {
            label: [s.layers.get(label, {}).get(statistic, float("nan")) for s in self.epochs]
            for label in self.labels
        }

    @property
    def seconds(self) -> float:
        """What the probe passes cost, all epochs together."""
        return sum(s.seconds for s in self.epochs)

    def __repr__(self) -> str:
        if not self.epochs:
            return "ActivationWatch: nothing recorded yet"
        last = self.epochs[-1]
        dead = [label for label, s in last.layers.items() if s["dead_fraction"] > 0.5]
        worst = f"; mostly dead units in {', '.join(dead)}" if dead else ""
        return (
            f"ActivationWatch: {len(self.labels)} layers over {len(self.epochs)} epochs "
            f"(probe {self.seconds:.2f} s in all){worst}"
        )


def _first(probe: Any, count: int) -> Any:
    if isinstance(probe, dict):
        return {k: v[:count] for k, v in probe.items()}
    if isinstance(probe, (list, tuple)) and probe and hasattr(probe[0], "shape"):
        return [v[:count] for v in probe]
    if hasattr(probe, "shape"):
        return probe[:count]
    raise ValueError(
        "ActivationWatch needs a probe of arrays (x[:32], or a list/dict of arrays for several "
        f"inputs), not {type(probe).__name__}"
    )
