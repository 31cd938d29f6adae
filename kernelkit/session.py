"""The one orchestrator: registry, fits with live progress, and ``%%kmodel`` cells.

Everything the magic does is callable from here: ``register``, ``models``,
``card``, ``fit`` and ``run_cell``. Intents from views (freeze, reset,
stop) come through ``Entry.submit``: applied at once when no fit runs,
queued until the fit ends otherwise (stop requests act at once).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import keyword
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras

from . import _fitting, display, intents
from .callback import LiveProgress, history_for
from .history import RunHistory
from .strategy import in_distribution


class KernelkitError(ValueError):
    """Misuse of kernelkit: one line naming the problem and the fix."""


class FitRefused(KernelkitError):
    """A fit kernelkit refused before Keras started it: nothing changed."""


def _refusal(message: str) -> Exception:
    """A refusal as the notebook user should see it: IPython's one-line UsageError in a shell.

    For the calls that stand in for Keras's own (``Model.fit`` in a cell,
    ``NAME.fit``/``evaluate``/``predict``): IPython prints exactly
    ``UsageError`` (not a subclass) as one line. Outside IPython it is a
    :class:`FitRefused`; an explicit ``kernelkit.fit`` always raises that.
    """
    shell = None
    with contextlib.suppress(ImportError):
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return FitRefused(message)
    from IPython.core.error import UsageError

    return UsageError(message)


@dataclass
class Entry:
    """A registered model and what kernelkit knows about it."""

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
    sample: Any = None  # a few inputs of the last fit, for the Features tab
    seed: int | None = None  # the cell's --seed, kept in the run ledger
    watch: Any = None  # the ActivationWatch of the last fit under --watch

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
        if isinstance(intent, intents.StopTraining):
            if self.live is not None:
                self.live.request_stop(intent.reason)
            return True
        if self.training:
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
    """Carries out one intent on a registered model."""
    if isinstance(intent, intents.SetTrainable):
        from . import freezing

        freezing.apply_intent(entry.model, intent)
    elif isinstance(intent, intents.FreezeTo):
        from . import finetune

        finetune.apply_intent(entry.model, intent)
    elif isinstance(intent, intents.ResetStates):
        from . import rnn_state

        rnn_state.reset_states(entry.model, list(intent.layers) if intent.layers else None)
    elif isinstance(intent, intents.SetAutoReset):
        if intent.every not in ("never", "epoch", "fit"):
            raise KernelkitError(
                f"auto-reset {intent.every!r} is not allowed; use 'never', 'epoch' or 'fit'"
            )
        entry.auto_reset = intent.every
    elif isinstance(intent, intents.StopTraining) and entry.live is not None:
        entry.live.request_stop(intent.reason)
    entry.changed()


# --- the registry ------------------------------------------------------------------------

_REGISTRY: dict[str, Entry] = {}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise KernelkitError(
            f"{name!r} is not a valid Python identifier; name the model like a variable, "
            "e.g. %%kmodel my_model"
        )
    return name


def _check_model(model: Any, fn: str) -> None:
    from .freezing import check_model  # the one check every public function shares

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
        from . import freezing

        freezing.track_compile(model)
    return entry


def unregister(name: str) -> None:
    """Forgets ``name`` and restores its model's own ``fit``."""
    entry = _REGISTRY.pop(name, None)
    if entry is not None:
        _unpatch(entry.model)
        _fitting.set_registered(entry.model, None)


def get(name: str) -> Any:
    """Returns the model registered under ``name``.

    Raises:
        KeyError: with the registered names, if there is none.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise KeyError(f"no model is registered as {name!r} (registered: {known})")
    return entry.model


def entry_for(model: Any) -> Entry | None:
    """The registry entry of ``model`` (by identity), if it is registered."""
    for entry in _REGISTRY.values():
        if entry.model is model:
            return entry
    return None


def _describe_strategy(strategy: Any) -> str:
    if strategy is None:
        return "default"
    try:
        from .strategy import describe

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
        return _routed_fit(model, args, kwargs, keras_fit=None)

    # Reads as the bound method it stands in for: inspect.signature(clf.fit) has no self.
    fit.__signature__ = inspect.signature(own.__get__(model))  # type: ignore[attr-defined]
    fit.__kernelkit__ = True  # type: ignore[attr-defined]
    object.__setattr__(model, "fit", fit)
    for name in _REFRESHING:
        object.__setattr__(model, name, _refreshing(entry, getattr(type(model), name)))


def _routed_fit(
    model: Any, args: tuple, kwargs: dict[str, Any], keras_fit: Callable[..., Any] | None
) -> Any:
    """A ``Model.fit`` call that kernelkit stands in for: Keras's arguments only, one-line refusals."""
    cell = _FIT_DEFAULTS[-1] if _FIT_DEFAULTS else None
    if cell is not None and cell.get("lr_find"):
        # %%kmodel NAME --lr-find: the cell's fits run the finder on their own arguments
        # and leave the model as it was.
        from .lr_find import LRFindError, lr_find_fit_call

        try:
            return lr_find_fit_call(model, args, kwargs, cell["name"])
        except LRFindError as err:
            raise _refusal(str(err)) from None
    own = [name for name in _OWN_OPTIONS if name in kwargs]
    if own:
        name = own[0]
        value = kwargs[name]
        raise _refusal(
            f"{name}= is not a Model.fit argument (Keras 3 has none such): for kernelkit's "
            f"{name}, use the %%kmodel option --{name}"
            + ("" if isinstance(value, bool) else f" {value}")
            + f" or kernelkit.fit(model, ..., {name}={value!r})"
        )
    try:
        return _fit(
            model,
            args,
            kwargs,
            workers=None,
            resume=None,
            checkpoint=None,
            tensorboard=False,
            keras_fit=keras_fit,
        )
    except FitRefused as err:
        raise _refusal(str(err)) from None


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
    """evaluate/predict of arrays over a distribution: refused in one line where Keras would fail."""
    if entry.strategy is None:
        return
    from .strategy import check_batches

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
        raise _refusal(f"{entry.name}.{name}: {err}") from None


def _unpatch(model: Any) -> None:
    for name in ("fit", *_REFRESHING):
        if getattr(model.__dict__.get(name), "__kernelkit__", False):
            object.__delattr__(model, name)


def models() -> Any:
    """Returns the table of registered models (name, class, parameters, runs, last loss)."""
    from .views.models import ModelTable

    return ModelTable(list(_REGISTRY.values()))


def _ledger_name(model: Any) -> str | None:
    """A registered name from a name, a registered model, or None (every model)."""
    if model is None or isinstance(model, str):
        return model
    entry = entry_for(model)
    if entry is None:
        raise KernelkitError(
            "runs are kept for registered models: pass the name given to %%kmodel or "
            "kernelkit.register(NAME, model)"
        )
    return entry.name


def runs(model: Any = None, which: Any = None) -> Any:
    """The recorded runs of a model, as a table that reads without a kernel.

    Every fit of a registered model (a ``%%kmodel`` cell's included) is kept
    in the run ledger (``kernelkit.ledger``: SQLite in ``.kernelkit/`` next to
    the notebook), so the table survives a kernel restart.

    Args:
        model: a registered name or model; None for every model's runs.
        which: which runs: a run id, -1 for the latest, a state ("finished"),
            a filter on the recorded settings (``{"learning_rate": 1e-3}``), a
            function of the run, or a list of these; default all.

    Returns:
        A ``RunTable``: shown as a table, indexed as a list of ``ledger.Run``,
        with ``.sort("val_loss")``.

    Raises:
        KernelkitError: a model that is not registered.
        ValueError: a run id that is not there.

    Example:
        >>> kernelkit.runs("mnist").sort("val_loss")  # doctest: +SKIP
    """
    from .views.ledger import runs as table

    return table(_ledger_name(model), which)


def compare(model: Any = None, which: Any = None, metrics: Any = None) -> Any:
    """Overlay the curves of chosen runs: one chart per metric, one colour per run.

    Args:
        model: a registered name or model, None for every model, or a table
            from :func:`runs`.
        which: which runs, as in :func:`runs`; default all.
        metrics: the metrics to draw; default loss, val_loss and one more.

    Example:
        >>> kernelkit.compare("mnist", which=[-2, -1])  # doctest: +SKIP
    """
    from .views.ledger import RunTable, compare as overlay

    return overlay(model if isinstance(model, RunTable) else _ledger_name(model), which, metrics)


def delete_runs(model: Any, which: Any) -> int:
    """Delete chosen runs of a model from the ledger; returns how many went.

    Args:
        model: a registered name or model.
        which: which runs, as in :func:`runs` (required: nothing is deleted by default).
    """
    from . import ledger

    book = ledger.Ledger()
    chosen = ledger.select(book.runs(_ledger_name(model)), which)
    return book.delete(r.id for r in chosen)


def export_runs(model: Any, log_dir: str, which: Any = None) -> list[str]:
    """Write chosen runs as TensorBoard event files under ``log_dir``; returns their folders.

    Example:
        >>> kernelkit.export_runs("mnist", "tb")  # then: %tensorboard --logdir tb  # doctest: +SKIP
    """
    from . import ledger

    chosen = ledger.select(ledger.Ledger().runs(_ledger_name(model)), which)
    return ledger.export_tensorboard(chosen, log_dir)


def activation_stats(model: Any) -> Any:
    """The activation statistics of the model's last ``--watch`` fit, as heat strips.

    Args:
        model: a registered model (or its name) trained in a ``%%kmodel NAME --watch`` cell.

    Returns:
        A ``WatchResult``: one row per layer, one cell per epoch, for the mean,
        the spread and the share of dead units; ``.watch`` holds the numbers.

    Raises:
        KernelkitError: the model is not registered, or was not trained under ``--watch``.

    Example:
        >>> kernelkit.activation_stats("mlp")  # doctest: +SKIP
    """
    entry = _REGISTRY.get(model) if isinstance(model, str) else entry_for(model)
    if entry is None:
        raise KernelkitError(
            f"{model!r} is not a registered model: pass the NAME of a %%kmodel NAME --watch cell"
        )
    if entry.watch is None:
        raise KernelkitError(
            f"{entry.name} was not trained under --watch: add --watch to its %%kmodel line"
        )
    from .views.watch import WatchResult

    return WatchResult(entry.watch)


def card(model: Any) -> Any:
    """Returns the interactive model card of ``model`` (a model or a registered name)."""
    from .views.card import ModelCard

    if isinstance(model, str):
        model = get(model)
    _check_model(model, "card")
    entry = entry_for(model)
    return ModelCard(model, entry, submit=None if entry is not None else _apply_now(model))


def _apply_now(model: Any) -> Callable[[intents.Intent], bool]:
    """A card's ``submit`` for a model that is not registered: each intent applied at once."""

    def submit(intent: intents.Intent) -> bool:
        apply_intent(Entry(name=model.name, model=model), intent)
        return True

    return submit


# --- fitting -----------------------------------------------------------------------------


@contextlib.contextmanager
def _graceful_interrupt(live: LiveProgress) -> Iterator[None]:
    """First Ctrl-C / kernel interrupt stops after the current step; a second aborts.

    Keras has no try/finally around its loop, so a raw KeyboardInterrupt
    skips every callback's on_train_end (measured; keras-team/keras#51).
    Only the main thread can own a signal handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if live.stop_requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        live.request_stop("user")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _has_live(callbacks: list[Any]) -> LiveProgress | None:
    for cb in callbacks:
        if isinstance(cb, LiveProgress):
            return cb
    return None


#: Keras's own ``Model.fit``, taken before any cell routes it, and its parameters.
_KERAS_FIT = keras.Model.fit
_FIT_SIGNATURE = inspect.signature(_KERAS_FIT)
#: kernelkit.fit's own options, which Keras's ``Model.fit`` does not take.
_OWN_OPTIONS = ("workers", "resume", "checkpoint", "tensorboard")


def fit(
    model: Any,
    x: Any = None,
    y: Any = None,
    *args: Any,
    workers: int | None = None,
    resume: str | None = None,
    checkpoint: str | None = None,
    tensorboard: bool | str = False,
    **kwargs: Any,
) -> Any:
    """``model.fit`` with live progress and a graceful interrupt.

    Accepts every ``Model.fit`` argument, positional ones too, bound with
    Keras's own signature, and returns Keras's ``History``. A ``LiveProgress``
    is added unless ``callbacks`` already holds one; ``verbose`` defaults to 0
    (the view replaces Keras's progress bar), and an explicit ``verbose=0``
    keeps the text line quiet outside notebooks. The first kernel interrupt
    stops at the end of the current step with every callback's
    ``on_train_end`` run; a second aborts at once.

    Args:
        model: a compiled ``keras.Model``.
        x: as in ``Model.fit``.
        y: as in ``Model.fit``.
        *args: ``Model.fit``'s further positional arguments (batch_size,
            epochs, verbose, callbacks...).
        workers: train data-parallel in this many worker processes
            (Keras's JAX distribution); see ``kernelkit.workers``.
        resume: a directory for ``BackupAndRestore``: re-running continues
            at the right epoch.
        checkpoint: a path for best-weights checkpointing: the epoch with the
            lowest ``val_loss``, or, for a fit without validation data, the
            lowest training ``loss`` (one line says so when the fit starts).
        tensorboard: True (or a run name) to write TensorBoard logs under
            ``runs/NAME/<timestamp>``.
        **kwargs: every other ``Model.fit`` argument.

    Returns:
        The ``keras.callbacks.History`` of this fit.

    Raises:
        FitRefused: the fit cannot work (uneven batches over the devices, a
            stateful model under JAX, a ``resume`` backup that is damaged or
            of another architecture...): nothing ran and nothing changed.
        TypeError: an argument ``Model.fit`` does not take, as Keras says it.

    Example:
        >>> history = kernelkit.fit(model, x, y, epochs=3, validation_split=0.1)  # doctest: +SKIP
    """
    options = {"workers": workers, "resume": resume, "checkpoint": checkpoint}
    return _fit(model, (x, y, *args), kwargs, tensorboard=tensorboard, keras_fit=None, **options)


def _bind(model: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``Model.fit``'s arguments by name, as Keras binds them (its TypeError if they do not)."""
    bound = _FIT_SIGNATURE.bind(model, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(_FIT_SIGNATURE.parameters)))  # self
    return arguments


def _callback_list(given: Any) -> tuple[list[Any], Any]:
    """Every form of ``callbacks=`` Keras takes -> (a list to extend, the CallbackList or None)."""
    if given is None:
        return [], None
    if isinstance(given, keras.callbacks.CallbackList):
        return list(given.callbacks), given
    if isinstance(given, keras.callbacks.Callback):
        return [given], None
    return list(given), None


def _fit(
    model: Any,
    args: tuple,
    kwargs: dict[str, Any],
    *,
    workers: int | None,
    resume: str | None,
    checkpoint: str | None,
    tensorboard: bool | str,
    keras_fit: Callable[..., Any] | None,
) -> Any:
    """kernelkit.fit's body; ``keras_fit`` is Keras's own fit when a subclass's override
    called ``super().fit`` (so the override runs once), else None: ``type(model).fit``."""
    _check_model(model, "fit")
    entry = entry_for(model)
    # Options from the %%kmodel line: the cell's fits and the model's later fits inherit them.
    inherited = dict(entry.fit_options) if entry is not None else {}
    if _FIT_DEFAULTS:
        inherited.update(_FIT_DEFAULTS[-1]["options"])
    workers = workers if workers is not None else inherited.get("workers")
    worker_options = {}
    if workers is not None:  # fit_on_workers' own options (timeout, hosts...) are not Keras's
        worker_options = {k: kwargs.pop(k) for k in _worker_options() if k in kwargs}
    kwargs = _bind(model, args, kwargs)
    resume = resume or inherited.get("resume")
    checkpoint = checkpoint or inherited.get("checkpoint")
    tensorboard = tensorboard or inherited.get("tensorboard", False)
    callbacks, given_list = _callback_list(kwargs.pop("callbacks", None))
    quiet = kwargs.get("verbose", "auto") == 0
    kwargs.setdefault("verbose", 0)
    x, y = kwargs.pop("x", None), kwargs.pop("y", None)
    live = _has_live(callbacks)
    added = []
    if live is None:
        live = LiveProgress(display="none" if quiet and not _in_notebook() else "auto")
        added.append(live)
    cell = _FIT_DEFAULTS[-1] if _FIT_DEFAULTS else None
    name = entry.name if entry is not None else getattr(model, "name", "model")
    if entry is None and cell is not None and cell["ns"].get(cell["name"]) is model:
        name = cell["name"]  # the cell's NAME is bound already: show it
    live.model_name = live.model_name or name

    planned = entry.strategy if entry is not None else (cell["strategy"] if cell else None)
    if resume:
        from . import checkpoints

        try:
            # Before anything changes (a recompile, a restore): a damaged backup or one
            # of another architecture is one line, and nothing trains.
            checkpoints.check_resume(resume, model)
        except ValueError as err:
            raise FitRefused(str(err).splitlines()[0]) from None
    if workers is None:
        try:
            notes = _before_fit(model, entry, planned, x, kwargs)
        except (KernelkitError, ValueError) as err:
            # Nothing ran yet: one line, and the model is as it was.
            raise FitRefused(str(err).splitlines()[0]) from None
        for note in notes:
            print(note)

    validating = kwargs.get("validation_data") is not None or bool(kwargs.get("validation_split"))
    extra = _run_callbacks(model, name, resume, checkpoint, tensorboard, live, validating)
    before = extra  # BackupAndRestore first: it moves the initial epoch
    if entry is not None and entry.auto_reset != "never":
        from .rnn_state import ResetStates

        added.append(ResetStates(every=entry.auto_reset))
    _attach_lab(live)

    # The run ledger: every fit of a registered model (or of the cell's NAME), in this
    # process or in workers (rank 0's events reach the same sinks), written at the fit's
    # begin, each epoch end and its end only; never per step.
    recorder = None
    if (entry is not None or cell is not None) and _ledger_on():
        from . import ledger

        seed = entry.seed if entry is not None else (cell or {}).get("seed")
        recorder = ledger.recorder_for(model, name, {**kwargs, "x": x, "y": y}, seed=seed)
        live.ghost = _previous_run(name)
        live.sinks.append(recorder)

    if workers is not None:
        from .workers import fit_on_workers

        try:
            return fit_on_workers(
                model,
                x,
                y,
                workers=workers,
                callbacks=[*before, *callbacks, *added],
                **worker_options,
                **kwargs,
            )
        finally:
            if recorder is not None:
                live.sinks.remove(recorder)

    if given_list is not None:
        # A ready CallbackList is Keras's to use as it is: ours join it for this fit only.
        for callback in [*before, *added]:
            callback.set_model(model)
            callback.set_params(given_list.params)
        given_list.callbacks[:0] = before
        given_list.callbacks.extend(added)
        passed: Any = given_list
    else:
        passed = [*before, *callbacks, *added]

    if entry is not None:
        entry.live = live
        entry.sample = _sample(x) if x is not None else entry.sample
    watch = _watch_for(entry, cell, x)
    if watch is not None:
        passed = [*passed, watch] if given_list is None else passed
        if given_list is not None:
            watch.set_model(model)
            given_list.callbacks.append(watch)
            added.append(watch)
    _fitting.CURRENT.append(live)
    if cell is not None:
        cell["fits"].append((model, live))
    run = keras_fit if keras_fit is not None else type(model).fit
    # Where the time goes: the user's own callbacks are timed (only the hooks they
    # override, so Keras's async choice is unchanged), and any that turn off Keras's
    # async dispatch are named in the final result.
    from .timing import CallbackTimer, async_blockers

    users = [c for c in callbacks if c is not live]
    timer = CallbackTimer(users)
    live.timer = timer
    live.blockers = async_blockers(users)
    try:
        with _graceful_interrupt(live), in_distribution(planned), timer.timing():
            history = run(model, x, y, callbacks=passed, **kwargs)
    except BaseException as err:
        live.fail(err)
        from .checkpoints import ResumeMismatch

        if isinstance(err, ResumeMismatch):  # an unbuilt model's backup, checked once built
            raise FitRefused(str(err)) from None
        raise
    finally:
        _fitting.CURRENT.remove(live)
        if recorder is not None:
            live.sinks.remove(recorder)
        if watch is not None:
            if entry is not None:
                entry.watch = watch
            elif cell is not None:
                cell["watch"] = watch
        if given_list is not None:
            given_list.callbacks[:] = [
                c for c in given_list.callbacks if not any(c is o for o in [*before, *added])
            ]
        if entry is not None:
            _record_run(entry, live)
            entry.apply_pending()
            entry.changed()
    return history


def _worker_options() -> tuple[str, ...]:
    """The keyword-only options of ``fit_on_workers`` that are not ``Model.fit`` arguments."""
    from .workers import fit_on_workers

    return tuple(
        name
        for name, parameter in inspect.signature(fit_on_workers).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in _FIT_SIGNATURE.parameters
        and name != "workers"
    )


def _ledger_on() -> bool:
    from . import ledger

    return ledger.enabled()


def _previous_run(name: str) -> Any:
    """The epochs of NAME's last finished run in the ledger, for the live view's ghost curve."""
    from . import ledger

    try:
        runs = [r for r in ledger.Ledger().runs(name) if r.epochs and r.state != "running"]
    except ledger.LedgerError:
        return None
    return runs[-1] if runs else None


def _watch_for(entry: Entry | None, cell: dict[str, Any] | None, x: Any) -> Any:
    """An ActivationWatch on the fit's first 32 inputs, under ``--watch``; else None."""
    wanted = (cell or {}).get("watch_on") or (entry is not None and entry.fit_options.get("watch"))
    if not wanted:
        return None
    probe = _sample(x, 32) if x is not None else None
    if probe is None:
        print("kernelkit: --watch needs arrays as x (a probe batch is taken from them); skipped")
        return None
    from .watch import ActivationWatch

    return ActivationWatch(probe)


def _in_notebook() -> bool:
    from .views.progress import in_notebook_kernel

    return in_notebook_kernel()


def _record_run(entry: Entry, live: LiveProgress) -> None:
    """What the card and ``%kmodel`` say about the last fit: read from the fit itself."""
    entry.runs += 1
    status = live.status  # folded from the fit's events: there with display="none" too
    seen = status.t_now is not None  # no event: the fit failed before Keras began it
    entry.last_summary = status.summary() if seen else ""
    entry.last_state = status.state if seen else ""
    if live.ran_on is not None:  # None: the fit failed before Keras began it
        entry.strategy_text = live.ran_on[0]


def _sample(x: Any, count: int = 64) -> Any:
    """The first ``count`` inputs when ``x`` is arrays (not a dataset or generator)."""
    try:
        if isinstance(x, dict):
            return {k: v[:count] for k, v in x.items() if hasattr(v, "shape")} or None
        if isinstance(x, (list, tuple)):
            parts = [v[:count] for v in x if hasattr(v, "shape")]
            return parts if len(parts) == len(x) else None
        return x[:count] if hasattr(x, "shape") else None
    except Exception:
        return None


def _before_fit(
    model: Any, entry: Entry | None, planned: Any, x: Any, kwargs: dict[str, Any]
) -> list[str]:
    """Checks and adjustments that must happen before Keras starts: notes to print.

    Every fit gets them, a cell's own fits too: ``planned`` is the strategy the
    fit will run in (the registered model's, the cell's, or None for the one in
    force).
    """
    notes: list[str] = []
    from . import rnn_state

    rnn_state.check_stateful_fit(model, x, **kwargs)
    from . import freezing

    # Every fit, registered model or not: a `layer.trainable = False` set by hand since
    # the last compile would otherwise be ignored by Keras's stale train function.
    line = freezing.ensure_trainable_applied(
        model, entry.name if entry is not None else getattr(model, "name", None)
    )
    if line:
        notes.append(line)
    from .strategy import prepare_fit

    # prepare_fit checks sample counts too, so it sees x and y.
    with in_distribution(planned):
        adjusted, more = prepare_fit(model, planned, {"x": x, **kwargs})
    adjusted.pop("x", None)
    kwargs.clear()
    kwargs.update(adjusted)
    notes.extend(more)
    return notes


def _run_callbacks(
    model: Any,
    name: str,
    resume: str | None,
    checkpoint: str | None,
    tensorboard: bool | str,
    live: LiveProgress,
    validating: bool = True,
) -> list[Any]:
    extra: list[Any] = []
    if resume:
        from . import checkpoints

        state = checkpoints.resumed_state(resume)
        # Restore first: BackupAndRestore moves the initial epoch in on_train_begin.
        for callback in checkpoints.resume_callbacks(resume):
            if isinstance(callback, checkpoints.ResumeBackup) and model.built:
                callback.checked_model = model  # _fit compared the backup with it already
            extra.append(callback)
        if state is not None:
            live.resumed_at = state.epoch
            history = history_for(model)
            if not history.epochs:  # a fresh kernel: draw the finished epochs too
                history.seed(state.epochs, state.history)
            else:  # the same model after a stop: the epoch it cut short is done again
                history.drop_from(state.epoch + history.offset)
    if checkpoint:
        from . import checkpoints

        # Without validation data there is no val_loss: Keras would only warn each epoch
        # and keep nothing, so the best epoch is the one with the lowest training loss.
        extra.append(
            checkpoints.checkpoint_callback(checkpoint, monitor="val_loss" if validating else "loss")
        )
        if not validating:
            print(
                f"kernelkit {name}: no validation data, so the checkpoint {checkpoint} keeps the "
                "epoch with the lowest training loss; pass validation_data or validation_split "
                "to keep the lowest val_loss instead"
            )
    if tensorboard:
        from . import checkpoints

        run_name = tensorboard if isinstance(tensorboard, str) else name
        cb, logdir = checkpoints.tensorboard_callback(run_name)
        extra.append(cb)
        print(checkpoints.tensorboard_hint(logdir))
    return extra


def _attach_lab(live: LiveProgress) -> None:
    """Adds the sinks every fit reports to (the JupyterLab status item, once connected)."""
    for sink in display.fit_sinks():
        if not any(s is sink for s in live.sinks):
            live.sinks.append(sink)


def stop_current(reason: str = "user") -> bool:
    """Asks every running kernelkit fit to stop after its current step."""
    return _fitting.stop_current(reason)


# --- %%kmodel cells ----------------------------------------------------------------------


class CellError(KernelkitError):
    """The cell's own code failed (its traceback was already shown)."""


@contextlib.contextmanager
def _fits_get_progress() -> Iterator[None]:
    """Routes every ``Model.fit`` made while the cell runs through ``kernelkit.fit``."""
    original = keras.Model.fit

    @functools.wraps(original)
    def fit_with_progress(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("callbacks")
        if given is None and len(args) > 5:
            given = args[5]  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
        if _has_live(_callback_list(given)[0]) is not None and _fitting.CURRENT:
            return original(self, *args, **kwargs)  # kernelkit's own fit, on its way to Keras
        # type(self).fit is this wrapper unless a subclass overrides fit: then that
        # override is running now (it called super().fit), and must not run again.
        overridden = type(self).fit is not fit_with_progress
        return _routed_fit(self, args, kwargs, keras_fit=original if overridden else None)

    keras.Model.fit = fit_with_progress  # type: ignore[method-assign]
    try:
        yield
    finally:
        keras.Model.fit = original  # type: ignore[method-assign]


def run_cell(
    shell: Any,
    name: str,
    cell: str,
    *,
    strategy: str = "auto",
    seed: Any = None,
    deterministic: bool = False,
    show_card: bool = True,
    workers: int | None = None,
    resume: str | None = None,
    checkpoint: str | None = None,
    tensorboard: bool = False,
    lr_find: bool = False,
    watch: bool = False,
) -> Any:
    """Runs a ``%%kmodel NAME`` cell: scope, seed, live fits, registration, card.

    Args:
        shell: the IPython shell.
        name: the variable the cell must assign a ``keras.Model`` to.
        cell: the cell's code.
        strategy: a ``kernelkit.strategy`` spec.
        seed: an integer for ``keras.utils.set_random_seed``.
        deterministic: also enable TensorFlow op determinism.
        show_card: display the model card at the end.
        workers: train every fit of the cell in this many worker processes.
        resume: a BackupAndRestore directory for the cell's fits.
        checkpoint: a best-weights checkpoint path for the cell's fits.
        tensorboard: write TensorBoard logs for the cell's fits.
        lr_find: run ``kernelkit.lr_find`` on each ``Model.fit`` call of the cell
            instead of training (the fit returns its ``LRFindResult``).
        watch: record each layer's activation statistics once per epoch, on a
            probe of the fit's first 32 inputs (``kernelkit.watch``); the card
            shows them.

    Returns:
        The model card (displayed by IPython) or None with ``show_card=False``.

    Raises:
        KernelkitError: misuse; nothing was changed.
        CellError: the cell's own code raised (its traceback is shown).
    """
    _check_name(name)
    if not cell.strip():
        raise KernelkitError(
            f"the %%kmodel {name} cell is empty; write the code that builds (and compiles, "
            "fits) the model below the magic line"
        )
    seed_value = None
    if seed is not None:
        try:
            seed_value = int(str(seed))
        except ValueError:
            raise KernelkitError(f"--seed {seed!r} is not an integer; use e.g. --seed 42") from None
    if workers is not None and workers < 1:
        raise KernelkitError(f"--workers {workers} must be 1 or more")
    if lr_find and (workers is not None or resume or checkpoint or tensorboard):
        raise KernelkitError(
            "--lr-find trains nothing to resume, checkpoint or log, and not in workers: "
            "drop --workers, --resume, --checkpoint and --tensorboard"
        )
    if workers is not None and (resume or checkpoint or tensorboard):
        used = [
            o
            for o, v in (
                ("--resume", resume),
                ("--checkpoint", checkpoint),
                ("--tensorboard", tensorboard),
            )
            if v
        ]
        raise KernelkitError(
            f"{', '.join(used)} cannot run in workers yet; drop it or train without --workers"
        )
    # Checked before the cell runs: a bad path, a damaged backup or a missing engine
    # is a one-line usage error, not a traceback from inside the user's fit.
    if workers is not None:
        from .workers import check_engine

        try:
            check_engine()
        except ImportError as err:
            raise KernelkitError(str(err)) from None
    if resume or checkpoint or tensorboard:
        from . import checkpoints

        if resume:
            checkpoints.check_resume(resume)  # the folder and the backup's files
        if checkpoint:
            checkpoints.checkpoint_callback(checkpoint)
        if tensorboard:
            checkpoints.check_tensorboard(name)  # the package, and runs/NAME can be made
    from .strategy import scope as strategy_scope

    chosen, users = _choose_strategy(strategy)
    if seed_value is not None:
        keras.utils.set_random_seed(seed_value)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    user_ns = shell.user_ns
    missing = object()
    before = user_ns.get(name, missing)
    fit_options = {
        "workers": workers,
        "resume": resume,
        "checkpoint": checkpoint,
        "tensorboard": tensorboard,
    }
    context = {
        "name": name,
        "ns": user_ns,
        "options": fit_options,
        "fits": [],
        "strategy": None if _is_default(chosen) else chosen,
        "lr_find": lr_find,
        "seed": seed_value,
        "watch_on": watch,
    }
    refused: list[Any] = []
    # A fit refused inside the cell is a UsageError: the magic shows it as its own
    # one line, instead of IPython showing it and the magic adding a second.
    own = vars(shell).get("show_usage_error")
    shell.show_usage_error = refused.append
    try:
        with (
            contextlib.nullcontext() if users else strategy_scope(chosen),
            _fits_get_progress(),
            _cell_context(context),
            _history_not_echoed(shell),
        ):
            result = shell.run_cell(cell, store_history=False)
    finally:
        if own is None:
            del shell.show_usage_error
        else:
            shell.show_usage_error = own
    if not result.success:
        earlier = before is not missing and _REGISTRY.get(name) is not None
        kept = ""
        if earlier and _REGISTRY[name].model is before and user_ns.get(name) is not before:
            # Lose nothing: NAME stays the registered model, as the registry says.
            user_ns[name] = before
            kept = f"; the earlier {name} was kept"
        if refused:
            raise KernelkitError(f"{refused[0]} (nothing was registered{kept})")
        raise CellError(
            f"the %%kmodel {name} cell raised (traceback above); nothing was registered{kept}"
        )
    model = user_ns.get(name, missing)
    if model is missing or model is before:
        raise KernelkitError(
            f"the cell did not assign {name}; end it with e.g. `{name} = keras.Sequential([...])`"
        )
    if not isinstance(model, keras.Model):
        if before is not missing and isinstance(before, keras.Model):
            user_ns[name] = before  # lose nothing: the earlier model stays under NAME
        raise KernelkitError(
            f"{name} is a {type(model).__name__}, not a keras.Model; assign the model itself "
            f"to {name}"
            + (
                " (the earlier model was kept)"
                if before is not missing and isinstance(before, keras.Model)
                else ""
            )
        )
    entry = register(name, model, strategy=context["strategy"])
    entry.fit_options = {k: v for k, v in fit_options.items() if v}
    if watch:
        entry.fit_options["watch"] = True
    entry.seed = seed_value
    entry.watch = context.get("watch", entry.watch)
    for fitted, live in context["fits"]:
        if fitted is model:
            _record_run(entry, live)
    if show_card:
        return card(model)
    return None


_FIT_DEFAULTS: list[dict[str, Any]] = []


class _QuietHistory(ast.NodeTransformer):
    """Wraps the cell's last expression so that a ``History`` it gives is not echoed.

    The card is the cell's result: ``model.fit(...)`` as the last line would
    otherwise add ``<keras.src.callbacks.history.History at 0x...>`` between
    the live result and the card. Any other value is echoed as usual.
    """

    def visit_Module(self, node: ast.Module) -> ast.Module:
        last = node.body[-1] if node.body else None
        if isinstance(last, ast.Expr):
            call = ast.Call(
                func=ast.Attribute(
                    value=ast.Call(
                        func=ast.Name(id="__import__", ctx=ast.Load()),
                        args=[ast.Constant("kernelkit.session")],
                        keywords=[ast.keyword("fromlist", ast.Constant(("_",)))],
                    ),
                    attr="_echoed",
                    ctx=ast.Load(),
                ),
                args=[last.value],
                keywords=[],
            )
            last.value = ast.copy_location(call, last.value)
            ast.fix_missing_locations(last)
        return node


def _echoed(value: Any) -> Any:
    """What the cell's last expression shows: nothing for a History, else the value."""
    return None if isinstance(value, keras.callbacks.History) else value


@contextlib.contextmanager
def _history_not_echoed(shell: Any) -> Iterator[None]:
    """Runs the cell with :class:`_QuietHistory` among the shell's AST transformers."""
    transformers = getattr(shell, "ast_transformers", None)
    if transformers is None:
        yield
        return
    quiet = _QuietHistory()
    transformers.append(quiet)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # IPython drops a transformer that failed
            transformers.remove(quiet)


def _choose_strategy(spec: str) -> tuple[Any, bool]:
    """The cell's strategy, and whether it is one the user already set.

    The user's distribution wins: ``--strategy auto`` trains in it, and an
    explicit spec that means something else is refused in one line.
    """
    from .strategy import describe, in_force, same
    from .strategy import strategy as resolve

    users = in_force()
    if users is None:
        return resolve(spec), False
    if str(spec).strip().lower() == "auto":
        return users, True
    planned = resolve(spec)
    if same(planned, users):
        return users, True
    import keras

    unset = (
        "call keras.distribution.set_distribution(None) first"
        if keras.backend.backend() == "jax"
        else "run the cell outside that strategy's scope"
    )
    raise KernelkitError(
        f"--strategy {spec} conflicts with the distribution already in force "
        f"({describe(users)[0]}): drop --strategy to train in yours, or {unset}"
    )


@contextlib.contextmanager
def _cell_context(context: dict[str, Any]) -> Iterator[None]:
    """The running cell's NAME and magic-line options, which its fits inherit."""
    context["options"] = {k: v for k, v in context["options"].items() if v}
    _FIT_DEFAULTS.append(context)
    try:
        yield
    finally:
        _FIT_DEFAULTS.pop()


def _is_default(strategy: Any) -> bool:
    if strategy is None:
        return True
    return type(strategy).__name__.startswith("_Default")
