"""Data-parallel training in several worker processes, driven from the notebook.

``fit_on_workers`` trains the notebook's model in N fresh processes with
Keras 3's JAX distribution (``keras.distribution``): the model travels as a
``.keras`` file, each worker runs with ``KERAS_BACKEND=jax``, joins the job
with ``keras.distribution.initialize``, sets
``DataParallel(devices=jax.devices(), auto_shard_dataset=False)`` and fits on
its own equal shard of the data. Rank 0 streams its progress events back over
a local TCP connection; when training ends (or is stopped), rank 0's weights
are loaded into the notebook's model and its ``History`` is returned.

Why this route: TensorFlow's ``MultiWorkerMirroredStrategy`` forms its
cluster but Keras 3's ``fit`` then fails
(https://github.com/keras-team/keras/issues/20585), so kernelkit drives JAX's
engine instead, whatever backend the notebook itself uses.

Why workers are processes: ``jax.distributed.initialize`` must run before any
JAX computation, which a notebook kernel cannot promise. Every worker runs in
its own process group and is killed with ``SIGKILL`` when the run fails, is
stopped or times out (JAX catches ``SIGTERM`` and carries on).

Several hosts: pass ``hosts`` (one address per worker, rank 0 on this
machine) and a ``job_dir`` that every host sees at the same path (a shared
file system). kernelkit starts the ranks on this machine; the others are
started by ``launch(rank, host, command)`` (e.g. through ``ssh``) or, without
``launch``, by you running the printed commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import keras
import numpy as np

from . import events as ev
from ._worker_main import EXIT_ORPHANED, weights_digest
from .data import num_samples, split_samples

#: fit arguments passed through to every worker unchanged.
_PASSED_THROUGH = (
    "epochs",
    "shuffle",
    "class_weight",
    "initial_epoch",
    "steps_per_epoch",
    "validation_steps",
    "validation_freq",
)

_DEFAULT_BATCH_SIZE = 32  # Keras's own default for fit

# A backstop for start-up (imports, joining). JAX itself gives up joining
# after 300 s and the rank then fails with its own error.
_JOIN_TIMEOUT = 600.0
# How long a worker may take to exit once every rank has written its results.
_EXIT_GRACE = 10.0


class WorkerError(RuntimeError):
    """A worker failed; the message holds its traceback in one block.

    Attributes:
        rank: the failing worker's rank, or None when no single rank failed.
        details: the traceback (or the stack dumps of a hung job).

    """

    def __init__(self, message: str, rank: int | None = None, details: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.details = details

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of the notebook-side stack (kernelkit's
        # own waiting loop), so the worker's traceback reads as one block.
        return f"{type(self).__name__}: {self}".splitlines()


class WorkerTimeout(WorkerError):
    """The workers made no progress within the time bound and were killed."""


@dataclass
class _Rank:
    rank: int
    host: str
    process: Any = None  # a Popen (or what ``launch`` returned), or None
    log: Path | None = None
    returncode: int | None = None


@dataclass
class _Run:
    """Everything one ``fit_on_workers`` call owns, so cleanup can find it."""

    job_dir: Path
    owns_dir: bool
    ranks: list[_Rank] = field(default_factory=list)
    listener: socket.socket | None = None
    conn: socket.socket | None = None
    events_seen: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- input


def _as_arrays(value: Any, what: str) -> Any:
    """Converts a nested structure of array-likes to NumPy, refusing datasets."""
    if value is None:
        return None
    type_name = f"{type(value).__module__}.{type(value).__name__}"
    if (
        "Dataset" in type_name
        or "DataLoader" in type_name
        or isinstance(value, keras.utils.PyDataset)
        or hasattr(value, "__next__")
    ):
        raise TypeError(
            f"fit on workers takes arrays for {what}, not a {type(value).__name__}; "
            "pass NumPy arrays (or a dict/list of them) so kernelkit can shard them"
        )
    return keras.tree.map_structure(np.asarray, value)


def shard_indices(samples: int, batch_size: int, workers: int, rank: int) -> np.ndarray:
    """Rows that ``rank`` trains on, so N workers replay a single-process fit.

    Global batch ``b`` holds rows ``[b*B, (b+1)*B)`` (``B = batch_size``);
    each rank takes its own contiguous ``B/N`` of every global batch, so the
    union of the ranks' local batches at step ``b`` is exactly global batch
    ``b`` and the averaged gradient equals a single-process step. A last
    partial batch is split the same way (``samples`` must be a multiple of
    ``workers``: ``fit_on_workers`` drops the remainder first).

    Args:
        samples: rows to use, a multiple of ``workers``.
        batch_size: the global batch size, a multiple of ``workers``.
        workers: number of ranks.
        rank: this rank, ``0 <= rank < workers``.

    Returns:
        The row indices, in training order.

    """
    if samples % workers or batch_size % workers:
        raise ValueError("samples and batch_size must both be multiples of workers")
    index = np.arange(samples)
    full = (samples // batch_size) * batch_size
    head = index[:full].reshape(-1, workers, batch_size // workers)[:, rank].ravel()
    tail = index[full:].reshape(workers, -1)[rank]
    return np.concatenate([head, tail])


def _take(structure: Any, rows: np.ndarray) -> Any:
    return None if structure is None else keras.tree.map_structure(lambda a: a[rows], structure)


def _split_validation(
    x: Any, y: Any, sample_weight: Any, validation_split: float, samples: int
) -> tuple[Any, Any, Any, Any]:
    """Keras's own split: the last ``validation_split`` of the rows, before shuffling."""
    split_at = split_samples(samples, validation_split)[0]
    if split_at in (0, samples):
        raise ValueError(
            f"validation_split={validation_split} leaves no training or no validation samples "
            f"out of {samples}"
        )
    head, tail = np.arange(split_at), np.arange(split_at, samples)
    validation = (_take(x, tail), _take(y, tail), _take(sample_weight, tail))
    return _take(x, head), _take(y, head), _take(sample_weight, head), validation


def _prepare_shards(
    workers: int,
    batch_size: int,
    x: Any,
    y: Any,
    sample_weight: Any,
    validation: tuple[Any, Any, Any] | None,
    validation_batch_size: int,
) -> tuple[list[dict[str, Any]], int, int]:
    """Splits the data into one equal shard per rank.

    Returns:
        (the shards, training samples dropped, validation samples dropped).

    """
    samples = num_samples(x, y, sample_weight, strict=True)
    used = samples - samples % workers
    if used < workers:
        raise ValueError(
            f"{samples} training samples cannot be shared by {workers} workers; "
            f"give at least {workers} samples"
        )
    shards: list[dict[str, Any]] = []
    rows = [shard_indices(used, batch_size, workers, r) for r in range(workers)]
    for r in range(workers):
        shards.append(
            {
                "x": _take(x, rows[r]),
                "y": _take(y, rows[r]),
                "sample_weight": _take(sample_weight, rows[r]),
            }
        )
    val_dropped = 0
    if validation is not None:
        vx, vy, vw = validation
        val_samples = num_samples(vx, vy, vw, strict=True)
        val_used = val_samples - val_samples % workers
        if val_used < workers:
            raise ValueError(
                f"{val_samples} validation samples cannot be shared by {workers} workers; "
                f"give at least {workers} samples"
            )
        val_dropped = val_samples - val_used
        for r in range(workers):
            vrows = shard_indices(val_used, validation_batch_size, workers, r)
            shard_val = (_take(vx, vrows), _take(vy, vrows))
            if vw is not None:
                shard_val = (*shard_val, _take(vw, vrows))
            shards[r]["validation_data"] = shard_val
    return shards, samples - used, val_dropped


def _check_batch(name: str, value: Any, workers: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is not a batch size; use a positive integer")
    if value % workers:
        lower = max(workers, value - value % workers)
        raise ValueError(
            f"{name}={value} does not split evenly over {workers} workers; "
            f"use a multiple of {workers} (e.g. {lower} or {lower + workers})"
        )
    return int(value)


# --------------------------------------------------------------------------- processes


def free_port(host: str = "") -> int:
    """A TCP port the OS reports free on ``host`` (all interfaces by default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_local(host: str) -> bool:
    """True when ``host`` names this machine (a socket can bind to it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
        return True
    except OSError:
        return False


def _worker_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # A notebook that simulates several host devices (XLA_FLAGS=
    # --xla_force_host_platform_device_count=8, as tutorial 06 does) must not hand them
    # to every worker: each worker is one host CPU device here, so N workers make a
    # mesh of N, and the shards the supervisor cut split over it. Real accelerators
    # are not host-platform devices and are unaffected.
    flags = [
        flag
        for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    # The notebook's import path, so custom layers defined in importable
    # modules (and kernelkit itself) load in the workers too.
    paths = [os.getcwd() if p == "" else p for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _command(job_dir: Path, rank: int) -> list[str]:
    return [sys.executable, "-m", "kernelkit._worker_main", str(job_dir), str(rank)]


def _alive(rank: _Rank) -> bool:
    process = rank.process
    return process is not None and hasattr(process, "poll") and process.poll() is None


def _kill(rank: _Rank) -> None:
    """SIGKILL the rank's whole process group (SIGTERM is caught by JAX)."""
    process = rank.process
    if process is None or not hasattr(process, "poll"):
        return
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # Not a group leader (e.g. what ``launch`` started): the process alone.
            with contextlib.suppress(OSError):
                process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _tail(path: Path | None, limit: int = 6000) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return text if len(text) <= limit else "…" + text[-limit:]


def _dump_stacks(run: _Run, wait: float = 2.0) -> str:
    """Asks live local workers for their Python stacks (SIGUSR1 -> faulthandler)."""
    sizes: dict[int, int] = {}
    for rank in run.ranks:
        if _alive(rank) and rank.log is not None:
            sizes[rank.rank] = rank.log.stat().st_size if rank.log.exists() else 0
            try:
                os.kill(rank.process.pid, signal.SIGUSR1)
            except OSError:
                sizes.pop(rank.rank)
    if not sizes:
        return ""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        grown = all(
            run.ranks[r].log.stat().st_size > size  # type: ignore[union-attr]
            for r, size in sizes.items()
        )
        if grown:
            time.sleep(0.2)  # let the rest of the dump land
            break
        time.sleep(0.05)
    parts = []
    for r, size in sizes.items():
        log = run.ranks[r].log
        assert log is not None
        with open(log, "rb") as file:
            file.seek(size)
            text = file.read().decode(errors="replace").strip()
        if text:
            parts.append(f"--- worker {r} stack ---\n{text}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- the API


def check_engine() -> None:
    """Check that the workers' engine, Keras on JAX, can run from this Python.

    ``%%kmodel NAME --workers N`` calls it before the cell runs, so a missing
    engine is one line with the pip command, not an error after the cell
    built its model. The workers are started with this kernel's own Python,
    so JAX must be importable here, whatever backend the notebook uses.

    Raises:
        ImportError: JAX is not installed (the message holds the pip command).

    Example:
        >>> kernelkit.workers.check_engine()  # None: fit_on_workers can start

    """
    from ._env import installed

    if not installed("jax"):
        raise ImportError(
            "--workers trains in worker processes that run Keras on JAX, which is not "
            'installed in this kernel\'s Python: pip install "jax[cpu]" (or the jax build '
            "for your GPUs or TPU)"
        )


def fit_on_workers(
    model: keras.Model,
    x: Any = None,
    y: Any = None,
    *,
    workers: int,
    batch_size: int | None = None,
    sample_weight: Any = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    validation_batch_size: int | None = None,
    on_event: Callable[[ev.Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float | None = None,
    stall_timeout: float | None = 300.0,
    hosts: Sequence[str] | None = None,
    launch: Callable[[int, str, list[str]], Any] | None = None,
    job_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    model_name: str | None = None,
    **fit_kwargs: Any,
) -> keras.callbacks.History:
    """Trains ``model`` data-parallel in ``workers`` processes (Keras 3 + JAX).

    Each worker fits on its own equal shard (``batch_size / workers`` rows
    of every global batch), so the run replays a single-process fit with
    global batch ``batch_size``. Rank 0's progress events reach ``on_event``
    as they happen; its final weights (and optimizer state) are loaded into
    ``model`` and its ``History`` is returned. When anything fails, every
    worker is killed and ``model`` is left unchanged.

    Args:
        model: a built, compiled Keras model (any backend). Custom layers
            must be importable by the workers (defined in a module on the
            notebook's ``sys.path``, registered with
            ``keras.saving.register_keras_serializable``).
        x: training inputs: arrays, or a dict/list of arrays.
        y: training targets, as ``x``.
        workers: number of worker processes (ranks), at least 1.
        batch_size: the global batch size (default 32), a multiple of
            ``workers``. Each worker's batch is ``batch_size // workers``.
        sample_weight: per-sample weights, sharded with ``x``.
        validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, weights)``.
        validation_split: fraction of the data (taken from the end, before
            shuffling, as Keras does) to validate on.
        validation_batch_size: global validation batch (default ``batch_size``).
        on_event: called with every ``kernelkit.events`` event of rank 0, in
            the notebook process, as they arrive (e.g. ``ProgressView.handle``).
        should_stop: polled about ten times a second; once it returns True
            every worker stops after the same step and the run ends normally.
            A kernel interrupt (Ctrl-C) does the same; a second one kills the
            workers.
        timeout: bound on the whole run in seconds (None: no bound).
        stall_timeout: kill the workers when, once they have all joined the
            job, rank 0 reports no progress for this many seconds (a hung
            collective never raises). Steps and validation batches count as
            progress; the first step includes compilation. None: no bound.
        hosts: one address per worker for a run over several machines; the
            first must be this machine (it hosts the coordinator). Default:
            every worker on this machine, over 127.0.0.1.
        launch: ``launch(rank, host, command)`` starts a rank on another
            host (e.g. ``subprocess.Popen(["ssh", host, shlex.join(command)])``);
            what it returns is killed at the end if it has ``poll``/``pid``.
            Without it the commands are printed for you to run. Every host
            needs the same Python environment at the same path, with kernelkit
            and ``jax`` for its devices.
        job_dir: the folder for the model, the shards and the results
            (default: a temporary folder, removed afterwards). Must be on a
            shared file system when ``hosts`` name other machines.
        env: extra environment variables for the workers.
        model_name: the name shown in progress events (default ``model.name``).
        **fit_kwargs: ``epochs``, ``shuffle``, ``class_weight``,
            ``initial_epoch``, ``steps_per_epoch``, ``validation_steps``,
            ``validation_freq`` (as in ``Model.fit``). ``verbose`` is
            accepted and ignored (progress comes through ``on_event``).
            ``callbacks`` may hold only ``kernelkit.LiveProgress``
            callbacks: they show rank 0's events as for a local fit, and
            their Stop reaches the workers.

    Returns:
        The ``keras.callbacks.History`` of rank 0. ``history.params["workers"]``
        tells how the run was split: workers, devices, global and per-worker
        batch, samples dropped, and each rank's weights digest and step count.

    Raises:
        ValueError: bad input (nothing is started and nothing changes).
        ImportError: JAX is not installed.
        TypeError: a dataset or generator instead of arrays, or an unknown
            fit argument.
        WorkerError: a worker failed; the message holds its traceback.
        WorkerTimeout: the run passed ``timeout`` or ``stall_timeout``.

    Example:
        >>> history = fit_on_workers(model, x, y, workers=2, batch_size=64,
        ...                          epochs=3)  # doctest: +SKIP
        >>> history.params["workers"]["devices"]  # doctest: +SKIP
        2

    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(
            f"workers={workers!r} is not allowed; use a whole number of processes >= 1"
        )
    workers = int(workers)
    fit_kwargs.pop("verbose", None)
    lives = _live_progress_callbacks(fit_kwargs.pop("callbacks", None))
    unknown = sorted(set(fit_kwargs) - set(_PASSED_THROUGH))
    if unknown:
        raise TypeError(
            f"fit on workers got unsupported argument(s) {', '.join(unknown)}; "
            f"supported: {', '.join(_PASSED_THROUGH)}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"fit on workers needs a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; give it an Input or call it on a batch first"
        )
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError(f"model {model.name!r} is not compiled; call model.compile(...) first")
    if x is None:
        raise ValueError("fit on workers needs training data x")
    check_engine()
    batch_size = _check_batch(
        "batch_size", _DEFAULT_BATCH_SIZE if batch_size is None else batch_size, workers
    )
    validation_batch_size = _check_batch(
        "validation_batch_size",
        batch_size if validation_batch_size is None else validation_batch_size,
        workers,
    )
    for name, value in (("timeout", timeout), ("stall_timeout", stall_timeout)):
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ValueError(f"{name}={value!r} is not allowed; use seconds > 0 or None")
    if hosts is not None:
        hosts = [str(h) for h in hosts]
        if len(hosts) != workers:
            raise ValueError(
                f"hosts names {len(hosts)} machines for {workers} workers; give one per worker"
            )
        if not _is_local(hosts[0]):
            raise ValueError(
                f"hosts[0]={hosts[0]!r} must be this machine: rank 0 hosts the coordinator "
                "and sends progress to the notebook"
            )

    x, y = _as_arrays(x, "x"), _as_arrays(y, "y")
    sample_weight = _as_arrays(sample_weight, "sample_weight")
    validation = None
    if validation_data is not None:
        parts = _as_arrays(tuple(validation_data), "validation_data")
        if len(parts) not in (2, 3):
            raise ValueError("validation_data must be (x_val, y_val) or (x_val, y_val, weights)")
        validation = (parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    elif validation_split:
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split={validation_split} must be between 0 and 1")
        samples = num_samples(x, y, sample_weight, strict=True)
        x, y, sample_weight, validation = _split_validation(
            x, y, sample_weight, validation_split, samples
        )
    shards, dropped, val_dropped = _prepare_shards(
        workers, batch_size, x, y, sample_weight, validation, validation_batch_size
    )
    if dropped or val_dropped:
        warnings.warn(
            f"kernelkit: {workers} workers need equal shards (uneven ones hang the job), so the "
            f"last {dropped} training and {val_dropped} validation sample(s) were left out",
            stacklevel=2,
        )

    if lives:
        on_event, should_stop = _with_live_progress(lives, model, on_event, should_stop)

    owns_dir = job_dir is None
    path = Path(tempfile.mkdtemp(prefix="kernelkit-workers-")) if owns_dir else Path(job_dir)
    path.mkdir(parents=True, exist_ok=True)
    run = _Run(job_dir=path.resolve(), owns_dir=owns_dir)
    try:
        return _run(
            run,
            model,
            shards,
            workers=workers,
            batch_size=batch_size,
            validation_batch_size=validation_batch_size,
            fit_kwargs=fit_kwargs,
            on_event=on_event,
            should_stop=should_stop,
            timeout=timeout,
            stall_timeout=stall_timeout,
            hosts=hosts,
            launch=launch,
            env=env,
            model_name=model_name
            or next((live.model_name for live in lives if live.model_name), None)
            or model.name,
            dropped=dropped,
        )
    finally:
        _cleanup(run)


def _live_progress_callbacks(callbacks: Any) -> list[Any]:
    """The ``LiveProgress`` callbacks in ``callbacks``; any other callback is refused.

    Other callbacks would have to run inside the workers, in step on every
    rank (a callback that stops or saves on one rank only hangs the job), so
    they are not supported.
    """
    if not callbacks:
        return []
    from .callback import LiveProgress

    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    others = [type(cb).__name__ for cb in callbacks if not isinstance(cb, LiveProgress)]
    if others:
        raise ValueError(
            f"{', '.join(others)} cannot run in workers (only kernelkit.LiveProgress can); "
            "fit on workers without it"
        )
    return callbacks


def _with_live_progress(
    lives: list[Any],
    model: keras.Model,
    on_event: Callable[[ev.Event], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[Callable[[ev.Event], None], Callable[[], bool]]:
    """Feeds rank 0's events to notebook-side ``LiveProgress`` callbacks.

    Each one then shows, records and forwards the events as it does for a
    local fit (its view, the model's run history, its sinks), and its Stop
    (``request_stop``) reaches the workers.
    """

    def relay(event: ev.Event) -> None:
        for live in lives:
            live.replay(event, model)
        if on_event is not None:
            on_event(event)

    def stop() -> bool:
        return any(live.stop_requested for live in lives) or bool(
            should_stop is not None and should_stop()
        )

    return relay, stop


def _cleanup(run: _Run) -> None:
    for rank in run.ranks:
        _kill(rank)
    for sock in (run.conn, run.listener):
        if sock is not None:
            sock.close()
    if run.owns_dir:
        shutil.rmtree(run.job_dir, ignore_errors=True)


def _write_job(
    run: _Run,
    model: keras.Model,
    shards: list[dict[str, Any]],
    config: dict[str, Any],
    fit_kwargs: dict[str, Any],
) -> None:
    job = run.job_dir
    for name in os.listdir(job):  # results of an earlier run in a reused job_dir
        if name.startswith(("error_rank", "done_rank", "result", "history.json")):
            (job / name).unlink()
    model.save(job / "model.keras")
    config["imports"] = _custom_modules(job / "model.keras")
    for rank, shard in enumerate(shards):
        shard = {**shard, "fit_kwargs": fit_kwargs}
        with open(job / f"data_rank{rank}.pkl", "wb") as file:
            pickle.dump(shard, file, protocol=pickle.HIGHEST_PROTOCOL)
    (job / "job.json").write_text(json.dumps(config, indent=1))


def _custom_modules(path: Path) -> list[str]:
    """Modules the workers must import before loading the model.

    Keras imports only its own modules while loading; custom layers, losses
    and metrics are found only if their module was imported (which registers
    them). Anything defined in the notebook itself (``__main__``) cannot be
    imported by another process.
    """
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            module = node.get("module", "")
            if module is None and node.get("registered_name"):
                module = "__main__"  # Keras writes None for objects of __main__
            if isinstance(module, str) and module and "class_name" in node:
                found.setdefault(module, str(node.get("class_name")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    modules = []
    for module, name in found.items():
        if module.split(".")[0] in ("keras", "builtins", "numpy"):
            continue
        if module == "__main__":
            raise ValueError(
                f"{name} is defined in the notebook, where workers cannot import it; move it to a "
                "module file (e.g. my_layers.py next to the notebook) and import it from there"
            )
        modules.append(module)
    return modules


def _run(
    run: _Run,
    model: keras.Model,
    shards: list[dict[str, Any]],
    *,
    workers: int,
    batch_size: int,
    validation_batch_size: int,
    fit_kwargs: dict[str, Any],
    on_event: Callable[[ev.Event], None] | None,
    should_stop: Callable[[], bool] | None,
    timeout: float | None,
    stall_timeout: float | None,
    hosts: list[str] | None,
    launch: Callable[[int, str, list[str]], Any] | None,
    env: Mapping[str, str] | None,
    model_name: str,
    dropped: int,
) -> keras.callbacks.History:
    hosts = hosts or ["127.0.0.1"] * workers
    coordinator_host = hosts[0]
    run.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    run.listener.bind(("127.0.0.1", 0))  # rank 0 always runs here
    run.listener.listen(1)
    run.listener.setblocking(False)
    coordinator = f"{coordinator_host}:{free_port()}"
    per_worker = dict(fit_kwargs)
    per_worker["batch_size"] = batch_size // workers
    per_worker["validation_batch_size"] = validation_batch_size // workers
    config = {
        "num_processes": workers,
        "coordinator": coordinator,
        "events": f"127.0.0.1:{run.listener.getsockname()[1]}",
        "global_batch_size": batch_size,
        "model_name": model_name,
        "timeout": timeout,
    }
    _write_job(run, model, shards, config, per_worker)

    worker_env = _worker_env(env)
    for rank, host in enumerate(hosts):
        entry = _Rank(rank=rank, host=host, log=run.job_dir / f"rank{rank}.log")
        run.ranks.append(entry)
        command = _command(run.job_dir, rank)
        if rank == 0 or _is_local(host):
            with open(entry.log, "wb") as log:
                entry.process = subprocess.Popen(
                    command,
                    env=worker_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: killpg reaches all it started
                    cwd=os.getcwd(),
                )
        else:
            entry.log = None
            remote = ["env", "KERAS_BACKEND=jax", *command]
            if launch is not None:
                entry.process = launch(rank, host, remote)
            else:
                print(f"kernelkit: start worker {rank} on {host}: {shlex.join(remote)}", flush=True)

    _Supervisor(
        run,
        on_event=on_event,
        should_stop=should_stop,
        timeout=timeout,
        stall_timeout=stall_timeout,
    ).wait()
    return _collect(run, model, workers=workers, batch_size=batch_size, dropped=dropped)


class _Supervisor:
    """Watches one run's workers from the kernel until every rank is done.

    One turn of ``wait`` reads what rank 0 sent, forwards a stop request,
    looks for a failed rank, checks whether the run is done and checks the
    time bounds. The state those steps share lives here as attributes.

    Args:
        run: the run whose ranks were started (and whose listener is bound).
        on_event: called with every event of rank 0, in the order sent.
        should_stop: polled every turn; True asks every worker to stop.
        timeout: bound on the whole run in seconds, or None.
        stall_timeout: bound on the time without progress once every rank
            has joined the job, or None.

    """

    def __init__(
        self,
        run: _Run,
        *,
        on_event: Callable[[ev.Event], None] | None,
        should_stop: Callable[[], bool] | None,
        timeout: float | None,
        stall_timeout: float | None,
    ) -> None:
        assert run.listener is not None
        self.run = run
        self.on_event = on_event
        self.should_stop = should_stop
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.start = time.monotonic()
        self.last_progress = self.start  # when rank 0 last sent anything
        self.joined = False  # rank 0 said every rank joined the job
        self.began = False  # a TrainBegin was relayed
        self.ended = False  # a TrainEnd was relayed
        self.stop_wanted = False
        self.stop_sent = False
        self.done_at: float | None = None  # when every rank had written its results
        self.warned = False  # on_event failed once (and said so)
        self.buffer = b""  # the start of a message whose end has not arrived yet
        # Rank 0 connects once; until then the listener is what we wait on.
        self.selector = selectors.DefaultSelector()
        self.selector.register(run.listener, selectors.EVENT_READ)

    @property
    def workers(self) -> int:
        """The number of ranks in the run."""
        return len(self.run.ranks)

    # ------------------------------------------------------------------ the loop

    def wait(self) -> None:
        """Relays events and stops until every rank is done; raises on failure.

        Raises:
            WorkerError: a rank failed (every rank was killed).
            WorkerTimeout: a time bound passed (every rank was killed).
            KeyboardInterrupt: a second interrupt (every rank was killed).

        """
        while True:
            try:
                if self.step():
                    return
            except KeyboardInterrupt:
                if self.stop_wanted:  # a second interrupt: kill now
                    self.kill_on_second_interrupt()
                    raise
                self.stop_on_interrupt()

    def step(self) -> bool:
        """One turn of the loop.

        Returns:
            True when the run is over and its results can be collected.

        """
        self.read_messages()
        self.forward_stop()
        self.check_failed()
        if self.finished():
            return True
        self.check_time()
        return False

    # ------------------------------------------------------------------ rank 0's channel

    def read_messages(self) -> None:
        """Waits up to 0.1 s for rank 0, then relays every whole message it sent."""
        # The 0.1 s is also how often should_stop and the ranks are polled.
        for key, _ in self.selector.select(timeout=0.1):
            if key.fileobj is self.run.listener:
                self.accept()
            else:
                self.receive(key)

    def accept(self) -> None:
        """Takes rank 0's connection in place of the listener."""
        assert self.run.listener is not None
        conn, _ = self.run.listener.accept()
        conn.setblocking(False)
        self.run.conn = conn
        self.selector.unregister(self.run.listener)
        self.selector.register(conn, selectors.EVENT_READ)
        if self.stop_wanted:  # asked for before rank 0 could hear it
            self.stop_sent = _send_stop(self.run)

    def receive(self, key: selectors.SelectorKey) -> None:
        """Reads what rank 0 sent and handles each complete line of it."""
        try:
            chunk = self.run.conn.recv(65536) if self.run.conn is not None else b""
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            # Rank 0 closed its end: nothing more will come, and the checks on
            # the processes and their result files tell how the run ended.
            self.selector.unregister(key.fileobj)
            return
        # Messages are JSON lines, and a read can end in the middle of one.
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.handle(json.loads(line))

    def handle(self, message: dict[str, Any]) -> None:
        """Notes one message of rank 0 as progress and relays the event it holds."""
        self.last_progress = time.monotonic()
        self.joined = self.joined or message.get("phase") == "joined"
        if "event" in message:
            self.relay(ev.from_dict(message["event"]))

    def relay(self, event: ev.Event) -> None:
        """Passes one event of rank 0 on to ``on_event``, noting where the fit is."""
        self.began = self.began or isinstance(event, ev.TrainBegin)
        self.ended = self.ended or isinstance(event, ev.TrainEnd)
        self.run.events_seen.append(type(event).__name__)
        self.emit(event)

    def emit(self, event: ev.Event) -> None:
        """Calls ``on_event``; its failure is reported once and never ends the run."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception as err:
            # A broken view must not kill a fit that is still going well.
            if not self.warned:
                self.warned = True
                print(f"kernelkit: on_event failed and was skipped: {err!r}", file=sys.stderr)

    # ------------------------------------------------------------------ stopping

    def forward_stop(self) -> None:
        """Sends rank 0 a stop once ``should_stop`` or an interrupt asked for one."""
        if not self.stop_wanted and self.should_stop is not None and self.should_stop():
            self.stop_wanted = True
        # Rank 0 passes the stop on to the other ranks, so they all stop after
        # the same step; before it connects, accept() sends it instead.
        if self.stop_wanted and not self.stop_sent and self.run.conn is not None:
            self.stop_sent = _send_stop(self.run)

    def stop_on_interrupt(self) -> None:
        """A first interrupt: stop every worker after the current step."""
        self.stop_wanted = True
        print(
            "kernelkit: stopping every worker after the current step "
            "(interrupt again to kill them)",
            file=sys.stderr,
        )

    def kill_on_second_interrupt(self) -> None:
        """A second interrupt: kill every worker now and end the fit as stopped."""
        self.kill_all()
        if self.began and not self.ended:
            self.emit(ev.TrainEnd(state="stopped_by_user", reason="killed by a second interrupt"))

    def kill_all(self) -> None:
        """SIGKILLs every rank (see ``_kill``)."""
        for entry in self.run.ranks:
            _kill(entry)

    # ------------------------------------------------------------------ how it ends

    def check_failed(self) -> None:
        """Raises for the rank that failed first, once every rank is killed.

        Raises:
            WorkerError: a rank wrote a traceback or exited without results.

        """
        failed = _failed_ranks(self.run)
        if not failed:
            return
        rank = failed[0]
        # Killed first: the other ranks would wait for it in their next
        # collective, forever.
        self.kill_all()
        details = _error_text(self.run, rank)
        self.fail(
            WorkerError(
                f"worker {rank} of {self.workers} failed; every worker was stopped and the "
                f"model is unchanged.\n--- worker {rank} ---\n{details}",
                rank=rank,
                details=details,
            )
        )

    def finished(self) -> bool:
        """True once every rank wrote its results and exited (or had time to)."""
        if not _all_done(self.run):
            return False
        if not any(_alive(entry) for entry in self.run.ranks):
            return True
        # Every result is written; a rank still alive is only shutting
        # down. Give it a moment, then the cleanup kills it.
        self.done_at = self.done_at or time.monotonic()
        return time.monotonic() - self.done_at > _EXIT_GRACE

    def overdue(self) -> str | None:
        """Which time bound the run passed, in words, or None while within them."""
        now = time.monotonic()
        if self.timeout is not None and now - self.start > self.timeout:
            return f"did not finish within timeout={self.timeout:g} s"
        # The stall bound starts once every rank joined: joining (imports, the
        # coordinator) has its own, longer bound.
        if self.joined:
            if self.stall_timeout is not None and now - self.last_progress > self.stall_timeout:
                return (
                    f"made no progress for stall_timeout={self.stall_timeout:g} s "
                    "(a hung collective never raises)"
                )
        elif now - self.start > _JOIN_TIMEOUT:
            return f"did not all join the job within {_JOIN_TIMEOUT:g} s"
        return None

    def check_time(self) -> None:
        """Kills every rank once a time bound has passed, saying where they were.

        Raises:
            WorkerTimeout: the run passed ``timeout``, ``stall_timeout`` or
                the bound on joining.

        """
        reason = self.overdue()
        if reason is None:
            return
        # The stacks first: a hung rank says nothing once it is killed.
        stacks = _dump_stacks(self.run)
        self.kill_all()
        self.fail(
            WorkerTimeout(
                f"the {self.workers} workers {reason}; every worker was killed and the model "
                "is unchanged." + (f"\nWhere they were:\n{stacks}" if stacks else ""),
                details=stacks,
            )
        )

    def fail(self, error: WorkerError) -> NoReturn:
        """Ends the fit as failed for ``on_event`` (if it began), then raises ``error``."""
        # The view would otherwise show a fit still running after the cell failed.
        if self.began and not self.ended:
            self.emit(
                ev.TrainEnd(
                    state="failed", reason=str(error).splitlines()[0], time=time.monotonic()
                )
            )
        raise error


def _send_stop(run: _Run) -> bool:
    assert run.conn is not None
    try:
        run.conn.setblocking(True)
        run.conn.sendall(b"stop\n")
        run.conn.setblocking(False)
        return True
    except OSError:
        return False


def _failed_ranks(run: _Run) -> list[int]:
    """Ranks that ended badly, earliest failure first."""
    failed: list[tuple[float, int]] = []
    for entry in run.ranks:
        error_file = run.job_dir / f"error_rank{entry.rank}.txt"
        process = entry.process
        code = process.poll() if process is not None and hasattr(process, "poll") else None
        entry.returncode = code
        done = (run.job_dir / f"done_rank{entry.rank}.json").exists()
        if error_file.exists():
            failed.append((error_file.stat().st_mtime, entry.rank))
        elif code is not None and not done:
            failed.append((time.time(), entry.rank))
    return [rank for _, rank in sorted(failed)]


def _all_done(run: _Run) -> bool:
    return all((run.job_dir / f"done_rank{entry.rank}.json").exists() for entry in run.ranks)


def _error_text(run: _Run, rank: int) -> str:
    error_file = run.job_dir / f"error_rank{rank}.txt"
    if error_file.exists():
        return error_file.read_text(errors="replace").rstrip()
    entry = run.ranks[rank]
    code = entry.returncode
    if code == EXIT_ORPHANED:
        return "the worker lost its parent process and exited"
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    log = _tail(entry.log).rstrip()
    return f"the worker ended without a traceback ({how}); its last output:\n{log or '(none)'}"


def _collect(
    run: _Run, model: keras.Model, *, workers: int, batch_size: int, dropped: int
) -> keras.callbacks.History:
    """Loads rank 0's results into ``model`` and builds the ``History``."""
    job = run.job_dir
    done = [json.loads((job / f"done_rank{r}.json").read_text()) for r in range(workers)]
    digests = {d["digest"] for d in done}
    if len(digests) != 1:
        raise WorkerError(
            "the workers ended with different weights, so the run is not trustworthy; "
            "the model is unchanged. Digests: " + ", ".join(d["digest"][:12] for d in done)
        )
    record = json.loads((job / "history.json").read_text())
    with np.load(job / "result.npz") as arrays:
        weights = [arrays[f"w{i}"] for i in range(record["weights"])]
        opt_values = [arrays[f"o{i}"] for i in range(record["optimizer_variables"])]
    if weights_digest(weights) != done[0]["digest"]:
        raise WorkerError("rank 0's result file does not match its weights digest; model unchanged")
    current = model.get_weights()
    if [w.shape for w in current] != [w.shape for w in weights]:
        raise WorkerError("the workers' weights do not fit the notebook's model; model unchanged")

    model.set_weights(weights)
    _restore_optimizer(model, opt_values)

    history = keras.callbacks.History()
    history.set_model(model)
    history.history = {k: list(v) for k, v in record["history"].items()}
    history.epoch = list(record["epoch"])
    params = dict(record.get("params") or {})
    params["workers"] = {
        "workers": workers,
        "devices": done[0]["devices"],
        "strategy": done[0]["strategy"],
        "batch_size": batch_size,
        "batch_size_per_worker": batch_size // workers,
        "samples_dropped": dropped,
        "ranks": [
            {"rank": d["rank"], "digest": d["digest"], "iterations": d["iterations"]} for d in done
        ],
    }
    history.set_params(params)
    model.history = history
    return history


def _restore_optimizer(model: keras.Model, values: list[np.ndarray]) -> None:
    """Carries the optimizer state back, so a later fit continues from it.

    Both sides are the same Keras optimizer class, so its variables come in
    the same order; any mismatch keeps the notebook's optimizer as it was.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not values:
        return
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = list(optimizer.variables)
    if len(variables) != len(values) or any(
        tuple(v.shape) != tuple(a.shape) for v, a in zip(variables, values, strict=True)
    ):
        warnings.warn(
            "kernelkit: the optimizer state from the workers does not match this optimizer, "
            "so it was not restored (the weights were)",
            stacklevel=3,
        )
        return
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
