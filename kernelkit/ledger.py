"""The run ledger: every fit of a registered model, kept in SQLite next to the notebook.

Comparing runs should need no server and no account, and should survive a
kernel restart. Each fit of a registered model is one row of a local SQLite
database (the standard library's ``sqlite3``): what was trained (the model's
name and an architecture fingerprint), how (compile configuration, fit
arguments, seed), what happened (each epoch's logs, downsampled batch
curves, the end state and its reason), how fast (wall time, first step,
steps per second), where (the distribution the fit read) and with what
(kernelkit, Keras and backend versions).

Writes happen at the start of a fit, at each epoch end and at its end, each
one SQLite transaction, so the per-step path pays nothing and a kernel killed
mid-fit leaves a readable ledger: that run still says ``running``, and is
read back as ``interrupted`` once the process that wrote it is gone.

The ledger lives in ``.kernelkit/runs.sqlite`` under the working directory
(the notebook's folder in Jupyter), or where ``KERNELKIT_LEDGER`` or
:func:`set_folder` says.

Example:
    >>> from kernelkit import ledger
    >>> book = ledger.Ledger("/tmp/kk-ledger-doc")
    >>> book.runs("nothing-yet")
    []
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .status import FitStatus

#: The database file inside the ledger folder.
FILE_NAME = "runs.sqlite"
#: The folder under the working directory when nothing else is set.
DEFAULT_FOLDER = ".kernelkit"
_SCHEMA_VERSION = 1
#: Points kept per batch curve: enough to draw, small enough to store per run.
CURVE_POINTS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    config TEXT NOT NULL,
    device TEXT NOT NULL DEFAULT '',
    replicas INTEGER NOT NULL DEFAULT 1,
    initial_epoch INTEGER NOT NULL DEFAULT 0,
    versions TEXT NOT NULL,
    timing TEXT NOT NULL DEFAULT '{}',
    curves TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS epochs (
    run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    logs TEXT NOT NULL,
    steps INTEGER,
    PRIMARY KEY (run, epoch)
);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs(model, id);
"""

#: Runs this process is writing now: a 'running' row of this pid not in here was cut off.
_ACTIVE: set[tuple[str, int]] = set()
_ACTIVE_LOCK = threading.Lock()
_FOLDER: list[str] = []  # set_folder's choice, if any


class LedgerError(ValueError):
    """The ledger cannot be opened or read; the message names the file and the fix."""


@dataclass(frozen=True)
class Run:
    """One recorded fit, as read back from the ledger.

    Attributes:
        id: the run's number in this ledger (stable: deleting a run keeps the others').
        model: the registered name.
        fingerprint: a short hash of the layer classes and weight shapes.
        started: wall-clock time (``time.time()``) when the fit began.
        ended: when it ended, or None while running or when it was cut off.
        state: "finished", "stopped_by_user", "stopped_by_callback", "failed",
            "running", or "interrupted" (the process that ran it died).
        reason: the end's one readable line.
        config: ``{"compile": ..., "fit": ..., "seed": ..., "learning_rate": ...}``.
        device: the distribution the fit read, worded as the progress bar words it.
        replicas: devices or workers taking part.
        initial_epoch: the fit's first epoch.
        versions: kernelkit, keras, backend and its version.
        timing: ``wall``, ``steps``, ``first_step``, ``compile`` (the estimated
            train-step compile), ``validation`` and ``steps_per_second``
            (compile left out), as the progress view measures them.
        epochs: one ``{metric: value}`` dict per epoch, in order, with ``"epoch"``.
        curves: downsampled batch curves, ``{metric: [[x, y], ...]}`` with x in epochs.
    """

    id: int
    model: str
    fingerprint: str
    started: float
    ended: float | None
    state: str
    reason: str
    config: Mapping[str, Any]
    device: str
    replicas: int
    initial_epoch: int
    versions: Mapping[str, str]
    timing: Mapping[str, Any]
    epochs: Sequence[Mapping[str, float]] = field(default_factory=tuple)
    curves: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)

    @property
    def learning_rate(self) -> float | None:
        """The compiled learning rate, when it was a plain number."""
        value = self.config.get("learning_rate")
        return float(value) if isinstance(value, (int, float)) else None

    def final(self, metric: str) -> float | None:
        """The last epoch's value of ``metric``, or None."""
        for row in reversed(self.epochs):
            value = row.get(metric)
            if isinstance(value, (int, float)):
                return float(value)
        return None


_OFF = "off"


def set_folder(folder: str | os.PathLike[str] | bool | None) -> None:
    """Keep the ledger in ``folder`` from now on.

    Args:
        folder: a directory (made when the first run is written); None for
            the default again; False to record nothing (as ``KERNELKIT_LEDGER=off``).
    """
    if folder is False:
        _FOLDER[:] = [_OFF]
    elif folder is None or folder is True:
        _FOLDER[:] = []
    else:
        _FOLDER[:] = [os.fspath(folder)]


def folder() -> str:
    """The folder the ledger is in now.

    Returns:
        The folder given to :func:`set_folder`, else ``KERNELKIT_LEDGER``, else the
        default folder under the working directory; ``"off"`` when recording is off.
    """
    if _FOLDER:
        return _FOLDER[0]
    return os.environ.get("KERNELKIT_LEDGER") or os.path.join(os.getcwd(), DEFAULT_FOLDER)


def enabled() -> bool:
    """Whether fits are recorded (not when the folder is set to "off")."""
    return folder() != _OFF


class Ledger:
    """An append-only store of runs in one SQLite file.

    Each method opens its own connection, so a ledger can be used from the
    training thread and the notebook's thread alike, and by several kernels
    at once (SQLite's locking serialises their writes).

    Args:
        directory: the ledger folder; default :func:`folder`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = os.fspath(directory) if directory is not None else folder()
        self.path = os.path.join(self.directory, FILE_NAME)

    # --- connection -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if create:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as err:
                raise LedgerError(
                    f"the run ledger folder {self.directory} cannot be made ({err.strerror}): "
                    "choose another with kernelkit.ledger.set_folder(...)"
                ) from None
        try:
            con = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as err:
            raise LedgerError(
                f"the run ledger {self.path} cannot be opened ({err}): "
                "choose another folder with kernelkit.ledger.set_folder(...)"
            ) from None
        try:
            con.execute("PRAGMA foreign_keys = ON")
            if create:
                # WAL: a reader never blocks the writer, and a writer killed mid-transaction
                # leaves the last committed state behind.
                con.execute("PRAGMA journal_mode = WAL")
                con.executescript(_SCHEMA)
                con.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            with con:  # one transaction: committed whole, or rolled back
                yield con
        except sqlite3.DatabaseError as err:
            raise LedgerError(
                f"the run ledger {self.path} is damaged ({err}): move it aside, or choose "
                "another folder with kernelkit.ledger.set_folder(...)"
            ) from None
        finally:
            con.close()

    # --- writing --------------------------------------------------------------------------

    def start(
        self,
        *,
        model: str,
        fingerprint: str,
        config: Mapping[str, Any],
        versions: Mapping[str, str],
        device: str = "",
        replicas: int = 1,
        initial_epoch: int = 0,
        started: float | None = None,
    ) -> int:
        """Record a fit that begins; returns its run id."""
        with self._connect(create=True) as con:
            cursor = con.execute(
                "INSERT INTO runs (model, fingerprint, started, state, host, pid, config, "
                "device, replicas, initial_epoch, versions) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    model,
                    fingerprint,
                    time.time() if started is None else started,
                    "running",
                    socket.gethostname(),
                    os.getpid(),
                    _dumps(config),
                    device,
                    int(replicas),
                    int(initial_epoch),
                    _dumps(versions),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
        with _ACTIVE_LOCK:
            _ACTIVE.add((self.path, run_id))
        return run_id

    def add_epoch(
        self, run_id: int, epoch: int, logs: Mapping[str, float], steps: int | None = None
    ) -> None:
        """Record one epoch's logs (a repeated epoch replaces the earlier row)."""
        with self._connect(create=False) as con:
            con.execute(
                "INSERT OR REPLACE INTO epochs (run, epoch, logs, steps) VALUES (?,?,?,?)",
                (run_id, int(epoch), _dumps(_finite(logs)), steps),
            )

    def finish(
        self,
        run_id: int,
        *,
        state: str,
        reason: str = "",
        timing: Mapping[str, Any] | None = None,
        curves: Mapping[str, Sequence[Sequence[float]]] | None = None,
    ) -> None:
        """Record how a fit ended."""
        try:
            with self._connect(create=False) as con:
                con.execute(
                    "UPDATE runs SET ended=?, state=?, reason=?, timing=?, curves=? WHERE id=?",
                    (
                        time.time(),
                        state,
                        reason,
                        _dumps(timing or {}),
                        _dumps(curves or {}),
                        run_id,
                    ),
                )
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard((self.path, run_id))

    def delete(self, ids: Iterable[int]) -> int:
        """Delete runs by id; returns how many went."""
        wanted = [int(i) for i in ids]
        if not wanted or not os.path.exists(self.path):
            return 0
        with self._connect(create=False) as con:
            marks = ",".join("?" * len(wanted))
            cursor = con.execute(f"DELETE FROM runs WHERE id IN ({marks})", wanted)
            return int(cursor.rowcount)

    # --- reading --------------------------------------------------------------------------

    def runs(self, model: str | None = None) -> list[Run]:
        """Every recorded run (of ``model`` when given), oldest first."""
        if not os.path.exists(self.path):
            return []
        with self._connect(create=False) as con:
            con.row_factory = sqlite3.Row
            query = "SELECT * FROM runs"
            params: tuple[Any, ...] = ()
            if model is not None:
                query += " WHERE model = ?"
                params = (model,)
            rows = con.execute(query + " ORDER BY id", params).fetchall()
            epochs: dict[int, list[dict[str, float]]] = {}
            ids = [row["id"] for row in rows]
            if ids:
                marks = ",".join("?" * len(ids))
                for run, epoch, logs in con.execute(
                    f"SELECT run, epoch, logs FROM epochs WHERE run IN ({marks}) "
                    "ORDER BY run, epoch",
                    ids,
                ):
                    epochs.setdefault(run, []).append({"epoch": float(epoch), **json.loads(logs)})
        return [self._run(row, epochs.get(row["id"], [])) for row in rows]

    def _run(self, row: sqlite3.Row, epochs: list[dict[str, float]]) -> Run:
        state = row["state"]
        if state == "running" and not self._alive(row["host"], row["pid"], row["id"]):
            state = "interrupted"
        return Run(
            id=row["id"],
            model=row["model"],
            fingerprint=row["fingerprint"],
            started=row["started"],
            ended=row["ended"],
            state=state,
            reason=row["reason"]
            or ("the kernel stopped during this fit" if state == "interrupted" else ""),
            config=json.loads(row["config"]),
            device=row["device"],
            replicas=row["replicas"],
            initial_epoch=row["initial_epoch"],
            versions=json.loads(row["versions"]),
            timing=json.loads(row["timing"]),
            epochs=tuple(epochs),
            curves=json.loads(row["curves"]),
        )

    def _alive(self, host: str, pid: int, run_id: int) -> bool:
        """Whether the process that is writing a 'running' run still runs it."""
        if pid == os.getpid() and host == socket.gethostname():
            with _ACTIVE_LOCK:
                return (self.path, run_id) in _ACTIVE
        if host != socket.gethostname():
            return True  # another machine's kernel: it says so itself when it ends
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# --- what a fit is ---------------------------------------------------------------------------


def fingerprint(model: Any) -> str:
    """A short hash of the model's layer classes and weight shapes.

    Names are left out: Keras numbers them per session (``dense_3``), so the
    same architecture built twice keeps its fingerprint.
    """
    parts = [
        [type(layer).__name__, [list(w.shape) for w in layer.weights]]
        for layer in getattr(model, "layers", [])
    ]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:12]


def describe_fit(
    model: Any, fit_kwargs: Mapping[str, Any], seed: int | None = None
) -> dict[str, Any]:
    """The configuration a run record keeps: compile config, fit arguments, seed, learning rate."""
    compile_config: Any = {}
    try:
        compile_config = model.get_compile_config() or {}
    except Exception:  # a model compiled in a way Keras cannot serialise: keep the rest
        compile_config = {}
    fit: dict[str, Any] = {}
    for key, value in fit_kwargs.items():
        if key in ("x", "y", "validation_data", "callbacks", "sample_weight", "class_weight"):
            if value is not None:
                fit[key] = _shape_of(value) if key != "callbacks" else _callback_names(value)
            continue
        fit[key] = value
    config: dict[str, Any] = {"compile": compile_config, "fit": fit, "seed": seed}
    rate = _learning_rate(model)
    if rate is not None:
        config["learning_rate"] = rate
    return json.loads(_dumps(config))


def versions() -> dict[str, str]:
    """kernelkit, Keras and backend versions."""
    import keras

    from ._version import __version__

    backend = keras.backend.backend()
    found = {"kernelkit": __version__, "keras": keras.__version__, "backend": backend}
    try:
        module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend])
        found[backend] = str(getattr(module, "__version__", ""))
    except (KeyError, ImportError):
        pass
    return found


def _learning_rate(model: Any) -> float | None:
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    rate = getattr(optimizer, "_learning_rate", None)
    if rate is None or callable(rate):  # a schedule: its config is in the compile config
        return None
    try:
        import keras

        return float(keras.ops.convert_to_numpy(rate))
    except (TypeError, ValueError):
        return None


def _shape_of(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, Mapping):
        return {str(k): _shape_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shape_of(v) for v in value]
    return type(value).__name__


def _callback_names(value: Any) -> list[str]:
    items = getattr(value, "callbacks", value)
    if not isinstance(items, (list, tuple)):
        items = [items]
    return [type(c).__name__ for c in items]


# --- the recorder: events in, rows out -------------------------------------------------------


class RunRecorder:
    """A LiveProgress sink that writes one fit into the ledger.

    Called with every event of the fit; it touches the database only at the
    fit's begin, each epoch end and the end. Batch curves are kept in memory,
    thinned to :data:`CURVE_POINTS`, and stored with the end.

    Args:
        ledger: where to write.
        model: the registered name.
        fingerprint: see :func:`fingerprint`.
        config: see :func:`describe_fit`.
        versions: see :func:`versions`.
        status: returns the fit's ``FitStatus`` as its ``LiveProgress`` folds
            it (``lambda: live.status``), so the events are folded once per
            fit; None folds them here (a recorder used on its own).
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        model: str,
        fingerprint: str,
        config: Mapping[str, Any],
        versions: Mapping[str, str],
        status: Callable[[], FitStatus] | None = None,
    ) -> None:
        self.ledger = ledger
        self.model = model
        self.fingerprint = fingerprint
        self.config = dict(config)
        self.versions = dict(versions)
        self.run_id: int | None = None
        self._steps: int | None = None
        self._curves: dict[str, list[list[float]]] = {}
        self._keep_every = 1
        self._seen = 0
        # The times come from the one status reducer the progress view reads too, so the
        # ledger's compile and steps/s are the figures the user saw.
        self._own: FitStatus | None = FitStatus() if status is None else None
        self._read_status = status
        self._total_steps = 0

    @property
    def _status(self) -> FitStatus:
        if self._read_status is not None:
            return self._read_status()
        assert self._own is not None
        return self._own

    def __call__(self, event: ev.Event) -> None:
        """Records one event of the fit.

        ``TrainBegin`` starts the run's record, ``Step`` adds a point to the
        in-memory curves, ``EpochEnd`` writes the epoch and ``TrainEnd``
        finishes the record with its timing and curves. Events before a
        ``TrainBegin`` are ignored.

        Args:
            event: the fit's next event, as the callback sends it.
        """
        if self._own is not None:
            self._own.apply(event)
        if isinstance(event, ev.TrainBegin):
            self._steps = event.steps
            self.run_id = self.ledger.start(
                model=self.model,
                fingerprint=self.fingerprint,
                config=self.config,
                versions=self.versions,
                device=event.strategy,
                replicas=event.replicas,
                initial_epoch=event.initial_epoch,
            )
        elif self.run_id is None:
            return
        elif isinstance(event, ev.Step):
            self._add_point(event)
        elif isinstance(event, ev.EpochEnd):
            self._total_steps += event.steps or 0
            self.ledger.add_epoch(self.run_id, event.epoch, event.logs, event.steps)
        elif isinstance(event, ev.TrainEnd):
            self.ledger.finish(
                self.run_id,
                state=event.state,
                reason=event.reason,
                timing=self._timing(),
                curves=self._curves,
            )

    def _timing(self) -> dict[str, Any]:
        status = self._status
        begin, now = status.t_begin, status.t_now
        timing: dict[str, Any] = {
            "wall": max(now - begin, 0.0) if begin is not None and now is not None else 0.0,
            "steps": self._total_steps,
        }
        measured = {
            "first_step": status.first_step_time,
            "compile": status.compile_time,
            "validation": sum(status.validation_times) if status.validation_times else None,
        }
        timing.update({k: v for k, v in measured.items() if v is not None})
        step_time = status.step_time
        if step_time:
            timing["steps_per_second"] = 1.0 / step_time
        return timing

    def _add_point(self, event: ev.Step) -> None:
        self._seen += 1
        if self._seen % self._keep_every:
            return
        x = event.epoch + (event.step / self._steps if self._steps else 0.0)
        for key, value in event.logs.items():
            if math.isfinite(value):
                self._curves.setdefault(key, []).append([round(x, 4), value])
        if max((len(v) for v in self._curves.values()), default=0) > CURVE_POINTS:
            # Full: keep every other point and take half as many from now on.
            self._curves = {k: v[::2] for k, v in self._curves.items()}
            self._keep_every *= 2


def recorder_for(
    model: Any,
    name: str,
    fit_kwargs: Mapping[str, Any],
    *,
    seed: int | None = None,
    status: Callable[[], FitStatus] | None = None,
) -> RunRecorder:
    """A recorder for one fit of ``model`` registered as ``name``, into the current ledger.

    ``status`` reads the fit's ``FitStatus`` (see :class:`RunRecorder`).
    """
    return RunRecorder(
        Ledger(),
        model=name,
        fingerprint=fingerprint(model),
        config=describe_fit(model, fit_kwargs, seed),
        versions=versions(),
        status=status,
    )


# --- choosing runs ---------------------------------------------------------------------------

Selector = int | str | Callable[[Run], bool] | Mapping[str, Any]


def select(runs: Sequence[Run], which: Selector | Sequence[Selector] | None) -> list[Run]:
    """The runs ``which`` names, in the order named.

    Args:
        runs: what to choose from.
        which: None (all), a run id, a negative index (-1: the latest), a
            state ("finished"), a filter on the recorded configuration (a
            mapping such as ``{"learning_rate": 1e-3}``, matched against
            ``Run.config`` and its ``compile``/``fit`` parts), a predicate on
            ``Run``, or a list of these.

    Raises:
        ValueError: a run id that is not there, or a selector of another type.
    """
    if which is None:
        return list(runs)
    if isinstance(which, (list, tuple)):
        chosen: list[Run] = []
        for item in which:
            for run in select(runs, item):
                if run not in chosen:
                    chosen.append(run)
        return chosen
    if isinstance(which, bool):
        raise ValueError(
            f"cannot choose runs by {which!r}: use run ids, a filter dict or a function"
        )
    if isinstance(which, int):
        if which < 0:
            if -which > len(runs):
                raise ValueError(f"there are only {len(runs)} runs, so {which} names none")
            return [runs[which]]
        found = [r for r in runs if r.id == which]
        if not found:
            ids = ", ".join(str(r.id) for r in runs) or "none"
            raise ValueError(f"no run #{which} here (runs: {ids})")
        return found
    if isinstance(which, str):
        return [r for r in runs if r.state == which]
    if isinstance(which, Mapping):
        return [r for r in runs if _matches(r, which)]
    if callable(which):
        return [r for r in runs if which(r)]
    raise ValueError(
        f"cannot choose runs by {type(which).__name__}: use run ids, -1 for the latest, "
        "a state, a filter dict or a function"
    )


def _matches(run: Run, wanted: Mapping[str, Any]) -> bool:
    places = [run.config, run.config.get("fit", {}), run.config.get("compile", {})]
    for key, value in wanted.items():
        for place in places:
            if isinstance(place, Mapping) and key in place:
                have = place[key]
                if isinstance(value, float) and isinstance(have, (int, float)):
                    if not math.isclose(have, value, rel_tol=1e-6):
                        return False
                elif have != value:
                    return False
                break
        else:
            return False
    return True


# --- exporting -------------------------------------------------------------------------------


def export_tensorboard(runs: Iterable[Run], log_dir: str | os.PathLike[str]) -> list[str]:
    """Write each run's epoch scalars as TensorBoard event files; returns the run folders.

    The layout is Keras's TensorBoard callback's: ``<log_dir>/<model>-<id>/train``
    and ``/validation``, tags ``epoch_<metric>``, the step being the epoch.

    Raises:
        ValueError: the ``tensorboard`` package is missing (one line with the pip command).
    """
    from .checkpoints import _EventFile, check_tensorboard

    check_tensorboard()
    written = []
    for run in runs:
        root = os.path.join(os.fspath(log_dir), f"{run.model}-{run.id}")
        files: dict[str, Any] = {}
        for row in run.epochs:
            step = int(row["epoch"])
            for part, values in (
                (
                    "train",
                    {k: v for k, v in row.items() if k != "epoch" and not k.startswith("val_")},
                ),
                ("validation", {k[4:]: v for k, v in row.items() if k.startswith("val_")}),
            ):
                if not values:
                    continue
                if part not in files:
                    files[part] = _EventFile(os.path.join(root, part))
                files[part].add_scalars(step, {f"epoch_{k}": float(v) for k, v in values.items()})
        for writer in files.values():
            writer.close()
        written.append(root)
    return written


# --- helpers ---------------------------------------------------------------------------------


def _finite(logs: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def _dumps(value: Any) -> str:
    return json.dumps(_clean(value), default=_plain, sort_keys=True)


def _clean(value: Any) -> Any:
    """The value with non-finite floats as text, which JSON cannot hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """JSON for what a config may hold: numpy numbers and arrays as numbers, the rest as text."""
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    return repr(value)
