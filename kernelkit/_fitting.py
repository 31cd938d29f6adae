"""Which models are being fitted now, and the model operations queued until their fit ends.

Recompiling, reloading or resetting a model under a running training loop breaks
it: Keras 3.15 then fails with ``TypeError: 'NoneType' object is not callable``
and the fit is lost. So kernelkit's model operations, called while a kernelkit
fit of that model runs (from a callback, another thread, the card), are queued
here and carried out when the fit ends, with one line saying so; exactly as the
card's intents are. ``LiveProgress`` marks the begin and the end of each fit.

It also holds what the session tells the core about fits and models, so the
core never reaches for the session: the ``LiveProgress`` callbacks of the fits
running now (a Stop from JupyterLab reaches them) and, for each registered
model, its name and the distribution it was built in.
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_LOCK = threading.Lock()
# model -> the operations queued during its running fit, as (description, thunk).
_RUNNING: weakref.WeakKeyDictionary[Any, list[tuple[str, Callable[[], Any]]]] = (
    weakref.WeakKeyDictionary()
)
#: The LiveProgress callbacks of the kernelkit fits running now, innermost last (a fit
#: inside a fit's callback is possible).
CURRENT: list[Any] = []
# model -> (registered name, the distribution it was built in, or None)
_REGISTERED: weakref.WeakKeyDictionary[Any, tuple[str, Any]] = weakref.WeakKeyDictionary()


def stop_current(reason: str = "user") -> bool:
    """Sends ``StopTraining`` to every running kernelkit fit; False if none runs.

    The JupyterLab command's way in (it knows no model): each fit stops after
    its current step, through ``LiveProgress.submit`` like every other stop.
    """
    from .intents import StopTraining

    running = list(CURRENT)
    for live in running:
        live.submit(StopTraining(reason))
    return bool(running)


def stop_fit_of(model: Any, intent: Any) -> bool:
    """Sends a ``StopTraining`` to the running kernelkit fit of ``model``; False if none runs."""
    # Keras's Callback keeps its model as ``_model``; the ``model`` property would sync
    # JAX's training state from this (another) thread.
    running = [live for live in list(CURRENT) if getattr(live, "_model", None) is model]
    for live in running:
        live.submit(intent)
    return bool(running)


def set_registered(model: Any, name: str | None, distribution: Any = None) -> None:
    """Records (or, with ``name`` None, forgets) that ``model`` is registered as ``name``."""
    if name is None:
        _REGISTERED.pop(model, None)
    else:
        _REGISTERED[model] = (name, distribution)


def registered(model: Any) -> tuple[str, Any] | None:
    """(name, distribution) of a registered ``model``, else None."""
    try:
        return _REGISTERED.get(model)
    except TypeError:  # not weak-referenceable
        return None


def begin(model: Any) -> None:
    """Marks ``model`` as being fitted."""
    with _LOCK:
        _RUNNING.setdefault(model, [])


def fitting(model: Any) -> bool:
    """Whether a kernelkit fit of ``model`` runs now."""
    try:
        return model in _RUNNING
    except TypeError:  # not weak-referenceable
        return False


def end(model: Any) -> list[str]:
    """Marks the fit of ``model`` as ended and carries out what was queued, in order.

    Returns:
        One line per operation carried out (also printed).
    """
    with _LOCK:
        queued = _RUNNING.pop(model, [])
    lines = []
    for description, thunk in queued:
        try:
            thunk()
            line = f"kernelkit: applied {description}, queued while the fit ran"
        except Exception as err:  # the fit is over; say what failed, in one line
            line = f"kernelkit: {description}, queued while the fit ran, failed: {err}"
        print(line, file=sys.stdout)
        lines.append(line)
    return lines


def _describe(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(a) for a in args[1:]] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{func.__name__}({', '.join(shown)})"


def queued_during_fit(func: F) -> F:
    """Queues a model operation (first argument: the model) while that model's fit runs.

    Outside a fit the operation runs at once and returns what it returns;
    during one it returns None and prints the line saying it was queued.
    """

    @functools.wraps(func)
    def operation(*args: Any, **kwargs: Any) -> Any:
        model = args[0] if args else kwargs.get("model")
        if model is None or not fitting(model):
            return func(*args, **kwargs)
        description = _describe(func, args, kwargs)
        with _LOCK:
            queue = _RUNNING.get(model)
            if queue is None:  # the fit ended meanwhile
                queue_now = False
            else:
                queue.append((description, functools.partial(func, *args, **kwargs)))
                queue_now = True
        if not queue_now:
            return func(*args, **kwargs)
        name = getattr(model, "name", "model")
        print(f"kernelkit: {description} queued until the running fit of {name!r} ends")
        return None

    return operation  # type: ignore[return-value]
