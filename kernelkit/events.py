"""Training events: what happened during a fit, as plain frozen values.

The Keras callback (``callback.py``) turns Keras hooks into these events; the
history store, the views and the worker bridge consume them. They carry no
Keras objects, so they can cross a process boundary as dicts
(``to_dict`` / ``from_dict``) and tests can build them by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How a fit ended.
EndState = Literal["finished", "stopped_by_user", "stopped_by_callback", "failed"]


@dataclass(frozen=True)
class TrainBegin:
    """A fit started.

    Attributes:
        epochs: the ``epochs`` argument of ``fit`` (the last epoch index + 1).
        initial_epoch: the first epoch this fit runs (``initial_epoch``).
        steps: steps per epoch, or None when Keras does not know it.
        batch_size: samples per step when known.
        model_name: the registered name, or the model's own name.
        strategy: a short description of the distribution, e.g. "default",
            "MirroredStrategy (2 replicas)" or "DataParallel (2 workers)".
        replicas: number of replicas (devices or workers) taking part.
        resumed_at: the epoch a resumed run continues from, else None.
        time: clock reading when the fit started.
    """

    epochs: int
    initial_epoch: int = 0
    steps: int | None = None
    batch_size: int | None = None
    model_name: str = ""
    strategy: str = "default"
    replicas: int = 1
    resumed_at: int | None = None
    time: float = 0.0


@dataclass(frozen=True)
class EpochBegin:
    """An epoch started (``epoch`` is 0-based, as in Keras)."""

    epoch: int
    time: float = 0.0


@dataclass(frozen=True)
class Step:
    """Steps finished within an epoch.

    Attributes:
        epoch: 0-based epoch index.
        step: number of steps completed in this epoch (1-based, clamped to
            ``steps`` under ``steps_per_execution``).
        logs: the scalar training logs (running averages, as Keras reports).
        time: clock reading.
    """

    epoch: int
    step: int
    logs: Mapping[str, float] = field(default_factory=dict)
    time: float = 0.0


@dataclass(frozen=True)
class EpochEnd:
    """An epoch finished, with its final logs (validation values included).

    Attributes:
        epoch: 0-based epoch index.
        logs: the epoch's scalar logs, ``val_*`` entries included.
        steps: training steps run in this epoch.
        time: clock reading (after validation: Keras validates before it
            calls ``on_epoch_end``).
        validation_time: seconds this epoch's validation pass took, or None
            when the epoch was not validated (or the sender predates the
            field). The first pass includes compiling the test step.
    """

    epoch: int
    logs: Mapping[str, float] = field(default_factory=dict)
    steps: int | None = None
    time: float = 0.0
    validation_time: float | None = None


@dataclass(frozen=True)
class TrainEnd:
    """A fit ended.

    Attributes:
        state: "finished", "stopped_by_user", "stopped_by_callback" or "failed".
        reason: one readable line, e.g. "EarlyStopping: val_loss did not
            improve for 2 epochs" or "loss became NaN at epoch 3, step 12".
        epoch: the last epoch that ran (0-based), or None if none did.
        step: steps completed in that epoch.
        time: clock reading.
    """

    state: EndState
    reason: str = ""
    epoch: int | None = None
    step: int | None = None
    time: float = 0.0


Event = TrainBegin | EpochBegin | Step | EpochEnd | TrainEnd

_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (TrainBegin, EpochBegin, Step, EpochEnd, TrainEnd)
}


def to_dict(event: Event) -> dict[str, Any]:
    """Returns a JSON-ready dict of ``event`` with its type under ``"type"``."""
    data = dataclasses.asdict(event)
    data["type"] = type(event).__name__
    return data


def from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuilds an event from ``to_dict``'s output.

    Raises:
        ValueError: if the type is unknown or a field is missing.
    """
    data = dict(data)
    kind = data.pop("type", None)
    cls = _TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(_TYPES)}")
    try:
        return cls(**data)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ValueError(f"malformed {kind} event: {err}") from None
