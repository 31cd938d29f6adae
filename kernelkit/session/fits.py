"""The fit routing: every fit kernelkit runs, with live progress and the checks before it.

``kernelkit.fit``, a registered model's own ``fit`` and each ``Model.fit`` of
a ``%%kmodel`` cell all come to :func:`_fit`: it inherits the options of the
cell and of the model's registration, checks what must hold before Keras
starts (a refusal is one line and changes nothing), adds kernelkit's
callbacks, runs Keras's own fit and records the run.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras

from .. import _fitting, display, intents
from ..callback import LiveProgress, history_for
from ..strategy import in_distribution
from . import context, registry
from .context import CellContext
from .errors import FitRefused, KernelkitError, refusal
from .registry import Entry, _check_model, entry_for


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
        live.submit(intents.StopTraining("user"))  # as the Stop button sends it

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


def routed_fit(
    model: Any, args: tuple, kwargs: dict[str, Any], keras_fit: Callable[..., Any] | None
) -> Any:
    """A ``Model.fit`` call that kernelkit stands in for: Keras's arguments only.

    A registered model's own ``fit`` and each ``Model.fit`` of a ``%%kmodel``
    cell come here. kernelkit's own options (``workers=``...) are refused, and
    so is every fit that cannot work, each as one line (:func:`~.errors.refusal`).

    Args:
        model: the model being fitted.
        args: the call's positional arguments, after ``self``.
        kwargs: its keyword arguments.
        keras_fit: Keras's own ``Model.fit`` when a subclass's override called
            ``super().fit`` (so the override runs once), else None.

    Returns:
        Keras's ``History`` (an ``LRFindResult`` in a ``--lr-find`` cell).
    """
    cell = context.current()
    if cell is not None and cell.lr_find:
        # %%kmodel NAME --lr-find: the cell's fits run the finder on their own arguments
        # and leave the model as it was.
        from ..lr_find import LRFindError, lr_find_fit_call

        try:
            return lr_find_fit_call(model, args, kwargs, cell.name)
        except LRFindError as err:
            raise refusal(str(err)) from None
    own = [name for name in _OWN_OPTIONS if name in kwargs]
    if own:
        name = own[0]
        value = kwargs[name]
        raise refusal(
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
        raise refusal(str(err)) from None


registry.route_fits(routed_fit)  # a registered model's own fit comes here


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
    """kernelkit.fit's body.

    ``keras_fit`` is Keras's own fit when a subclass's override called
    ``super().fit`` (so the override runs once), else None: ``type(model).fit``.
    """
    _check_model(model, "fit")
    entry = entry_for(model)
    # Options from the %%kmodel line: the cell's fits and the model's later fits inherit them.
    inherited = dict(entry.fit_options) if entry is not None else {}
    cell = context.current()
    if cell is not None:
        inherited.update(cell.defaults.given())
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
    name = entry.name if entry is not None else getattr(model, "name", "model")
    if entry is None and cell is not None and cell.binds(model):
        name = cell.name  # the cell's NAME is bound already: show it
    live.model_name = live.model_name or name

    planned = entry.strategy if entry is not None else (cell.strategy if cell else None)
    if resume:
        from .. import checkpoints

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
        from ..rnn_state import ResetStates

        added.append(ResetStates(every=entry.auto_reset))
    _attach_lab(live)

    # The run ledger: every fit of a registered model (or of the cell's NAME), in this
    # process or in workers (rank 0's events reach the same sinks), written at the fit's
    # begin, each epoch end and its end only; never per step.
    recorder = None
    if (entry is not None or cell is not None) and _ledger_on():
        from .. import ledger

        seed = entry.seed if entry is not None else (cell.seed if cell else None)
        # The recorder reads the status this fit's LiveProgress folds: one fold per fit.
        recorder = ledger.recorder_for(
            model, name, {**kwargs, "x": x, "y": y}, seed=seed, status=lambda: live.status
        )
        live.ghost = _previous_run(name)
        live.sinks.append(recorder)

    if workers is not None:
        from ..workers import fit_on_workers

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
        cell.fits.append((model, live))
    run = keras_fit if keras_fit is not None else type(model).fit
    # Where the time goes: the user's own callbacks are timed (only the hooks they
    # override, so Keras's async choice is unchanged), and any that turn off Keras's
    # async dispatch are named in the final result.
    from ..timing import CallbackTimer, async_blockers

    users = [c for c in callbacks if c is not live]
    timer = CallbackTimer(users)
    live.timer = timer
    live.blockers = async_blockers(users)
    try:
        with _graceful_interrupt(live), in_distribution(planned), timer.timing():
            history = run(model, x, y, callbacks=passed, **kwargs)
    except BaseException as err:
        live.fail(err)
        from ..checkpoints import ResumeMismatch

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
                cell.watch = watch
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
    from ..workers import fit_on_workers

    return tuple(
        name
        for name, parameter in inspect.signature(fit_on_workers).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in _FIT_SIGNATURE.parameters
        and name != "workers"
    )


def _ledger_on() -> bool:
    from .. import ledger

    return ledger.enabled()


def _previous_run(name: str) -> Any:
    """The epochs of NAME's last finished run in the ledger, for the live view's ghost curve."""
    from .. import ledger

    try:
        runs = [r for r in ledger.Ledger().runs(name) if r.epochs and r.state != "running"]
    except ledger.LedgerError:
        return None
    return runs[-1] if runs else None


def _watch_for(entry: Entry | None, cell: CellContext | None, x: Any) -> Any:
    """An ActivationWatch on the fit's first 32 inputs, under ``--watch``; else None."""
    wanted = (cell is not None and cell.defaults.watch) or (
        entry is not None and entry.fit_options.get("watch")
    )
    if not wanted:
        return None
    probe = _sample(x, 32) if x is not None else None
    if probe is None:
        print("kernelkit: --watch needs arrays as x (a probe batch is taken from them); skipped")
        return None
    from ..watch import ActivationWatch

    return ActivationWatch(probe)


def _in_notebook() -> bool:
    from ..views.progress import in_notebook_kernel

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
    from .. import rnn_state

    rnn_state.check_stateful_fit(model, x, **kwargs)
    from .. import freezing

    # Every fit, registered model or not: a `layer.trainable = False` set by hand since
    # the last compile would otherwise be ignored by Keras's stale train function.
    line = freezing.ensure_trainable_applied(
        model, entry.name if entry is not None else getattr(model, "name", None)
    )
    if line:
        notes.append(line)
    from ..strategy import prepare_fit

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
        from .. import checkpoints

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
        from .. import checkpoints

        # Without validation data there is no val_loss: Keras would only warn each epoch
        # and keep nothing, so the best epoch is the one with the lowest training loss.
        extra.append(
            checkpoints.checkpoint_callback(
                checkpoint, monitor="val_loss" if validating else "loss"
            )
        )
        if not validating:
            print(
                f"kernelkit {name}: no validation data, so the checkpoint {checkpoint} keeps the "
                "epoch with the lowest training loss; pass validation_data or validation_split "
                "to keep the lowest val_loss instead"
            )
    if tensorboard:
        from .. import checkpoints

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
