"""Runs that survive a crash, best-weights checkpoints and TensorBoard logs.

Everything here is a thin layer over Keras's own callbacks:

* :func:`resume_callbacks` pairs ``keras.callbacks.BackupAndRestore`` with a
  small callback that keeps the epoch history as JSON beside the backup, so
  re-running a cell after the kernel died (or after a stop) continues at the
  right epoch, and the progress view can draw the earlier epochs too.
  :func:`resumed_state` reads that state *before* ``fit`` starts.
* :func:`checkpoint_callback` is ``ModelCheckpoint(save_best_only=True)``.
* :func:`tensorboard_callback` is ``keras.callbacks.TensorBoard`` writing to
  ``runs/NAME/<timestamp>``; no server is started.

A resume directory looks like this (kernelkit owns both entries, nothing else
in the directory is touched)::

    DIR/
      backup/                 BackupAndRestore's own files (latest.weights.h5,
                              training_metadata.json and their .bkp copies)
      history.json            {"format": "kernelkit.history/1", "logs": [...]}
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import keras

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "ResumeBackup",
    "ResumeHistory",
    "ResumeState",
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
        >>> state = kernelkit.runs.resumed_state("runs/mnist")  # None on a first run
        >>> model.fit(x, y, epochs=10, callbacks=kernelkit.runs.resume_callbacks("runs/mnist"))

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
        >>> state = kernelkit.runs.resumed_state("runs/mnist")
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


def clear_resume(directory: PathLike) -> bool:
    """Forgets a resumable run so the next ``fit`` starts at epoch 0.

    Removes only what :func:`resume_callbacks` wrote (``backup/`` and
    ``history.json``); other files in ``directory`` stay.

    Args:
        directory: the directory given to :func:`resume_callbacks`.

    Returns:
        True if there was something to remove.

    Example:
        >>> kernelkit.runs.clear_resume("runs/mnist")
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

    # Backups happen per epoch only, so keep Keras's default (no-op) batch-end
    # hook: overriding it turns off async batch dispatch in CallbackList and
    # makes the TensorFlow backend convert every step's logs.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Restore the backup (Keras) and note how many epochs it covers."""
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
        raise ValueError(
            f"The resume backup in {backup_dir!r} is damaged ({metadata}: {e}); "
            f"delete {backup_dir!r} to start the run over."
        ) from None


def _readable_h5(path: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


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


def _writable_dir(directory: PathLike, what: str) -> str:
    """Create ``directory`` if needed and prove it can be written; one-line errors."""
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
        raise ValueError(
            f"Cannot write to the {what} {root!r} ({reason}): pick a writable directory."
        ) from None
    return root


# --------------------------------------------------------------------------
# Best-weights checkpoints


def checkpoint_callback(
    path: PathLike, monitor: str = "val_loss", mode: str = "auto"
) -> keras.callbacks.ModelCheckpoint:
    """Return a ``ModelCheckpoint`` that keeps only the best epoch so far.

    Args:
        path: ``*.weights.h5`` saves the weights only; ``*.keras`` saves the
            whole model. Keras's ``{epoch}``-style placeholders work.
        monitor: the logged metric that decides "best" (``val_loss`` needs
            validation data in ``fit``; without it Keras warns and saves nothing).
        mode: ``"auto"``, ``"min"`` or ``"max"``, as in Keras.

    Returns:
        The callback, to pass to ``fit``.

    Raises:
        ValueError: the suffix is neither ``.weights.h5`` nor ``.keras``, the
            mode is unknown, or the folder cannot be written.

    Example:
        >>> best = kernelkit.runs.checkpoint_callback("best.weights.h5")
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


def tensorboard_callback(
    name: str, root: PathLike = "runs", *, update_freq: str | int = "epoch"
) -> tuple[keras.callbacks.TensorBoard, str]:
    """Return Keras's TensorBoard callback logging to ``root/name/<timestamp>``.

    Each call gets a new timestamped folder, so runs of the same name sit side
    by side in TensorBoard. No TensorBoard server is started; see
    :func:`tensorboard_hint`.

    Args:
        name: the run's name: one folder name (letters, digits, ``-_.``).
        root: the folder that holds all runs.
        update_freq: ``"epoch"``, ``"batch"`` or every N batches, as in Keras.

    Returns:
        ``(callback, logdir)``.

    Raises:
        ValueError: a bad name, or a root that cannot be written.

    Example:
        >>> tb, logdir = kernelkit.runs.tensorboard_callback("mnist")
        >>> model.fit(x, y, epochs=3, callbacks=[tb])
        >>> print(kernelkit.runs.tensorboard_hint(logdir))

    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(
            f"Run name {name!r} must be one folder name (letters, digits, '-', '_', '.')."
        )
    base = _writable_dir(os.path.join(os.fspath(root), name), "TensorBoard folder")
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
    return keras.callbacks.TensorBoard(log_dir=logdir, update_freq=update_freq), logdir


def tensorboard_hint(logdir: PathLike) -> str:
    """Tells how to open TensorBoard on a run's logs in the notebook.

    Args:
        logdir: the folder :func:`tensorboard_callback` returned.

    Returns:
        Two magic lines to run in a cell, pointed at the run's name folder so
        every run of that name shows up.

    Example:
        >>> print(kernelkit.runs.tensorboard_hint("runs/mnist/20260101-120000"))
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
