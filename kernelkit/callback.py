"""``LiveProgress``: the Keras callback behind every kernelkit progress view.

It turns Keras hooks into ``kernelkit.events`` values, records them in a
``RunHistory`` and hands them to sinks (the notebook view, a text line, the
JupyterLab status bar, a worker's socket). It imports no UI: the default
view is looked up only when a fit starts with ``display`` other than
``"none"``.

Per-step cost is the point of this module. On the TensorFlow backend every
``on_train_batch_end`` runs on the training thread, so the hook only stores
the step, checks the loss for NaN and compares one clock reading; all other
work happens at most every ``refresh`` seconds and at epoch ends.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np

from . import _fitting, intents
from . import events as ev
from .display import progress_view as display_view
from .history import RunHistory, scalar_logs
from .status import FitStatus
from .timing import InputTimer

Sink = Callable[[ev.Event], None]

_DISPLAYS = ("auto", "widget", "text", "none")

# One history per model object, so a second fit continues the curves.
_HISTORIES: weakref.WeakKeyDictionary[Any, RunHistory] = weakref.WeakKeyDictionary()


def history_for(model: Any) -> RunHistory:
    """Returns the ``RunHistory`` kernelkit keeps for ``model`` (made on first use)."""
    try:
        found = _HISTORIES.get(model)
    except TypeError:  # not weak-referenceable
        return RunHistory()
    if found is None:
        found = _HISTORIES[model] = RunHistory()
    return found


def describe_distribution(model: Any) -> tuple[str, int]:
    """Where ``model`` trains right now, read as Keras's own fit reads it.

    On TensorFlow, fit always runs in the strategy the model was built in
    (``model.distribute_strategy``); on JAX, fit follows the global
    ``keras.distribution.distribution()`` in force when it runs, whatever the
    model was built under. Worded by :func:`kernelkit.strategy.describe`, so
    the bar, the card and ``%kmodel`` say the same thing.

    Returns:
        (text, replicas), e.g. ("DataParallel (8 devices)", 8) or ("default", 1).
    """
    from .strategy import describe

    if keras.backend.backend() == "tensorflow":
        return describe(getattr(model, "distribute_strategy", None))
    return describe(keras.distribution.distribution())


def _find_fit_frame(callback: keras.callbacks.Callback) -> dict[str, Any]:
    """Reads ``fit``'s locals: its CallbackList, initial_epoch, batch_size and epoch_iterator.

    Keras gives a callback neither its siblings nor ``batch_size``; the
    ``fit`` frame has both. This runs once per fit, never per step, and
    every miss just means "unknown".
    """
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            break
        local = frame.f_locals
        cbs = local.get("callbacks")
        if frame.f_code.co_name == "fit" and cbs is not None:
            siblings = getattr(cbs, "callbacks", None)
            if isinstance(siblings, list) and any(c is callback for c in siblings):
                return {
                    "callbacks": [c for c in siblings if c is not callback],
                    "initial_epoch": local.get("initial_epoch"),
                    "batch_size": local.get("batch_size"),
                    "epoch_iterator": local.get("epoch_iterator"),
                }
        frame = frame.f_back
    return {}


def _stop_reason(callbacks: Iterable[Any]) -> str:
    """Which callback stopped training, and why, in one line."""
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.stopped_epoch > 0:
            best = _as_float(cb.best)  # F1Score on one output is a shape-(1,) array
            best_text = (
                f" (best {best:.4g} at epoch {cb.best_epoch + 1})" if best is not None else ""
            )
            return (
                f"EarlyStopping: {cb.monitor} did not improve for {cb.patience} "
                f"epoch{'s' if cb.patience != 1 else ''}{best_text}"
            )
        if isinstance(cb, keras.callbacks.TerminateOnNaN):
            return "TerminateOnNaN: the loss became NaN or infinite"
    others = [type(cb).__name__ for cb in callbacks if not _is_builtin_quiet(cb)]
    if others:
        return f"a callback set model.stop_training ({', '.join(others)})"
    return "a callback set model.stop_training"


def _as_float(value: Any) -> float | None:
    """A metric value as one float, or None when it is not one number."""
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        return None
    return float(array.reshape(-1)[0]) if array.size == 1 else None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Guards the first non-finite step: batch hooks may run on several of Keras's threads.
_NAN_LOCK = threading.Lock()


def _error_line(error: BaseException) -> str:
    """The informative line of an error, for the failed state.

    Keras wraps errors raised inside a layer's ``call`` as "Exception encountered
    when calling Sequential.call()." with the reason on a later (bold) line.
    TensorFlow's traced step opens with "Graph execution error:" and "Detected at
    node ...", then an indented stack, and only then the reason ("Matrix
    size-incompatible: ..."): the reason is the first unindented line after them.
    """
    raw = [_ANSI.sub("", line) for line in str(error).splitlines()]
    wrappers = (
        "Exception encountered when calling",
        "Arguments received",
        "Graph execution error",
        "Detected at node",
        "<stack traces unavailable>",
    )
    graph = bool(raw) and raw[0].startswith("Graph execution error")
    useful = [
        line.strip()
        for line in raw
        if line.strip()
        and not line.strip().startswith(wrappers)
        and not (graph and line[:1].isspace())  # the stack TensorFlow prints above the reason
    ]
    return f"{type(error).__name__}: {useful[0] if useful else ''}".rstrip(": ")


def _is_builtin_quiet(cb: Any) -> bool:
    """Callbacks that never stop training: not worth naming in the stop reason."""
    quiet = (
        keras.callbacks.History,
        keras.callbacks.ProgbarLogger,
        keras.callbacks.BackupAndRestore,
        keras.callbacks.ModelCheckpoint,
        keras.callbacks.TensorBoard,
    )
    return isinstance(cb, quiet) or type(cb).__module__.startswith("kernelkit.")


class LiveProgress(keras.callbacks.Callback):
    """Live progress for ``Model.fit``: a bar, metrics, curves and an honest end.

    In a notebook it shows a progress bar (step k of n, elapsed, ETA,
    steps/s, samples/s), the running metrics, a table of every epoch's
    metrics with validation values, live loss and metric curves, and a Stop
    button; when the fit ends the view is replaced by a static result that
    still reads after the notebook is saved. In a terminal it prints one
    compact line instead.

    Args:
        display: "auto" (a widget view in a notebook kernel, a text line
            elsewhere), "widget", "text" or "none" (events only, for sinks).
        refresh: the shortest time between two view updates, in seconds.
        plot: whether the view draws curves.
        interactive: show the final curves as their own output holding a
            plotly figure (hover, zoom, a log/linear switch) over the static
            SVG, beside the HTML header and epoch table; False keeps the
            whole result as one static HTML output.
        stop_on_nan: stop when the loss becomes NaN or infinite, and show a failed
            state. Keras's own fit goes on (unless ``TerminateOnNaN`` is given);
            kernelkit stops, since every step after that only spreads NaN
            through the weights.
        restore_on_nan: with ``stop_on_nan``, put back the weights (the
            BatchNormalization statistics among them) and the optimizer state of
            the last finite epoch end, or of the start of the fit, and say so.
            It copies the model's state to host memory once per epoch.
        sink: a callable, or a list of them, receiving every event.
        model_name: the name shown in the view (default: the model's name).
        view_factory: makes the view as the fit begins, ``view_factory(callback)``,
            returning an object with ``handle(event)`` (or None); by default
            kernelkit's notebook widget or terminal line, per ``display``.
        clock: a monotonic clock; tests pass a fake one.

    Raises:
        ValueError: for an option outside its allowed values.

    Example:
        >>> model.fit(x, y, epochs=5, verbose=0,
        ...           callbacks=[kernelkit.LiveProgress()])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        display: str = "auto",
        refresh: float = 0.5,
        plot: bool = True,
        interactive: bool = True,
        stop_on_nan: bool = True,
        restore_on_nan: bool = True,
        sink: Sink | Iterable[Sink] | None = None,
        model_name: str | None = None,
        view_factory: Callable[[LiveProgress], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if view_factory is not None and not callable(view_factory):
            raise ValueError(
                "LiveProgress(view_factory=...) takes a callable: view_factory(callback) -> view"
            )
        if display not in _DISPLAYS:
            raise ValueError(
                f"LiveProgress(display={display!r}) is not allowed; "
                f"use one of {', '.join(_DISPLAYS)}"
            )
        if (
            isinstance(refresh, bool)
            or not isinstance(refresh, (int, float))
            or not (0 < refresh <= 60)
        ):
            raise ValueError(
                f"LiveProgress(refresh={refresh!r}) is not allowed; use seconds between 0 and 60, "
                "e.g. refresh=0.5"
            )
        if not isinstance(plot, bool):
            raise ValueError(f"LiveProgress(plot={plot!r}) is not allowed; use True or False")
        if not isinstance(interactive, bool):
            raise ValueError(
                f"LiveProgress(interactive={interactive!r}) is not allowed; use True or False"
            )
        if not isinstance(stop_on_nan, bool):
            raise ValueError(
                f"LiveProgress(stop_on_nan={stop_on_nan!r}) is not allowed; use True or False"
            )
        if not isinstance(restore_on_nan, bool):
            raise ValueError(
                f"LiveProgress(restore_on_nan={restore_on_nan!r}) is not allowed; use True or False"
            )
        if sink is None:
            sinks: list[Sink] = []
        elif callable(sink):
            sinks = [sink]
        else:
            sinks = list(sink)
            if not all(callable(s) for s in sinks):
                raise ValueError("LiveProgress(sink=...) takes a callable or a list of callables")
        self.display = display
        self.view_factory = view_factory
        self.refresh = float(refresh)
        self.plot = plot
        self.interactive = interactive
        self.stop_on_nan = stop_on_nan
        self.restore_on_nan = restore_on_nan
        self.model_name = model_name
        self.sinks = sinks
        self.clock = clock
        self.view: Any = None
        self.history: RunHistory | None = None
        # Set from outside only where the fit cannot tell (a worker's rank 0 speaks
        # for all ranks); otherwise read from each fit as it begins.
        self.strategy_text: str | None = None
        self.replicas: int | None = None
        self.ran_on: tuple[str, int] | None = None  # what the last fit really ran on
        # Set by the session before a fit: the model's previous run in the ledger, which the
        # view draws faintly under this run's curves (a ``kernelkit.ledger.Run``, or None).
        self.ghost: Any = None
        # Set by the session before a fit: the user's callbacks' timer and the callbacks
        # that turn off Keras's async dispatch, for the final result's timing line.
        self.timer: Any = None
        self.blockers: list[str] = []
        # How long each fit's steps waited for their next batch (JAX; TensorFlow pulls
        # batches inside its graph).
        self.input_timer = InputTimer()
        # The last fit's status, folded from the events this callback sent: what the
        # session and every reader without a view (display="none") read.
        self.status = FitStatus()
        self.batch_size: int | None = None
        self.resumed_at: int | None = None
        self._hot = _Hot()
        self._reset_run()
        self._on_step = _step_hook(self, self._hot)
        if type(self).on_train_batch_end is LiveProgress.on_train_batch_end:
            # Keras looks the hook up on the instance each step: the closure skips making
            # a bound method and going through it.
            self.on_train_batch_end = self._on_step  # type: ignore[method-assign]

    # Keras may dispatch batch hooks from a worker thread on thread-safe
    # backends (JAX, torch); this hook only stores values, so that is safe.
    async_safe = True

    def _reset_run(self) -> None:
        hot = self._hot
        hot.batch = -1  # the last step's batch index in this epoch
        hot.logs = None  # the last step's logs
        hot.next_step = -math.inf  # when the next Step event may go out
        hot.check_nan = self.stop_on_nan
        hot.refresh = self.refresh
        hot.clock = self.clock
        self._steps: int | None = None
        self._epochs = 0
        self._epoch = -1
        self._siblings: list[Any] = []
        self._stop: str | None = None  # "user" or "nan" once we asked Keras to stop
        self._nan_at: tuple[int, int] | None = None
        self._nan_kind = "NaN"
        self._good: tuple[int | None, list[Any], list[Any]] | None = None  # last finite state
        self._begun = False
        self._ended = False
        self._initial_epoch = 0
        self._epochs_done = 0
        self._test_began: float | None = None  # clock reading at on_test_begin
        self._validation_time: float | None = None  # this epoch's validation pass

    # --- what the session and the views call -------------------------------------------

    def submit(self, intent: intents.Intent) -> bool:
        """Takes an intent meant for the running fit: a ``StopTraining``.

        Every way to stop a fit ends here: the progress view's Stop button, the
        JupyterLab command (through ``kernelkit._fitting.stop_current``), the
        card, and the first kernel interrupt. Only sets flags, so it is safe
        from a signal handler or another thread.

        Args:
            intent: a ``kernelkit.intents.StopTraining``.

        Returns:
            True: the stop is asked for at once.

        Raises:
            TypeError: for any other intent (model changes go to the session,
                which queues them until the fit ends).
        """
        if not isinstance(intent, intents.StopTraining):
            raise TypeError(
                f"a running fit takes StopTraining only, not {type(intent).__name__}; "
                "send model changes to the session (kernelkit.card's submit)"
            )
        self.request_stop(intent.reason)
        return True

    def request_stop(self, reason: str = "user") -> None:
        """Asks the running fit to stop at the end of the current step.

        Only sets flags, so it is safe from a signal handler or another thread.
        """
        if self._stop is None:
            self._stop = reason
        # Keras's `model` property syncs JAX's training state: from a batch hook that
        # Keras dispatched to its worker thread (or from a button's thread) that races
        # the next step ("Buffer has been deleted or donated"). The plain reference does not.
        model = getattr(self, "_model", None)
        if model is not None:
            model.stop_training = True

    @property
    def stop_requested(self) -> bool:
        """True once a stop was asked for."""
        return self._stop is not None

    @property
    def running(self) -> bool:
        """True between the start and the end of a fit."""
        return self._begun and not self._ended

    def fail(self, error: BaseException | str) -> None:
        """Ends the run in the failed state (the session calls it on an exception)."""
        if self._ended:
            return
        reason = error if isinstance(error, str) else _error_line(error)
        try:
            if isinstance(error, KeyboardInterrupt):
                self._end("stopped_by_user", f"aborted by a second interrupt{self._where()}")
                return
            self._end("failed", reason.splitlines()[0] if reason else "failed")
        finally:
            self._release()  # Keras skips on_train_end when its loop raises

    # --- Keras hooks --------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Starts a fit: reads Keras's params, marks the model as training, makes the view."""
        self._reset_run()
        params = self.params or {}
        self._epochs = int(params.get("epochs") or 0)
        steps = params.get("steps")
        self._steps = int(steps) if steps else None
        found = _find_fit_frame(self)
        self._siblings = found.get("callbacks", [])
        if self.batch_size is None and isinstance(found.get("batch_size"), int):
            self.batch_size = found["batch_size"]
        self._initial_epoch = int(found.get("initial_epoch") or 0)
        self.input_timer.attach(found.get("epoch_iterator"))
        self.history = history_for(self.model)
        self._ensure_view()
        # model.stop_training is Keras's (it resets it before this hook) and other
        # callbacks': never touched here, so a stop asked in their on_train_begin holds.
        self._keep_good_state(None)
        _fitting.begin(self.model)

    def _begin(self, epoch: int) -> None:
        self._begun = True
        if self.strategy_text is None:
            ran_on = describe_distribution(self.model)
        else:
            ran_on = (self.strategy_text, self.replicas or 1)
        self.ran_on = ran_on
        resumed = self.resumed_at
        if resumed is None and epoch > self._initial_epoch:
            resumed = epoch  # BackupAndRestore moved the start (model._initial_epoch)
        self._emit(
            ev.TrainBegin(
                epochs=self._epochs,
                initial_epoch=epoch,
                steps=self._steps,
                batch_size=self.batch_size,
                model_name=self.model_name or getattr(self.model, "name", ""),
                strategy=ran_on[0],
                replicas=ran_on[1],
                resumed_at=resumed,
                time=self.clock(),
            )
        )

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Sends ``EpochBegin``; before the first, ``TrainBegin`` (the distribution is known)."""
        if not self._begun:
            self._begin(epoch)
        self._epoch = epoch
        self._hot.batch = -1
        self._hot.next_step = -math.inf
        self._validation_time = None
        self._emit(ev.EpochBegin(epoch=epoch, time=self.clock()))

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """One training step (the per-step closure's work, for subclasses)."""
        # Keras calls the instance's own closure (see __init__); this method serves
        # subclasses that override the hook and call super().
        self._on_step(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Checks the epoch's loss, keeps the state a NaN rolls back to, sends ``EpochEnd``."""
        values = scalar_logs(logs)
        loss = values.get("loss")
        if (
            self.stop_on_nan
            and self._nan_at is None
            and loss is not None
            and not math.isfinite(loss)
        ):
            self._epoch = epoch
            self._non_finite(loss, self._hot.batch + 1)
        # The state copy comes before the events: they wake the render thread, and a copy
        # that competes with it for the GIL takes several times as long.
        if self._nan_at is None and (loss is None or math.isfinite(loss)):
            self._keep_good_state(epoch)
        self._emit_step(final=True)
        event = ev.EpochEnd(
            epoch=epoch,
            logs=values,
            steps=self._step(),
            time=self.clock(),
            validation_time=self._validation_time,
        )
        self._validation_time = None
        self._epochs_done += 1
        self._emit(event)

    # Validation is timed with the test begin/end hooks, which fit's internal
    # evaluate calls once per pass with fit's own callbacks. They are not batch
    # hooks (no on_test_batch_end here), so timing costs nothing per step and
    # keeps Keras's async test dispatch. The first pass includes compiling the
    # test step; FitStatus tells the two apart.
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Starts timing an epoch's validation pass."""
        # Only inside a fit: a standalone evaluate(callbacks=[live]) is not an epoch's
        # validation and must leave the next EpochEnd alone.
        self._test_began = self.clock() if self.running else None

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Ends timing the validation pass; ``EpochEnd`` carries it."""
        began, self._test_began = self._test_began, None
        if began is not None and self.running:
            self._validation_time = max(self.clock() - began, 0.0)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Ends the fit: restores the last finite state after a NaN, sends ``TrainEnd``."""
        if not self._begun:
            self._begin(self._initial_epoch)
        if self._nan_at is not None:
            e, s = self._nan_at
            restored = self._restore_good_state()
            of = f" of {self._steps}" if self._steps else ""
            self._end(
                "failed", f"loss became {self._nan_kind} at epoch {e + 1}, step {s}{of}{restored}"
            )
        elif self._stop == "user":
            self._end("stopped_by_user", f"stopped by user{self._where()}")
        elif self.model.stop_training:
            self._end("stopped_by_callback", _stop_reason(self._siblings))
        else:
            done = self._epochs_done
            self._end("finished", f"finished {done} epoch{'s' if done != 1 else ''}")
        self._release()

    def _release(self) -> None:
        """The fit is over: carry out the model operations queued while it ran."""
        self.input_timer.detach()
        model = getattr(self, "_model", None)
        if model is not None:
            _fitting.end(model)

    # --- internals ---------------------------------------------------------------------

    def _non_finite(self, loss: float, step: int) -> None:
        """Records a non-finite loss at ``step`` (1-based) of this epoch and asks Keras to stop.

        Batch hooks may arrive out of order and from several threads (Keras's
        async dispatch), so the earliest step seen wins, not the first to
        arrive: a later step's loss is often NaN where the first was inf.
        """
        if self._steps is not None:
            step = min(step, self._steps)  # steps_per_execution can run past the last step
        at = (self._epoch, max(step, 0))
        kind = "NaN" if math.isnan(loss) else "inf"
        with _NAN_LOCK:
            if self._nan_at is None or at < self._nan_at:
                self._nan_at = at
                self._nan_kind = kind
        self.request_stop("nan")

    def _keep_good_state(self, epoch: int | None) -> None:
        """Copies weights and optimizer state to host memory: the state a NaN rolls back to.

        At the start of the fit and at each finite epoch end only, never per step.
        Under JAX, Keras has synced the model's variables by then.
        """
        if not (self.stop_on_nan and self.restore_on_nan):
            return
        try:
            model = self.model
            optimizer = getattr(model, "optimizer", None)
            slots = list(optimizer.variables) if optimizer is not None else []
            values = _host_copies([*model.weights, *slots])
        except Exception:  # an unbuilt model: there is nothing to keep yet
            return
        count = len(values) - len(slots)
        self._good = (epoch, values[:count], values[count:])

    def _restore_good_state(self) -> str:
        """Puts the last finite state back; returns the clause for the final line."""
        if self._good is None:
            return ""
        epoch, weights, slots = self._good
        try:
            self.model.set_weights(weights)
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None and len(optimizer.variables) == len(slots):
                for variable, value in zip(optimizer.variables, slots, strict=True):
                    variable.assign(value)
        except Exception as err:
            return f"; the last finite weights could not be restored ({type(err).__name__})"
        if epoch is None:
            return "; weights restored to the start of the fit"
        return f"; weights restored to the end of epoch {epoch + 1}"

    def _step(self) -> int:
        step = self._hot.batch + 1
        if self._steps is not None:
            # Under steps_per_execution the batch index can run past the last step.
            step = min(step, self._steps)
        return max(step, 0)

    def _where(self) -> str:
        if self._epoch < 0:
            return ""
        of = f" of {self._steps}" if self._steps else ""
        return f" at epoch {self._epoch + 1}, step {self._step()}{of}"

    def _emit_step(self, final: bool = False) -> None:
        if self._hot.batch < 0 and not final:
            return
        values = scalar_logs(self._hot.logs)
        self._emit(ev.Step(epoch=self._epoch, step=self._step(), logs=values, time=self.clock()))

    def _end(self, state: ev.EndState, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._emit(
            ev.TrainEnd(
                state=state,
                reason=reason,
                epoch=self._epoch if self._epoch >= 0 else None,
                step=self._step() if self._epoch >= 0 else None,
                time=self.clock(),
            )
        )

    def replay(self, event: ev.Event, model: Any = None) -> None:
        """Shows, records and forwards ``event`` as if this callback's own fit sent it.

        ``kernelkit.workers`` replays rank 0's events through it: the view,
        the status, the run history and every sink see them as in a local fit.

        Args:
            event: a ``kernelkit.events`` event.
            model: at ``TrainBegin``, the notebook's model, whose run history
                the curves continue.
        """
        if isinstance(event, ev.TrainBegin):
            if model is not None:
                self.history = history_for(model)
            self._ensure_view()
        self._emit(event)

    def _ensure_view(self) -> None:
        """Makes the fit's view once (none with ``display="none"``), as the fit begins."""
        if self.view is None and self.display != "none":
            self.view = _make_view(self)

    def _emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.TrainBegin):
            self.status = FitStatus()  # each fit its own status
        self.status.apply(event)
        if self.history is not None:
            self.history.apply(event)
        targets = list(self.sinks)
        if self.view is not None:
            targets.append(self.view.handle)
        for target in targets:
            try:
                target(event)
            except Exception as err:
                _warn_once(f"kernelkit: a progress sink failed and was skipped: {err!r}")


class _Hot:
    """What the per-step hook reads and writes, in slots: CPython's cheapest attributes.

    ``LiveProgress`` keeps dozens of attributes in its ``__dict__``; the hook
    touches only these, through a closure, so a step costs about a microsecond.
    """

    __slots__ = ("batch", "check_nan", "clock", "logs", "next_step", "refresh")

    batch: int
    check_nan: bool
    clock: Callable[[], float]
    logs: Mapping[str, Any] | None
    next_step: float
    refresh: float


def _step_hook(callback: LiveProgress, hot: _Hot) -> Callable[..., None]:
    """``on_train_batch_end`` for ``callback``: the hot path, once per step.

    It stores the step and the logs, checks the loss and reads the clock;
    everything else waits for the throttle (every ``refresh`` seconds). Each
    attribute lookup and call counts here, so the NaN test is arithmetic
    (NaN - NaN and inf - inf are NaN, never 0) rather than a call.
    """

    def on_train_batch_end(batch: int, logs: Mapping[str, Any] | None = None) -> None:
        # The loss is checked before the order: under async dispatch (JAX) Keras runs
        # these hooks on a pool of threads, so step 4's can arrive before step 3's, and
        # the first non-finite step must still be the one reported.
        if hot.check_nan and logs:
            loss = logs.get("loss")
            if loss.__class__ is float and loss - loss != 0.0:
                callback._non_finite(loss, batch + 1)
        if batch <= hot.batch:
            return  # an out-of-order async dispatch: a later step was shown already
        hot.batch = batch
        hot.logs = logs
        now = hot.clock()
        if now >= hot.next_step:  # the throttle, inlined
            hot.next_step = now + hot.refresh
            callback._emit_step()

    return on_train_batch_end


def _host_copies(variables: list[Any]) -> list[np.ndarray]:
    """Copies of the variables' values in host memory, one copy each.

    ``model.get_weights()`` copies every value and the ``np.array`` around it
    copied again. On TensorFlow one ``identity_n`` reads every variable in a
    single op, and NumPy views the results without a copy on the CPU (a
    variable updated later copies its buffer first, since the read still
    holds it, so the view stays a snapshot); on a GPU the view is the copy
    to the host.
    """
    values = [v.value for v in variables]
    if not values:
        return []
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            return [np.asarray(t) for t in tf.identity_n(values)]
        except Exception:  # variables identity_n cannot take (a distribution's): one by one
            return [np.array(keras.ops.convert_to_numpy(v)) for v in values]
    return [np.array(v) for v in values]


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr)


def _make_view(callback: LiveProgress) -> Any:
    """The view of ``callback``'s fit: its own factory's, else the one the package installed."""
    factory = callback.view_factory
    return factory(callback) if factory is not None else display_view(callback)
