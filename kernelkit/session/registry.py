"""The registry: registered models, their ``Entry``, and the intents applied to them.

``register`` patches one model's own methods: ``fit`` goes to the fit routing
(``kernelkit.session.fits``) and ``evaluate``/``predict``/... refresh the card
afterwards. Intents from views (freeze, reset, stop) come through
``Entry.submit``: applied at once when no fit runs, queued until the fit ends
otherwise (stop requests act at once).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import keyword
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _fitting, intents, operations
from ..callback import LiveProgress, history_for
from ..history import RunHistory
from ..strategy import in_distribution
from .errors import KernelkitError, refusal


@dataclass
class Entry:
    """A registered model and what kernelkit knows about it.

    Attributes:
        name: the name it is registered under (a Python identifier).
        model: the ``keras.Model``.
        strategy: the distribution strategy it was built in, if any.
        strategy_text: that strategy in words, or where the last fit ran.
        runs: how many fits of it kernelkit has seen.
        last_summary: the last fit's one-line summary.
        last_state: the last fit's end state ("finished", "stopped_by_user"...).
        auto_reset: when stateful layers are reset: "never", "epoch" or "fit".
        pending: the intents queued while a fit runs.
        live: the ``LiveProgress`` of the last (or running) fit.
        listeners: weak references to the card panels' refresh methods.
        fit_options: the ``%%kmodel`` options its later fits inherit.
        sample: a few inputs of the last fit, for the Features tab.
        seed: the cell's ``--seed``, kept in the run ledger.
        watch: the ``ActivationWatch`` of the last fit under ``--watch``.
    """

    name: str
    model: Any
    strategy: Any = None
    strategy_text: str = "default"
    runs: int = 0
    last_summary: str = ""
    last_state: str = ""
    auto_reset: str = "never"
    pending: list[intents.Intent] = field(default_factory=list)
    live: LiveProgress | None = None
    # Weak references to the card panels' refresh methods (see ``listen``).
    listeners: list[weakref.WeakMethod] = field(default_factory=list)
    fit_options: dict[str, Any] = field(default_factory=dict)
    sample: Any = None
    seed: int | None = None
    watch: Any = None

    @property
    def history(self) -> RunHistory:
        """The curves and epoch table kept across this model's fits."""
        return history_for(self.model)

    @property
    def training(self) -> bool:
        """True while a fit of this model runs."""
        return self.live is not None and self.live.running

    def submit(self, intent: intents.Intent) -> bool:
        """Applies ``intent`` now (True) or queues it until the running fit ends (False)."""
        if self.training and not isinstance(intent, intents.StopTraining):
            # A stop acts at once (it sets a flag); model changes wait for the fit's end.
            self.pending.append(intent)
            return False
        apply_intent(self, intent)
        return True

    def apply_pending(self) -> None:
        """Applies the intents queued during a fit, in order."""
        queued, self.pending = self.pending, []
        for intent in queued:
            apply_intent(self, intent)

    def listen(self, refresh: Callable[[], None]) -> None:
        """Calls ``refresh`` (a bound method) after each change, for as long as its object lives.

        Each shown card listens; a weak reference lets a card whose widgets
        were closed go, instead of every card ever built refreshing forever.
        """
        self.listeners.append(weakref.WeakMethod(refresh))  # type: ignore[arg-type]

    def changed(self) -> None:
        """Tells the card's panels that the model changed (after a fit, a freeze…)."""
        alive = []
        for ref in list(self.listeners):
            refresh = ref()
            if refresh is None:
                continue
            alive.append(ref)
            try:
                refresh()
            except Exception as err:  # one panel failing must not fail the fit that ended
                print(
                    f"kernelkit: a card of {self.name} could not refresh and was skipped: {err!r}",
                    file=sys.stderr,
                )
        self.listeners[:] = alive


def apply_intent(entry: Entry, intent: intents.Intent) -> None:
    """Carries out one intent on a registered model, then tells its cards.

    The model operations are ``kernelkit.operations.apply_intent``'s, the same
    path a standalone panel takes; the session keeps what is its own: the
    model's auto-reset policy, and its running fit for ``StopTraining``.

    Args:
        entry: the model's registry entry.
        intent: what a view asked for.

    Raises:
        ValueError: what the operation raises (an unknown layer, an auto-reset
            policy other than "never", "epoch" or "fit").
    """
    if isinstance(intent, intents.StopTraining):
        if entry.live is not None and entry.live.running:
            entry.live.submit(intent)
        return
    operations.apply_intent(entry.model, intent)
    if isinstance(intent, intents.SetAutoReset):
        entry.auto_reset = intent.every
    entry.changed()


# --- the registry ------------------------------------------------------------------------

_REGISTRY: dict[str, Entry] = {}

#: Where a registered model's own ``fit`` sends its calls: ``fits.routed_fit``, which
#: installs itself here when the package imports it. The registry is below the fit routing
#: (cell -> fits -> registry), so it is handed the route instead of importing it.
_ROUTE: list[Callable[..., Any]] = []


def route_fits(route: Callable[..., Any]) -> None:
    """Sets where registered models' ``fit`` calls go: ``route(model, args, kwargs, keras_fit)``."""
    _ROUTE[:] = [route]


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise KernelkitError(
            f"{name!r} is not a valid Python identifier; name the model like a variable, "
            "e.g. %%kmodel my_model"
        )
    return name


def _check_model(model: Any, fn: str) -> None:
    from ..freezing import check_model  # the one check every public function shares

    check_model(model, fn)


def register(name: str, model: Any, *, strategy: Any = None) -> Entry:
    """Registers ``model`` under ``name``: later ``model.fit`` calls get live progress.

    Registering a name again replaces the earlier registration cleanly (the
    earlier model's ``fit`` is restored).

    Args:
        name: a Python identifier.
        model: a ``keras.Model``.
        strategy: the distribution strategy the model was built in, if any.

    Returns:
        The registry entry.

    Raises:
        ValueError: if ``name`` is not an identifier.
        TypeError: if ``model`` is not a Keras model.

    Example:
        >>> kernelkit.register("clf", model)  # doctest: +SKIP
    """
    _check_name(name)
    _check_model(model, "register")
    old = _REGISTRY.get(name)
    if old is not None and old.model is not model:
        _unpatch(old.model)
    for other in list(_REGISTRY.values()):
        if other.model is model and other.name != name:
            del _REGISTRY[other.name]
    entry = old if old is not None and old.model is model else Entry(name=name, model=model)
    entry.strategy = strategy if strategy is not None else entry.strategy
    entry.strategy_text = _describe_strategy(entry.strategy)
    _REGISTRY[name] = entry
    _fitting.set_registered(model, name, entry.strategy)  # what the core may ask about it
    _patch(entry)
    with contextlib.suppress(ImportError):
        from .. import freezing

        freezing.track_compile(model)
    return entry


def unregister(name: str) -> None:
    """Forgets ``name`` and restores its model's own ``fit``.

    Args:
        name: a registered name; an unknown one does nothing.
    """
    entry = _REGISTRY.pop(name, None)
    if entry is not None:
        _unpatch(entry.model)
        _fitting.set_registered(entry.model, None)


def get(name: str) -> Any:
    """Returns the model registered under ``name``.

    Args:
        name: a registered name.

    Returns:
        The ``keras.Model``.

    Raises:
        KeyError: with the registered names, if there is none.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise KeyError(f"no model is registered as {name!r} (registered: {known})")
    return entry.model


def entry_for(model: Any) -> Entry | None:
    """The registry entry of ``model`` (by identity), if it is registered.

    Args:
        model: any object.

    Returns:
        Its entry, or None.
    """
    for entry in _REGISTRY.values():
        if entry.model is model:
            return entry
    return None


def _describe_strategy(strategy: Any) -> str:
    if strategy is None:
        return "default"
    try:
        from ..strategy import describe

        return describe(strategy)[0]
    except Exception:
        return type(strategy).__name__


# Calls after which the card's panels refresh (state norms move with predict too).
_REFRESHING = ("predict", "predict_on_batch", "train_on_batch", "test_on_batch", "evaluate")


def _patch(entry: Entry) -> None:
    """Wraps this one model's ``fit`` (and refreshes its card after other calls)."""
    model = entry.model

    own = type(model).fit

    @functools.wraps(own)
    def fit(*args: Any, **kwargs: Any) -> Any:
        return _ROUTE[0](model, args, kwargs, keras_fit=None)

    # Reads as the bound method it stands in for: inspect.signature(clf.fit) has no self.
    fit.__signature__ = inspect.signature(own.__get__(model))  # type: ignore[attr-defined]
    fit.__kernelkit__ = True  # type: ignore[attr-defined]
    object.__setattr__(model, "fit", fit)
    for name in _REFRESHING:
        object.__setattr__(model, name, _refreshing(entry, getattr(type(model), name)))


def _refreshing(entry: Entry, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if method.__name__ in ("evaluate", "predict") and not entry.training:
            _check_call_batches(entry, method.__name__, args, kwargs)
        try:
            with in_distribution(entry.strategy):
                return method(entry.model, *args, **kwargs)
        finally:
            if not entry.training:
                entry.changed()

    call.__doc__ = method.__doc__
    call.__kernelkit__ = True  # type: ignore[attr-defined]
    return call


def _check_call_batches(entry: Entry, name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """evaluate/predict of arrays over a distribution: refused in one line where Keras fails."""
    if entry.strategy is None:
        return
    from ..strategy import check_batches

    x = args[0] if args else kwargs.get("x")
    position = 2 if name == "evaluate" else 1  # evaluate(x, y, batch_size), predict(x, batch_size)
    batch = args[position] if len(args) > position else kwargs.get("batch_size")
    try:
        check_batches(
            entry.strategy,
            x,
            batch_size=batch,
            purpose="evaluation" if name == "evaluate" else "prediction",
            steps=kwargs.get("steps"),
        )
    except ValueError as err:
        raise refusal(f"{entry.name}.{name}: {err}") from None


def _unpatch(model: Any) -> None:
    for name in ("fit", *_REFRESHING):
        if getattr(model.__dict__.get(name), "__kernelkit__", False):
            object.__delattr__(model, name)
