"""The one place where intents become model operations.

A view never changes a model: a click becomes an intent
(:mod:`kernelkit.intents`) handed to a ``submit``. Whoever owns that
``submit`` (the session for a registered model, or a standalone panel)
carries the intent out here, so a freeze from the Layers tab, a reset from
the States tab and the same call typed in a cell are one code path.

Model changes made while a kernelkit fit of the model runs are queued until
it ends by the operations themselves (``kernelkit._fitting.queued_during_fit``);
``StopTraining`` goes to the running fit at once.
"""

from __future__ import annotations

from typing import Any

from . import _fitting, intents

__all__ = ["apply_intent", "submitter"]


def apply_intent(model: Any, intent: intents.Intent) -> bool:
    """Carries out one intent on ``model``.

    Args:
        model: a ``keras.Model``.
        intent: ``SetTrainable`` (``freeze`` / ``unfreeze``; empty ``layers``
            with no ``up_to`` means every layer), ``FreezeTo`` (the Layers
            tab's "freeze up to here", ``finetune.freeze_to``), ``ResetStates``
            (``rnn_state.reset_states``), ``SetAutoReset`` (checked here; the
            policy itself is kept by whoever runs the fits) or
            ``StopTraining`` (sent to the running kernelkit fit of ``model``).

    Returns:
        True once applied (or, during a fit of ``model``, queued by the
        operation, which prints one line saying so).

    Raises:
        TypeError: ``intent`` is not an intent.
        ValueError: what the operation raises (an unknown layer path, an
            auto-reset policy other than "never", "epoch" or "fit").

    Example:
        >>> apply_intent(model, intents.SetTrainable(("head",), trainable=False))  # doctest: +SKIP
        True
    """
    if isinstance(intent, intents.SetTrainable):
        from . import freezing

        change = freezing.unfreeze if intent.trainable else freezing.freeze
        change(model, list(intent.layers) or None, up_to=intent.up_to)
    elif isinstance(intent, intents.FreezeTo):
        from . import finetune

        finetune.freeze_through(model, intent.up_to, bn=intent.bn)
    elif isinstance(intent, intents.ResetStates):
        from . import rnn_state

        rnn_state.reset_states(model, None if intent.layers is None else list(intent.layers))
    elif isinstance(intent, intents.SetAutoReset):
        from . import rnn_state

        rnn_state.check_every(intent.every)
    elif isinstance(intent, intents.StopTraining):
        _fitting.stop_fit_of(model, intent)
    else:
        raise TypeError(f"{intent!r} is not a kernelkit intent (see kernelkit.intents)")
    return True


def submitter(model: Any) -> intents.Submit:
    """A ``submit`` that applies each intent to ``model`` at once.

    What a panel shown on its own (``StatesPanel(model)``, ``LayersPanel(model)``)
    and the card of an unregistered model send their intents to.

    Args:
        model: a ``keras.Model``.

    Returns:
        A callable taking an intent and returning True.
    """

    def submit(intent: intents.Intent) -> bool:
        return apply_intent(model, intent)

    return submit
