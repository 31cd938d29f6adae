"""Intents: small requests that views send back to the session.

Views never touch a model. A click on a freeze toggle or a reset button
becomes one of these values, handed to a ``submit`` callable; the session
applies it at once when no fit runs, or queues it until the running fit
ends (stop requests act at once: they only set a flag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SetTrainable:
    """Freeze (``trainable=False``) or unfreeze layers.

    Attributes:
        layers: layer paths ("dense", "base/conv2"); empty means all layers.
        trainable: the new flag.
        up_to: when set, every layer before and including this path.
    """

    layers: tuple[str, ...] = ()
    trainable: bool = False
    up_to: str | None = None


@dataclass(frozen=True)
class FreezeTo:
    """Freeze every layer up to and including ``up_to``; leave the rest trainable.

    The Layers tab's "freeze up to here", applied with ``kernelkit.freeze_to``.

    Attributes:
        up_to: a layer path ("base/block_16_project_BN"); a nested model's
            path means all of its layers.
        bn: the BatchNormalization policy: "frozen", "train" or "inference".
    """

    up_to: str
    bn: Literal["frozen", "train", "inference"] = "frozen"


@dataclass(frozen=True)
class ResetStates:
    """Reset stateful RNN layers (``layers=None``: all of them)."""

    layers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SetAutoReset:
    """Choose when stateful layers reset by themselves."""

    every: Literal["never", "epoch", "fit"] = "never"


@dataclass(frozen=True)
class StopTraining:
    """Stop the running fit at the end of the current step."""

    reason: str = "user"


Intent = SetTrainable | FreezeTo | ResetStates | SetAutoReset | StopTraining

#: What views receive to send intents; returns True if applied now, False if queued.
Submit = Callable[[Intent], bool]
