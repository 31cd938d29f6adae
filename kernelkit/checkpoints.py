"""Runs that survive a crash, best-weights checkpoints and TensorBoard logs.

Almost everything here is a thin layer over Keras's own callbacks:

* :func:`resume_callbacks` pairs ``keras.callbacks.BackupAndRestore`` with a
  small callback that keeps the epoch history as JSON beside the backup, so
  re-running a cell after the kernel died (or after a stop) continues at the
  right epoch, and the progress view can draw the earlier epochs too.
  :func:`resumed_state` reads that state *before* ``fit`` starts, and
  :func:`check_resume` proves it can be restored (the backup reads back
  whole, and its weight shapes are the model's) before anything trains.
* :func:`checkpoint_callback` is ``ModelCheckpoint(save_best_only=True)``.
* :func:`tensorboard_callback` writes TensorBoard logs to
  ``runs/NAME/<timestamp>``: with ``keras.callbacks.TensorBoard`` on the
  TensorFlow backend, and with :class:`ScalarTensorBoard` (the same scalar
  charts, written with the ``tensorboard`` package alone) on JAX and torch,
  where TensorFlow need not be installed. :func:`check_tensorboard` says up
  front, in one line, when logs cannot be written. No server is started.

A resume directory looks like this (kernelkit owns both entries, nothing else
in the directory is touched)::

    DIR/
      backup/                 BackupAndRestore's own files (latest.weights.h5,
                              training_metadata.json and their .bkp copies)
      history.json            {"format": "kernelkit.history/1", "logs": [...]}
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import keras

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "ResumeBackup",
    "ResumeHistory",
    "ResumeMismatch",
    "ResumeState",
    "ScalarTensorBoard",
    "check_resume",
    "check_tensorboard",
    "checkpoint_callback",
    "clear_resume",
    "resume_callbacks",
    "resumed_state",
    "tensorboard_callback",
    "tensorboard_hint",
]

BACKUP_DIR = "backup"
HISTORY_FILE = "history.json"
_HISTORY_FORMAT = "kernelkit.history/1"
# BackupAndRestore's file names (keras/src/callbacks/backup_and_restore.py).
_WEIGHTS = "latest.weights.h5"
_METADATA = "training_metadata.json"


# --------------------------------------------------------------------------
# Resume after a crash


@dataclass(frozen=True)
class ResumeState:
    """Where a resumable run will continue, read before ``fit`` starts.

    Attributes:
        directory: the resume directory.
        epoch: the epoch ``fit`` continues from (0-based), i.e. the number of
            epochs already done; ``fit`` reports it as ``initial_epoch``.
        history: the finished epochs' logs, like ``keras.callbacks.History``:
            ``{"loss": [...], "val_loss": [...]}``.
        epochs: the epoch number of each logged epoch, in order.

    """

    directory: str
    epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"resumed at epoch {self.epoch + 1}"  # 1-based, as the progress view says


def resume_callbacks(directory: PathLike) -> list[keras.callbacks.Callback]:
    """Return the callbacks that make a ``fit`` resumable from ``directory``.

    Pass them to ``fit``. If the kernel dies, an exception stops training, or
    the run is stopped before its last epoch, running the same ``fit`` again
    (with a fresh model of the same architecture) restores the weights and the
    optimizer and continues at the first unfinished epoch. An epoch cut short
    by a stop is done again. When ``fit`` runs to its last epoch, the backup is
    removed and the next run starts afresh; ``history.json`` stays.

    The directory is checked up front: a path that is a file, or that cannot
    be created or written, raises one clear error.

    Args:
        directory: where the backup and the history live; created if needed.
            Give each run its own directory.

    Returns:
        ``[ResumeHistory, ResumeBackup]``, in that order: the history is saved
        before the backup, so it always covers the backed-up epochs.

    Raises:
        ValueError: ``directory`` is a file or cannot be written.

    Example:
        >>> state = kernelkit.checkpoints.resumed_state("runs/mnist")  # None on a first run
        >>> callbacks = kernelkit.checkpoints.resume_callbacks("runs/mnist")
        >>> model.fit(x, y, epochs=10, callbacks=callbacks)

    """
    root = _writable_dir(directory, "resume directory")
    return [ResumeHistory(root), ResumeBackup(os.path.join(root, BACKUP_DIR))]


def resumed_state(directory: PathLike) -> ResumeState | None:
    """Read where a resumable run in ``directory`` would continue.

    Call it before ``fit`` to say "resumed at epoch k" and draw the finished
    epochs' curves. It reads the same backup that ``BackupAndRestore`` will
    restore (falling back, like it, to the previous backup when the latest
    weights file is damaged).

    Args:
        directory: the directory given to :func:`resume_callbacks`.

    Returns:
        A :class:`ResumeState`, or None when there is nothing to resume (a first
        run, or the last run finished).

    Raises:
        ValueError: the backup's metadata is damaged (the message says which
            file to delete to start over).

    Example:
        >>> state = kernelkit.checkpoints.resumed_state("runs/mnist")
        >>> print(state or "new run")
        resumed at epoch 4

    """
    root = os.fspath(directory)
    epoch = _backup_epoch(os.path.join(root, BACKUP_DIR))
    if epoch is None:
        return None
    logs = [r for r in _read_history(root) if r["epoch"] < epoch]
    history: dict[str, list[float]] = {}
    for record in logs:
        for key, value in record.items():
            if key != "epoch":
                history.setdefault(key, []).append(value)
    return ResumeState(
        directory=root,
        epoch=epoch,
        history=history,
        epochs=tuple(r["epoch"] for r in logs),
    )


class ResumeMismatch(ValueError):
    """A resume backup that cannot go into this model (damaged, or another architecture)."""


def check_resume(directory: PathLike, model: Any = None) -> ResumeState | None:
    """Check, before anything trains, that a resumable run in ``directory`` can continue.

    ``%%kmodel NAME --resume DIR`` calls it before the cell runs (the folder
    and the backup's files), and every resumed fit calls it again with its
    model, before ``BackupAndRestore`` restores anything: a backup of another
    architecture is then one line naming the first layer that differs, not a
    Keras traceback with every weight value in it.

    Args:
        directory: the directory given to :func:`resume_callbacks`.
        model: the model the backup will be restored into; a built model's
            weight shapes are compared with the backup's.

    Returns:
        The :class:`ResumeState` (None when there is nothing to resume).

    Raises:
        ValueError: the directory is a file or cannot be written.
        ResumeMismatch: the backup is damaged (no readable copy of its
            weights), or holds another architecture's weights. The message
            names the fix: another folder, or :func:`clear_resume`.

    Example:
        >>> kernelkit.checkpoints.check_resume("runs/mnist", model)  # None on a first run
        resumed at epoch 4

    """
    root = _writable_dir(directory, "resume directory")
    state = resumed_state(root)
    if state is None:
        return None
    weights = _restored_weights(root)
    state = resumed_state(root) or state  # the previous backup's epoch, if it fell back to it
    if model is not None and getattr(model, "built", False):
        from .weights import layout_difference

        difference = layout_difference(model, weights)
        if difference is not None:
            raise ResumeMismatch(
                f"The resume backup in {root!r} is of another architecture ({difference}), "
                f"so nothing was restored or trained: use another resume folder, or start "
                f"this one over with kernelkit.checkpoints.clear_resume({root!r})."
            )
    return state


def _restored_weights(root: str) -> str:
    """The weights file BackupAndRestore will load from ``root``, or a one-line error."""
    backup = os.path.join(root, BACKUP_DIR)
    latest = os.path.join(backup, _WEIGHTS)
    problem = _h5_problem(latest)
    if problem is None:
        return latest
    if _h5_problem(latest + ".bkp") is None:
        if _readable_h5(latest):
            # BackupAndRestore falls back to the previous backup only when the latest one
            # fails to open; one that opens but fails to read would end the fit: fall back
            # here, as Keras does (the previous weights and their metadata).
            shutil.copyfile(latest + ".bkp", latest)
            metadata = os.path.join(backup, _METADATA)
            if os.path.exists(metadata + ".bkp"):
                shutil.copyfile(metadata + ".bkp", metadata)
            return latest
        return latest + ".bkp"  # Keras falls back to it itself
    raise ResumeMismatch(
        f"The resume backup in {root!r} is damaged ({_WEIGHTS}: {problem}; no readable "
        f"previous copy), so it cannot be resumed: delete it with "
        f"kernelkit.checkpoints.clear_resume({root!r}) to start the run over, or resume from "
        "another folder."
    )


def clear_resume(directory: PathLike) -> bool:
    """Forgets a resumable run so the next ``fit`` starts at epoch 0.

    Removes only what :func:`resume_callbacks` wrote (``backup/`` and
    ``history.json``); other files in ``directory`` stay.

    Args:
        directory: the directory given to :func:`resume_callbacks`.

    Returns:
        True if there was something to remove.

    Example:
        >>> kernelkit.checkpoints.clear_resume("runs/mnist")
        True

    """
    root = os.fspath(directory)
    removed = False
    backup = os.path.join(root, BACKUP_DIR)
    if os.path.isdir(backup):
        shutil.rmtree(backup)
        removed = True
    history = os.path.join(root, HISTORY_FILE)
    if os.path.isfile(history):
        os.remove(history)
        removed = True
    return removed


class _EpochCutShort:
    """Tracks the last step of the epoch, to tell a full epoch from one a stop cut short."""

    _last_batch = -1

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Forget the last step seen."""
        self._last_batch = -1

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Remember the step."""
        self._last_batch = batch

    def _cut_short(self) -> bool:
        return _cut_short(self.model, self.params, self._last_batch)  # type: ignore[attr-defined]


class ResumeBackup(_EpochCutShort, keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that keeps its backup unless the run really finished.

    Keras deletes the backup in ``on_train_end`` whatever happened, so a run
    stopped early (a stop button, a graceful Ctrl-C, EarlyStopping) could not
    be resumed. This subclass deletes it only when the last epoch is done, and
    does not back up an epoch that a stop cut short (it is done again on
    resume). It also keeps a second, previous backup so a kernel that dies
    while writing the latest one still resumes (``double_checkpoint=True``).

    Args:
        backup_dir: a directory used only by this callback.

    """

    def __init__(self, backup_dir: PathLike) -> None:
        super().__init__(
            os.fspath(backup_dir),
            save_freq="epoch",
            double_checkpoint=True,
            delete_checkpoint=True,
        )
        self._done_epochs = 0
        self._last_batch = -1
        # The model kernelkit's fit compared the backup with already (skip doing it twice).
        self.checked_model: Any = None

    # Backups happen per epoch only, so keep Keras's default (no-op) batch-end
    # hook: overriding it turns off async batch dispatch in CallbackList and
    # makes the TensorFlow backend convert every step's logs.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Check the backup against the model, restore it (Keras), note the epochs it covers."""
        # Keras has built the model by now (a subclassed one too): a backup of another
        # architecture is refused in one line before anything is restored or trained.
        if not self.model.built:
            # Keras's TensorFlow trainer builds a subclassed model only when it traces the
            # first step, after this restore (its JAX trainer builds it before).
            raise ResumeMismatch(
                f"Resuming restores the backup before the first step, and model "
                f"{self.model.name!r} is not built yet: build it first (call it on a batch, "
                "e.g. model(x[:1]), or start it with keras.Input)."
            )
        if self.checked_model is not self.model:
            check_resume(os.path.dirname(self.backup_dir.rstrip(os.sep)) or ".", self.model)
        super().on_train_begin(logs)
        self._done_epochs = _backup_epoch(self.backup_dir) or 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Back up a finished epoch; skip one that a stop cut short."""
        if self._cut_short():
            return  # keep the previous backup: this epoch is done again on resume
        super().on_epoch_end(epoch, logs)
        self._done_epochs = epoch + 1

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Delete the backup only when the last epoch is done."""
        # BackupAndRestore resumes by setting model._initial_epoch, which
        # nothing resets (Keras 3.15): a later plain fit() of the same model
        # would start at the resumed epoch too. Only the restore needs it.
        if getattr(self.model, "_initial_epoch", None) is not None:
            self.model._initial_epoch = None
        epochs = (self.params or {}).get("epochs")
        if isinstance(epochs, int) and self._done_epochs >= epochs:
            super().on_train_end(logs)


class ResumeHistory(_EpochCutShort, keras.callbacks.Callback):
    """Keeps every finished epoch's logs in ``DIR/history.json``.

    The file is rewritten atomically (a temporary file, then ``os.replace``)
    at each epoch end, so a kernel that dies mid-write leaves the previous
    version. On a resumed run it starts from the saved epochs that the backup
    covers; on a fresh run it starts empty.

    Args:
        directory: the resume directory (not the backup directory).

    """

    def __init__(self, directory: PathLike) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        self.records: list[dict[str, Any]] = []
        self._last_batch = -1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Start from the backed-up epochs' logs, or empty on a fresh run."""
        state = resumed_state(self.directory)
        if state is None:
            self.records = []
        else:
            self.records = [r for r in _read_history(self.directory) if r["epoch"] < state.epoch]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Add the epoch's logs and rewrite history.json atomically."""
        if self._cut_short():
            return
        record: dict[str, Any] = {"epoch": int(epoch)}
        for key, value in (logs or {}).items():
            number = _number(value)
            if number is not None:
                record[key] = number
        self.records = [r for r in self.records if r["epoch"] < epoch] + [record]
        _write_json_atomic(
            os.path.join(self.directory, HISTORY_FILE),
            {"format": _HISTORY_FORMAT, "logs": self.records},
        )


def _cut_short(model: Any, params: dict[str, Any] | None, last_batch: int) -> bool:
    """Tell whether a stop ended this epoch before its last step.

    Keras still calls ``on_epoch_end`` after ``model.stop_training`` is set
    mid-epoch; that epoch must not count as done. Under
    ``steps_per_execution=N`` the batch hooks fire once per N steps.
    """
    if model is None or not getattr(model, "stop_training", False):
        return False
    steps = (params or {}).get("steps")
    if not isinstance(steps, int) or last_batch < 0:
        return False
    per_call = getattr(model, "steps_per_execution", 1) or 1
    return last_batch + int(per_call) < steps


def _number(value: Any) -> float | None:
    # NaN and inf are kept (json writes them as NaN/Infinity, Python reads them back).
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _backup_epoch(backup_dir: str) -> int | None:
    """Return the epoch BackupAndRestore will restore from ``backup_dir``, or None."""
    metadata = os.path.join(backup_dir, _METADATA)
    weights = os.path.join(backup_dir, _WEIGHTS)
    if not os.path.exists(weights) and not os.path.exists(metadata):
        return None
    damaged = os.path.exists(weights) and not _readable_h5(weights)
    if damaged and os.path.exists(weights + ".bkp"):
        metadata += ".bkp"  # BackupAndRestore falls back to the previous backup too
    if not os.path.exists(metadata):
        return None
    try:
        with open(metadata, encoding="utf8") as f:
            epoch = json.load(f)["epoch"]
        return int(epoch)
    except (OSError, ValueError, KeyError, TypeError) as e:
        root = os.path.dirname(backup_dir.rstrip(os.sep)) or "."
        raise ResumeMismatch(
            f"The resume backup in {backup_dir!r} is damaged ({os.path.basename(metadata)}: "
            f"{e}): delete it with kernelkit.checkpoints.clear_resume({root!r}) to start the run "
            "over, or resume from another folder."
        ) from None


def _readable_h5(path: str) -> bool:
    """Whether h5py opens the file: what makes BackupAndRestore fall back (an OSError)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def _h5_problem(path: str) -> str | None:
    """Why the HDF5 file at ``path`` cannot be read back whole (None: it can)."""
    import h5py

    if not os.path.exists(path):
        return "missing"
    problems: list[str] = []

    def read(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset) and not problems:
            item[()]  # a truncated or corrupt block fails here, not at open

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        return " ".join(str(e).split())[:160] or type(e).__name__
    return None


def _read_history(root: str) -> list[dict[str, Any]]:
    """Return the saved epoch records; a missing or damaged file gives none."""
    try:
        with open(os.path.join(root, HISTORY_FILE), encoding="utf8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    logs = data.get("logs") if isinstance(data, dict) else None
    if not isinstance(logs, list):
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in logs:
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _write_json_atomic(path: str, data: Any) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".history-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _writable_dir(directory: PathLike, what: str, fix: str = "pick a writable directory") -> str:
    """Create ``directory`` if needed and prove it can be written; one-line errors.

    ``fix`` ends the line when the folder cannot be made or written (the
    ``--tensorboard`` folder's place is not the user's choice, say).
    """
    root = os.fspath(directory)
    if not root:
        raise ValueError(f"The {what} is empty: pass a directory path.")
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"The {what} {root!r} is a file: pass a directory path.")
    try:
        os.makedirs(root, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kernelkit-probe-", dir=root)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        blocker = _file_on_the_way(root)
        if blocker is not None:
            reason, fix = f"{blocker!r} is a file", f"move or rename that file, or {fix}"
        raise ValueError(f"Cannot write to the {what} {root!r} ({reason}): {fix}.") from None
    return root


def _file_on_the_way(root: str) -> str | None:
    """The regular file among ``root``'s parents that stops the folder being made, if any."""
    path = Path(root)
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else os.fspath(parent)
    return None


# --------------------------------------------------------------------------
# Best-weights checkpoints


def checkpoint_callback(
    path: PathLike, monitor: str = "val_loss", mode: str = "auto"
) -> keras.callbacks.ModelCheckpoint:
    """Return a ``ModelCheckpoint`` that keeps only the best epoch so far.

    Args:
        path: ``*.weights.h5`` saves the weights only; ``*.keras`` saves the
            whole model. Keras's ``{epoch}``-style placeholders work.
        monitor: the logged metric that decides "best". ``val_loss`` needs
            validation data in ``fit``; ``kernelkit.fit(checkpoint=...)`` and
            ``--checkpoint`` pass ``"loss"`` (the training loss) for a fit
            without validation data, and say so in one line.
        mode: ``"auto"``, ``"min"`` or ``"max"``, as in Keras.

    Returns:
        The callback, to pass to ``fit``.

    Raises:
        ValueError: the suffix is neither ``.weights.h5`` nor ``.keras``, the
            mode is unknown, the path is an existing folder, or its folder
            cannot be written.

    Example:
        >>> best = kernelkit.checkpoints.checkpoint_callback("best.weights.h5")
        >>> model.fit(x, y, validation_split=0.2, epochs=10, callbacks=[best])

    """
    target = os.fspath(path)
    weights_only = target.endswith(".weights.h5")
    if not (weights_only or target.endswith(".keras")):
        raise ValueError(
            f"Checkpoint path {target!r} must end in .weights.h5 (weights only) or "
            ".keras (whole model)."
        )
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', not {mode!r}.")
    if os.path.isdir(target):
        raise ValueError(
            f"The checkpoint path {target!r} is an existing folder, and Keras saves the best "
            f"epoch to a file: name a file, e.g. "
            f"{os.path.join(target, 'best' + ('.weights.h5' if weights_only else '.keras'))!r}."
        )
    parent = os.path.dirname(target)
    if parent and "{" not in parent:
        _writable_dir(parent, "checkpoint folder")
    return keras.callbacks.ModelCheckpoint(
        target,
        monitor=monitor,
        mode=mode,
        save_best_only=True,
        save_weights_only=weights_only,
    )


# --------------------------------------------------------------------------
# TensorBoard

# How often a batch-mode event file is flushed at most (epochs always flush),
# so TensorBoard shows a long epoch's steps while it runs.
_FLUSH_SECS = 5.0
_EVENT_FILE_IDS = itertools.count()


class ScalarTensorBoard(keras.callbacks.Callback):
    """Writes the logs' scalars for TensorBoard, with no TensorFlow at all.

    It lays out its events as ``keras.callbacks.TensorBoard`` does, so the
    charts look the same: ``log_dir/train`` holds ``epoch_loss``,
    ``epoch_<metric>`` and ``epoch_learning_rate``; ``log_dir/validation``
    holds the ``val_`` values under the same tags (``epoch_loss``, ...); the
    step is the epoch. With ``update_freq`` set to ``"batch"`` or N, it also
    writes ``batch_<metric>`` into ``train/`` every N steps, the step counting
    every training step so far. Non-scalar and non-finite values are skipped.

    The events are written with the ``tensorboard`` package's own record
    format and protos (as PyTorch's ``SummaryWriter`` does), not through
    TensorFlow, so it works on a JAX or torch runtime without TensorFlow.
    Only scalars are written: no graph, histograms or profile.

    The same callback can be passed to several fits: each writer appends to
    its event file, and a fit whose epochs start over (a second plain ``fit``)
    continues after the last epoch written, as the progress view does.

    Args:
        log_dir: the run's folder; ``train/`` and ``validation/`` go in it.
        update_freq: ``"epoch"``, ``"batch"`` or every N training steps, as in
            Keras.

    Raises:
        ValueError: ``update_freq`` is neither ``"epoch"``, ``"batch"`` nor a
            positive int, or the ``tensorboard`` package is missing (see
            :func:`check_tensorboard`).

    Example:
        >>> tb = kernelkit.checkpoints.ScalarTensorBoard("runs/mnist/try-1")
        >>> model.fit(x, y, validation_split=0.2, epochs=3, callbacks=[tb])

    """

    # Keras may run the batch hook on a worker thread on thread-safe backends
    # (JAX, torch). It only works out a step and appends to a file under a
    # lock, so training can stay asynchronous.
    async_safe = True

    def __init__(self, log_dir: PathLike, update_freq: str | int = "epoch") -> None:
        super().__init__()
        if update_freq == "batch":
            update_freq = 1  # as Keras's TensorBoard
        if update_freq != "epoch" and not (
            isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq > 0
        ):
            raise ValueError(
                f"update_freq must be 'epoch', 'batch' or a positive int, not {update_freq!r}."
            )
        check_tensorboard()  # one clear line now, not an ImportError after an epoch
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writers: dict[str, _EventFile] = {}
        self._paths: dict[str, str] = {}  # each writer's file, appended to on reopening
        self._lock = threading.Lock()
        self._steps_before = 0  # training steps of the finished epochs, all fits together
        self._epoch_steps = 0  # training steps seen in the current epoch
        self._next_epoch = 0  # the step after the last epoch written
        self._epoch_offset = 0
        self._fit_started = False
        self._steps_per_call = 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Note a new fit; its first epoch tells whether the epochs start over."""
        self._fit_started = True
        # Read here, on the training thread: on JAX, ``self.model`` syncs the
        # training state into the model, and doing that from Keras's worker
        # thread in the batch hook races with the next step's donated buffers
        # ("Buffer has been deleted or donated").
        self._steps_per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Count this epoch's steps from zero."""
        if self._fit_started:
            # A fit with initial_epoch continues as it is; one that starts over at
            # epoch 0 is shifted after the last epoch written.
            self._epoch_offset = max(0, self._next_epoch - epoch)
            self._fit_started = False
        self._epoch_steps = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Write ``batch_<metric>`` when the steps just done reach a multiple of N."""
        if self.update_freq == "epoch":
            return
        every = int(self.update_freq)
        # Under steps_per_execution=k the hook fires once for k steps, with the
        # index of the chunk's last step (past the epoch's end for a short last
        # chunk): write when the chunk's steps pass a multiple of N. Nothing here
        # depends on another call, so the order Keras's worker threads run the
        # calls in does not matter.
        done = batch + 1  # this epoch's steps, up to the chunk's end
        steps = (self.params or {}).get("steps")
        if isinstance(steps, int) and steps > 0:
            done = min(done, steps)
        step = self._steps_before + done
        first = self._steps_before + max(0, batch + 1 - self._steps_per_call)
        with self._lock:
            self._epoch_steps = max(self._epoch_steps, done)
            if step // every > first // every:
                self._write("train", step, {f"batch_{k}": v for k, v in (logs or {}).items()})

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Write the epoch's training and validation scalars, then flush."""
        # Keras has waited for every batch hook of this epoch by now.
        step = epoch + self._epoch_offset
        self._next_epoch = step + 1
        self._steps_before += self._epoch_steps
        self._epoch_steps = 0
        logs = logs or {}
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        train.update(_learning_rates(self.model))
        validation = {k[len("val_") :]: v for k, v in logs.items() if k.startswith("val_")}
        with self._lock:
            self._write("train", step, {f"epoch_{k}": v for k, v in train.items()})
            self._write("validation", step, {f"epoch_{k}": v for k, v in validation.items()})
            for writer in self._writers.values():
                writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Flush and close the event files; a later fit reopens them."""
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers = {}

    def _write(self, part: str, step: int, values: dict[str, Any]) -> None:
        scalars = {}
        for tag, value in values.items():
            number = _scalar(value)
            if number is not None:
                scalars[tag] = number
        if not scalars:
            return  # no empty event file: without validation data there is no validation/
        writer = self._writers.get(part)
        if writer is None:
            writer = _EventFile(os.path.join(self.log_dir, part), self._paths.get(part))
            self._writers[part] = writer
            self._paths[part] = writer.path
        writer.add_scalars(step, scalars)


class _EventFile:
    """One TensorBoard event file, written with the tensorboard package alone.

    The package's ``EventFileWriter`` is not used: it makes its folder and file
    through ``tensorboard.compat.tf``, which imports TensorFlow whenever it is
    installed, even on the JAX backend (seconds, and TensorFlow's CUDA
    libraries beside JAX's). Its ``RecordWriter`` and protos need nothing else.
    """

    def __init__(self, directory: str, path: str | None = None) -> None:
        event_pb2, summary_pb2, record_writer = _tensorboard_writer()
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        os.makedirs(directory, exist_ok=True)
        # TensorBoard's own naming, so its loader finds and orders the files.
        self.path = path or os.path.join(
            directory,
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{next(_EVENT_FILE_IDS)}",
        )
        # Append: reopening for a later fit continues the file. close() closes it.
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._records = record_writer(self._file)
        self._flushed = time.monotonic()
        if self._file.tell() == 0:
            # file_version 2 tells TensorBoard not to drop steps that arrive out
            # of order (they can, from Keras's worker threads).
            self._add(event_pb2.Event(file_version="brain.Event:2"))
            self.flush()

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Append one event holding ``{tag: value}`` at ``step``."""
        value = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(
            value=[value(tag=tag, simple_value=number) for tag, number in scalars.items()]
        )
        self._add(self._event_pb2.Event(step=step, summary=summary))
        if time.monotonic() - self._flushed > _FLUSH_SECS:
            self.flush()

    def _add(self, event: Any) -> None:
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        """Write what is buffered to disk."""
        self._records.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        """Flush and close the file."""
        self._records.close()


def _tensorboard_writer() -> tuple[Any, Any, Any]:
    """Import what event files need: ``(event_pb2, summary_pb2, RecordWriter)``.

    None of it imports TensorFlow (``tensorboard.compat.tf`` is never touched).
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    return event_pb2, summary_pb2, RecordWriter


def _scalar(value: Any) -> float | None:
    """A log value as a finite float, or None for anything TensorBoard cannot chart."""
    # Older numpy lets float() take a one-element array, and float("1") parses.
    if getattr(value, "ndim", 0) != 0 or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _learning_rates(model: Any) -> dict[str, float]:
    """The optimizer's learning rate(s), named as Keras's TensorBoard names them."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if optimizer is None:
        return {}
    if hasattr(optimizer, "optimizers"):
        pairs = [(f"learning_rate_{o.name}", o) for o in optimizer.optimizers]
    else:
        pairs = [("learning_rate", optimizer)]
    rates: dict[str, float] = {}
    for key, opt in pairs:
        try:
            rates[key] = float(keras.ops.convert_to_numpy(opt.learning_rate))
        except (AttributeError, TypeError, ValueError):
            continue  # an optimizer without one: nothing to chart
    return rates


def check_tensorboard(name: str | None = None, root: PathLike = "runs") -> None:
    """Check that TensorBoard logs can be written in this kernel.

    ``%%kmodel NAME --tensorboard`` calls it before the cell runs, so a
    missing package, or a log folder that cannot be made, is one clear line
    instead of a traceback from inside ``fit``. It imports no TensorFlow: on
    the JAX and torch backends none is needed (see :func:`tensorboard_callback`).

    Args:
        name: the run's name; given, ``root/name`` is made (if needed) and
            proved writable too.
        root: the folder that holds all runs.

    Returns:
        None when :func:`tensorboard_callback` will work.

    Raises:
        ValueError: one line naming the problem and the fix, e.g. the
            ``tensorboard`` package is not installed, fails to load, or the
            log folder cannot be made (a file named ``runs`` is in the way).

    Example:
        >>> kernelkit.checkpoints.check_tensorboard("mnist")  # None: TensorBoard logs will work

    """
    tensorflow = keras.backend.backend() == "tensorflow"
    from ._env import installed

    if not installed("tensorboard"):
        raise ValueError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard (or pip install 'kernelkit[tensorboard]')"
            + ("" if tensorflow else "; TensorFlow itself is not needed")
        )
    try:
        _tensorboard_writer()
    except Exception as e:  # e.g. a protobuf too old or too new for its protos
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--tensorboard cannot load the tensorboard package ({type(e).__name__}: "
            f"{reason}): pip install --upgrade tensorboard protobuf"
        ) from None
    if name is not None:
        _log_folder(name, root)


def _log_folder(name: str, root: PathLike) -> str:
    """``root/name``, made and proved writable: the TensorBoard folder of a run."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(
            f"Run name {name!r} must be one folder name (letters, digits, '-', '_', '.')."
        )
    return _writable_dir(
        os.path.join(os.fspath(root), name),
        "TensorBoard folder",
        fix="run the notebook from a folder you can write to (os.chdir)",
    )


def tensorboard_callback(
    name: str, root: PathLike = "runs", *, update_freq: str | int = "epoch"
) -> tuple[keras.callbacks.Callback, str]:
    """Return a TensorBoard callback logging to ``root/name/<timestamp>``.

    On the TensorFlow backend it is Keras's ``keras.callbacks.TensorBoard``;
    on every other backend it is :class:`ScalarTensorBoard`, which writes the
    same scalar charts without TensorFlow. Each call gets a new timestamped
    folder, so runs of the same name sit side by side in TensorBoard. No
    TensorBoard server is started; see :func:`tensorboard_hint`.

    Args:
        name: the run's name: one folder name (letters, digits, ``-_.``).
        root: the folder that holds all runs.
        update_freq: ``"epoch"``, ``"batch"`` or every N batches, as in Keras.

    Returns:
        ``(callback, logdir)``.

    Raises:
        ValueError: a bad name, a root that cannot be written, or no usable
            ``tensorboard`` package (see :func:`check_tensorboard`).

    Example:
        >>> tb, logdir = kernelkit.checkpoints.tensorboard_callback("mnist")
        >>> model.fit(x, y, epochs=3, callbacks=[tb])
        >>> print(kernelkit.checkpoints.tensorboard_hint(logdir))

    """
    check_tensorboard(name, root)  # the package first: tf.summary needs tensorboard too
    base = _log_folder(name, root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(base, stamp)
    suffix = 1
    while True:
        try:
            os.makedirs(logdir)  # claims the folder: two runs in one second differ
            break
        except FileExistsError:
            suffix += 1
            logdir = os.path.join(base, f"{stamp}-{suffix}")
    if keras.backend.backend() == "tensorflow":
        # TensorFlow is loaded anyway, and Keras's callback also writes the
        # graph and can profile.
        return keras.callbacks.TensorBoard(log_dir=logdir, update_freq=update_freq), logdir
    # Keras's callback imports tensorflow.summary on every backend, so a JAX or
    # torch runtime without TensorFlow (a Colab or Kaggle TPU) would fail in fit.
    return ScalarTensorBoard(logdir, update_freq=update_freq), logdir


def tensorboard_hint(logdir: PathLike) -> str:
    """Tells how to open TensorBoard on a run's logs in the notebook.

    Args:
        logdir: the folder :func:`tensorboard_callback` returned.

    Returns:
        Two magic lines to run in a cell, pointed at the run's name folder so
        every run of that name shows up.

    Example:
        >>> print(kernelkit.checkpoints.tensorboard_hint("runs/mnist/20260101-120000"))
        TensorBoard logs are in runs/mnist/20260101-120000. To view them, run in a cell:
        %load_ext tensorboard
        %tensorboard --logdir runs/mnist

    """
    path = Path(os.fspath(logdir))
    folder = path.parent if re.fullmatch(r"\d{8}-\d{6}(-\d+)?", path.name) else path
    shown = folder.as_posix()
    if any(c.isspace() for c in shown) or '"' in shown:
        shown = '"' + shown.replace('"', '\\"') + '"'
    return (
        f"TensorBoard logs are in {path.as_posix()}. To view them, run in a cell:\n"
        "%load_ext tensorboard\n"
        f"%tensorboard --logdir {shown}"
    )
