"""A fit's status, folded from ``kernelkit.events``: what every reader of a fit shows.

:class:`FitStatus` is the one reducer of the event stream into a status:
the step, rate, ETA and the compile estimates, the end state and its
honest epoch count, and the plain-text lines made from them. The progress
views, the run ledger and the JupyterLab link all read it; it knows no
view, no IPython and no session (pure; tests drive it from lists of events).

Example:
    >>> from kernelkit import events as ev
    >>> status = FitStatus()
    >>> for event in [ev.TrainBegin(epochs=2, steps=10, model_name="mlp", time=0.0),
    ...               ev.EpochBegin(epoch=0, time=0.0),
    ...               ev.Step(epoch=0, step=5, logs={"loss": 0.5}, time=1.0)]:
    ...     status.apply(event)
    >>> status.epoch_text(), status.step, status.fraction
    ('Epoch 1/2', 5, 0.5)
    >>> status.apply(ev.TrainEnd(state="finished", reason="", time=2.0))
    >>> status.summary()
    'kernelkit mlp: finished (0 epochs)'
"""

from __future__ import annotations

from typing import Any

from . import events as ev

STATE_TEXT = {
    "running": "training",
    "finished": "finished",
    "stopped_by_user": "stopped by user",
    "stopped_by_callback": "stopped by a callback",
    "failed": "failed",
}


def format_duration(seconds: float | None) -> str:
    """0:07, 1:02:03; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_seconds(seconds: float) -> str:
    """0.04 s, 2.3 s, 1:05: short durations with their decimals, long ones as times."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return format_duration(seconds)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def format_value(value: float) -> str:
    """Metric values: 4 significant digits."""
    if value != value:
        return "nan"
    return f"{value:.4g}"


def format_logs(logs: dict[str, float] | Any, limit: int = 6) -> str:
    """'loss 0.1234 · accuracy 0.9' (learning_rate last, at most ``limit`` entries)."""
    items = [(k, v) for k, v in logs.items() if k != "learning_rate"][:limit]
    return " · ".join(f"{k} {format_value(v)}" for k, v in items)


class FitStatus:
    """What the views show, derived from events only (pure; tests drive it).

    XLA compiles the train step during the first step of a fit (seconds on a
    GPU, minutes on a TPU) and the test step during the first validation
    pass. The state calls the time until the first ``Step`` event
    "compiling", measures the rate in that epoch from the first ``Step`` on,
    and estimates both compile times for the final result. The callback
    emits the first ``Step`` of an epoch as soon as its first step ends, so
    no per-step work is needed for this.
    """

    def __init__(self) -> None:
        self.name = ""
        self.strategy = "default"
        self.replicas = 1
        self.epochs = 0
        self.initial_epoch = 0
        self.steps: int | None = None
        self.batch_size: int | None = None
        self.resumed_at: int | None = None
        self.epoch = -1
        self.step = 0
        self.logs: dict[str, float] = {}
        self.t_begin: float | None = None
        self.t_epoch: float | None = None
        self.t_now: float | None = None
        self.state = "running"
        self.reason = ""
        self.last_epoch_logs: dict[str, float] = {}
        # True from an EpochEnd until the next step: the epoch's final logs are the newest.
        self.at_epoch_end = False
        self.epochs_done = 0
        self.epochs_cut = 0  # epochs a stop ended before their last step (counted in epochs_done)
        # The model's previous run from the ledger (a ``kernelkit.ledger.Run``), drawn
        # faintly under this one's curves; context from the session, not an event.
        self.ghost: Any = None
        # Set by the session for a fit it runs: the user's callbacks' timer
        # (``kernelkit.timing.CallbackTimer``) and the callbacks that turned off
        # Keras's async dispatch; both feed the final result's timing line.
        self.timer: Any = None
        self.blockers: list[str] = []
        self.input_timer: Any = None  # the callback's InputTimer: the steps' wait for input
        self._reset_timing()

    def _reset_timing(self) -> None:
        # Per fit: a second fit of the same model starts its own measurements.
        self.first_step_epoch: int | None = None  # the epoch whose first step compiled
        self.first_step_steps = 0  # steps done by the first Step event (k under spe=k)
        self.t_first_step: float | None = None  # when it arrived
        self.first_step_time: float | None = None  # how long it took, compile included
        self.step_times: dict[int, float] = {}  # epoch -> post-compile seconds per step
        self.validation_times: list[float] = []  # each validated epoch's pass, in order
        self.t_train_end: float | None = None  # the epoch's end less its validation
        self._epoch_ended = False

    def apply(self, event: ev.Event) -> None:
        """Updates the state with one event."""
        self.t_now = event.time
        if isinstance(event, ev.TrainBegin):
            self.name = event.model_name
            self.strategy = event.strategy
            self.replicas = event.replicas
            self.epochs = event.epochs
            self.initial_epoch = event.initial_epoch
            self.steps = event.steps
            self.batch_size = event.batch_size
            self.resumed_at = event.resumed_at
            self.t_begin = event.time
            self._reset_timing()
        elif isinstance(event, ev.EpochBegin):
            self.epoch = event.epoch
            self.step = 0
            self.at_epoch_end = False
            self.t_epoch = event.time
            self.t_train_end = None
        elif isinstance(event, ev.Step):
            # The step says its epoch: a reader that joins mid-fit (a worker's replay,
            # the JupyterLab link) may not have seen the EpochBegin.
            self.epoch = event.epoch
            self.step = event.step
            self.at_epoch_end = False
            if event.logs:
                self.logs = dict(event.logs)
            if self.t_first_step is None and event.step > 0:
                self.first_step_epoch = event.epoch
                self.first_step_steps = event.step
                self.t_first_step = event.time
                start = self.t_epoch if self.t_epoch is not None else self.t_begin
                if start is not None:
                    self.first_step_time = max(event.time - start, 0.0)
        elif isinstance(event, ev.EpochEnd):
            self.epoch = event.epoch
            self.last_epoch_logs = dict(event.logs)
            self.at_epoch_end = True
            self.epochs_done += 1
            if self.steps and event.steps is not None and event.steps < self.steps:
                self.epochs_cut += 1  # Keras ends an epoch that a stop cut short too
            if self.steps is None and event.steps:
                self.steps = event.steps
            self._epoch_ended = True
            validation = event.validation_time
            if validation is not None:
                self.validation_times.append(validation)
            # Keras validates before on_epoch_end: the training part ends earlier.
            self.t_train_end = event.time - (validation or 0.0)
            self._record_step_time(event.steps if event.steps is not None else self.step)
        elif isinstance(event, ev.TrainEnd):
            self.state = event.state
            self.reason = event.reason
            # Where the callback stopped counting: exact even when the last Step event
            # was skipped by its refresh throttle (an interrupt mid-epoch sends no final
            # Step, as Keras then calls no on_epoch_end).
            if event.epoch is not None:
                self.epoch = event.epoch
            if event.step is not None:
                self.step = event.step

    def _measured_from(self) -> tuple[float, int] | None:
        """(time, steps done) the current epoch's rate counts from: past the compile."""
        if self.t_first_step is not None and self.epoch == self.first_step_epoch:
            return self.t_first_step, self.first_step_steps
        if self.t_epoch is None:
            return None
        return self.t_epoch, 0

    def _record_step_time(self, steps: int) -> None:
        origin = self._measured_from()
        if origin is None or self.t_train_end is None:
            return
        seconds, count = self.t_train_end - origin[0], steps - origin[1]
        if seconds > 0 and count > 0:
            self.step_times[self.epoch] = seconds / count

    @property
    def compiling(self) -> bool:
        """True from the start of a fit until its first training step has finished."""
        return (
            self.state == "running"
            and self.t_begin is not None
            and self.t_first_step is None
            and not self._epoch_ended
        )

    @property
    def elapsed(self) -> float:
        """Seconds since the epoch began."""
        if self.t_epoch is None or self.t_now is None:
            return 0.0
        return max(self.t_now - self.t_epoch, 0.0)

    @property
    def rate(self) -> float | None:
        """Steps per second in the current epoch, compile and validation left out.

        In the epoch that compiled, it counts from the end of the first step;
        once the epoch ended, up to the start of its validation.
        """
        origin = self._measured_from()
        if origin is None or self.t_now is None:
            return None
        end = self.t_train_end if self.t_train_end is not None else self.t_now
        seconds, count = end - origin[0], self.step - origin[1]
        return count / seconds if seconds > 0 and count > 0 else None

    @property
    def step_time(self) -> float | None:
        """Typical post-compile seconds per step.

        The median over the epochs after the one that compiled; that epoch's
        own post-compile part only when there is no other (it has few steps
        to share the epoch's fixed costs, such as building the validation
        iterator); else the live rate.
        """
        later = [t for e, t in self.step_times.items() if e != self.first_step_epoch]
        if later:
            return _median(later)
        if self.step_times:
            return next(iter(self.step_times.values()))
        rate = self.rate
        return 1 / rate if rate else None

    @property
    def compile_time(self) -> float | None:
        """Estimated train-step compile time: the first step less a typical one's time."""
        step_time = self.step_time
        if self.first_step_time is None or step_time is None:
            return None
        return max(self.first_step_time - self.first_step_steps * step_time, 0.0)

    @property
    def validation_compile_time(self) -> float | None:
        """Estimated test-step compile time: the first pass less a typical later one.

        None with fewer than two validated epochs (the first pass's duration is
        then only an upper bound: ``validation_times[0]``).
        """
        if len(self.validation_times) < 2:
            return None
        first, *later = self.validation_times
        return max(first - _median(later), 0.0)

    def breakdown(self) -> Any:
        """Where the fit's time went (``kernelkit.timing.Breakdown``), or None before it began."""
        from .timing import Breakdown

        if self.t_begin is None or self.t_now is None:
            return None
        waited = self.input_timer
        return Breakdown(
            wall=max(self.t_now - self.t_begin, 0.0),
            compile=self.compile_time,
            validation=sum(self.validation_times) if self.validation_times else None,
            callbacks=self.timer.sorted() if self.timer is not None else [],
            blockers=list(self.blockers),
            input=waited.seconds if waited is not None and waited.measured else None,
        )

    def timing_text(self) -> str:
        """The compile estimates in one line, or '' before the first step.

        E.g. 'compile ≈ 2.2 s (first step 2.3 s) · validation compile ≈ 0.4 s
        (first pass 0.5 s)'.

        For the final result only: it holds times, so it never goes into
        ``summary()``.
        """
        parts = []
        if self.first_step_time is not None:
            # Under steps_per_execution=k the first event covers k steps.
            count = self.first_step_steps
            what = "first step" if count == 1 else f"first {count} steps"
            first = format_seconds(self.first_step_time)
            compile_time = self.compile_time
            if compile_time is None:
                parts.append(f"{what} {first} (compile included)")
            else:
                parts.append(f"compile ≈ {format_seconds(compile_time)} ({what} {first})")
        validation_compile = self.validation_compile_time
        if validation_compile is not None:
            parts.append(
                f"validation compile ≈ {format_seconds(validation_compile)} "
                f"(first pass {format_seconds(self.validation_times[0])})"
            )
        elif self.validation_times:
            # One pass has nothing to compare with: its duration bounds the compile.
            parts.append(
                f"first validation {format_seconds(self.validation_times[0])} (compile included)"
            )
        return " · ".join(parts)

    @property
    def eta(self) -> float | None:
        """Seconds left in the current epoch, when the step count is known."""
        rate = self.rate
        if rate is None or self.steps is None:
            return None
        return max(self.steps - self.step, 0) / rate

    @property
    def latest_logs(self) -> dict[str, float]:
        """The newest logs: the last step's, under the epoch's final ones from its end on.

        From an ``EpochEnd`` until the next step, the epoch's logs (``val_*``
        included) win over the running averages of its last step.

        Example:
            >>> from kernelkit import events as ev
            >>> status = FitStatus()
            >>> status.apply(ev.Step(epoch=0, step=10, logs={"loss": 0.5}))
            >>> status.apply(ev.EpochEnd(epoch=0, logs={"loss": 0.4, "val_loss": 0.6}))
            >>> status.latest_logs
            {'loss': 0.4, 'val_loss': 0.6}
            >>> status.apply(ev.Step(epoch=1, step=1, logs={"loss": 0.3}))
            >>> status.latest_logs
            {'loss': 0.3}
        """
        if self.at_epoch_end:
            return {**self.logs, **self.last_epoch_logs}
        return dict(self.logs)

    @property
    def fraction(self) -> float | None:
        """Share of the epoch done, or None when the step count is unknown."""
        if not self.steps:
            return None
        return min(self.step / self.steps, 1.0)

    def epoch_text(self) -> str:
        """'Epoch 3/10' (1-based, as Keras prints it)."""
        return f"Epoch {max(self.epoch, 0) + 1}/{self.epochs}" if self.epoch >= 0 else "starting"

    def step_text(self) -> str:
        """'step 120/400 · 0:03 elapsed · ETA 0:07 · 40.1 steps/s · 1,283 samples/s'.

        While the first step compiles: 'step 0/400 · compiling…' (no events
        arrive then, so an elapsed time would stand still).
        """
        parts = [f"step {self.step}/{self.steps}" if self.steps else f"step {self.step}"]
        if self.compiling:
            return f"{parts[0]} · compiling…"
        parts.append(f"{format_duration(self.elapsed)} elapsed")
        if self.steps:
            parts.append(f"ETA {format_duration(self.eta)}")
        rate = self.rate
        if rate is not None:
            parts.append(f"{rate:,.1f} steps/s")
            if self.batch_size:
                parts.append(f"{rate * self.batch_size:,.0f} samples/s")
        return " · ".join(parts)

    def summary(self) -> str:
        """The stable one-line text/plain of the final result (no times: nbval compares it)."""
        name = f"{self.name}: " if self.name else ""
        head = f"kernelkit {name}{STATE_TEXT.get(self.state, self.state)}"
        if self.state in ("stopped_by_user", "failed", "stopped_by_callback") and self.reason:
            head = f"kernelkit {name}{self.reason}"
        tail = format_logs(self.last_epoch_logs)
        return f"{head} ({self.count_text()})" + (f" - {tail}" if tail else "")

    def count_text(self) -> str:
        """The epochs the run has done, honestly: '2 epochs complete', '6 epochs, 4 in this run'.

        An epoch a stop cut short is not counted (the head says where it
        stopped: "at epoch 3, step 3 of 16"). A resumed run counts the epochs
        done before it too, and says how many ran in this kernel.
        """
        complete = self.epochs_done - self.epochs_cut
        before = self.initial_epoch if self.resumed_at is not None else 0
        whole = before + complete
        text = f"{whole} epoch{'s' if whole != 1 else ''}"
        if self.epochs_cut:
            text += " complete"
        if before:
            text += f", {complete} in this run"
        return text
