"""One kernelkit training worker: ``python -m kernelkit._worker_main JOB_DIR RANK``.

``kernelkit.workers.fit_on_workers`` writes a job folder (the model as a
``.keras`` file, one data shard per rank, ``job.json``) and starts one of
these per rank. Each worker trains with Keras 3's JAX distribution
(``keras.distribution``): it joins the job with
``keras.distribution.initialize``, sets ``DataParallel`` over every device of
every process, and fits on its own shard. Rank 0 streams progress events to
the notebook over a local TCP connection and writes the final weights and
history back into the job folder.

Rules this file follows, each from a failure measured on Keras 3.15 / JAX 0.10
(shared/notes/multiworker.md):

* ``jax.distributed.initialize`` must run before any JAX computation, so a
  worker is a fresh process and touches JAX only after joining.
* Every rank must make the same collective calls the same number of times,
  or the job hangs without an error. Shards are equal (the notebook side
  ensures it) and the stop decision is taken by one collective per step.
* Saving or reading weights from one rank while the distribution is active
  is a collective only that rank joins (deadlock): the distribution is unset
  first, on every rank.

Files written in the job folder: ``error_rank{R}.txt`` (the traceback, when a
rank fails), ``done_rank{R}.json`` (a digest of the rank's final weights),
and from rank 0 ``result.npz`` (weights and optimizer variables) and
``history.json``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import importlib
import json
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Exit codes the notebook side reads.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ORPHANED = 3


def weights_digest(arrays: list[Any]) -> str:
    """A SHA-256 over the shapes, dtypes and bytes of ``arrays`` (in order).

    The notebook side computes the same digest to check that every rank ended
    with bit-identical weights.
    """
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    """Writes a file whole or not at all (the notebook side may read it any time)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


class _Channel:
    """Rank 0's line-based JSON connection to the notebook.

    Sends events and heartbeats; a reader thread sets ``stop`` when the
    notebook writes ``stop``. Send failures are ignored: if the notebook is
    gone, the watchdogs end this process.
    """

    def __init__(self, address: str | None) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        if not address:
            return
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        self._sock.settimeout(None)
        threading.Thread(target=self._read, name="kernelkit-stop-reader", daemon=True).start()

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if any(line.strip() == b"stop" for line in lines):
                self.stop.set()

    def send(self, **message: Any) -> None:
        if self._sock is None:
            return
        data = (json.dumps(message, allow_nan=True) + "\n").encode()
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                self._sock = None


_T0 = time.monotonic()


def _log(message: str) -> None:
    """One line in this rank's log, with the seconds since the process started."""
    print(
        f"[kernelkit worker {time.monotonic() - _T0:7.2f} s] {message}", file=sys.stderr, flush=True
    )


def _watch_parent(parent: int) -> None:
    """Ends this worker when the process that started it is gone.

    A notebook kernel that dies (or is restarted) must not leave workers
    blocked in a collective forever.
    """

    def _loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=_loop, name="kernelkit-parent-watch", daemon=True).start()


def _install_watchdogs(job: dict[str, Any]) -> None:
    # SIGUSR1 prints every thread's Python stack to stderr (the rank's log):
    # the notebook sends it before killing a hung job, to show where it hung.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if job.get("timeout"):
        # A bound of its own, in case the notebook side is gone: dump the
        # stacks and exit a little after the notebook would have killed us.
        faulthandler.dump_traceback_later(float(job["timeout"]) + 30.0, exit=True)
    if job.get("watch_parent", True):
        _watch_parent(os.getppid())


def _progress_callback(channel: _Channel, job: dict[str, Any], strategy: str, replicas: int) -> Any:
    """The callback that turns rank 0's fit into events for the notebook.

    It is kernelkit's own ``LiveProgress`` with no display, so the notebook
    sees exactly the events a local fit produces.
    """
    from kernelkit import events
    from kernelkit.callback import LiveProgress

    def sink(event: Any) -> None:
        channel.send(event=events.to_dict(event))

    callback = LiveProgress(
        display="none", sink=sink, model_name=job.get("model_name") or None, refresh=0.25
    )
    callback.strategy_text = strategy
    callback.replicas = replicas
    callback.batch_size = int(job["global_batch_size"])
    return callback


def _stop_callback(channel: _Channel, on_user_stop: Callable[[], None]) -> Any:
    """Makes every rank stop at the same step when rank 0 wants to stop.

    Only rank 0 hears the notebook's Stop, and only rank 0 runs the progress
    callback (which stops on a NaN loss); a rank that leaves ``fit`` alone
    leaves the others waiting in a collective forever. So after each step and
    each epoch all ranks take rank 0's decision by one collective
    (``broadcast_one_to_all``): every rank gets the same answer at the same
    point. This callback must come after every callback that may set
    ``stop_training`` on rank 0. Rank 0 also sends a heartbeat at most once
    a second, which tells the notebook the job is not hung.
    """
    import keras
    import numpy as np
    from jax.experimental import multihost_utils

    class _StopTogether(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._next_beat = 0.0
            self._user_stop_seen = False

        def _agree(self) -> None:
            if channel.stop.is_set() and not self._user_stop_seen:
                self._user_stop_seen = True
                on_user_stop()
            # Only rank 0's value counts (it is the source of the broadcast).
            wanted = channel.stop.is_set() or bool(self.model.stop_training)
            agreed = multihost_utils.broadcast_one_to_all(np.int32(wanted))
            self.model.stop_training = bool(int(agreed))

        def _beat(self) -> None:
            now = time.monotonic()
            if now >= self._next_beat:
                self._next_beat = now + 1.0
                channel.send(alive=now)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._agree()
            self._beat()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._agree()
            self._beat()

        def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
            self._beat()

    return _StopTogether()


@contextlib.contextmanager
def _tensorflow_import_skipped() -> Iterator[None]:
    """Keeps ``initialize`` from importing TensorFlow only to seed it.

    ``keras.distribution.initialize`` agrees on a seed across processes and
    sets it with ``keras.utils.set_random_seed``, which imports TensorFlow
    when it is installed, just to call ``tf.random.set_seed`` (keras
    ``src/utils/rng_utils.py``). A JAX worker never uses that seed; the
    import costs seconds and memory in every worker (measured here: 4.7 s
    and about 450 MB more resident memory). Keras's lazy module
    is told "not available" for this call only, so a later real use of
    TensorFlow (e.g. a TextVectorization layer) still imports it.
    """
    try:
        from keras.src.utils import module_utils

        lazy = module_utils.tensorflow
        skip = "tensorflow" not in sys.modules and getattr(lazy, "_available", 1) is None
    except (ImportError, AttributeError):  # another Keras layout: just import it
        skip = False
    if not skip:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


def run(job_dir: Path, rank: int) -> None:
    """Joins the job, trains on this rank's shard and writes the results."""
    job = json.loads((job_dir / "job.json").read_text())
    _install_watchdogs(job)
    backend = os.environ.get("KERAS_BACKEND")
    if backend != "jax":
        raise RuntimeError(f"kernelkit workers run Keras on JAX, but KERAS_BACKEND={backend!r}")
    channel = _Channel(job.get("events") if rank == 0 else None)
    channel.send(phase="starting", pid=os.getpid())
    _log(f"rank {rank} starting")

    import keras  # importing is fine; no JAX computation before initialize

    _log("keras imported")

    count = int(job["num_processes"])
    with _tensorflow_import_skipped():
        keras.distribution.initialize(
            job_addresses=job["coordinator"], num_processes=count, process_id=rank
        )
    import jax

    _log("joined the job")
    devices = jax.devices()
    # auto_shard_dataset=False: NumPy input is refused otherwise in a
    # multi-process job; each rank already holds its own equal shard.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )
    strategy = (
        f"DataParallel ({count} worker{'s' if count != 1 else ''}, "
        f"{len(devices)} device{'s' if len(devices) != 1 else ''})"
    )
    channel.send(phase="joined", devices=len(devices), strategy=strategy)

    for module in job.get("imports", []):
        importlib.import_module(module)  # registers the model's custom objects
    model = keras.saving.load_model(job_dir / "model.keras", **job.get("load_kwargs", {}))
    if not model.run_eagerly:
        # The notebook's backend resolved jit_compile="auto" for itself and
        # saved the result: TensorFlow on a CPU-only machine saves False. On
        # JAX that would run every step op by op (about 5x slower here), so
        # the worker resolves it again, for JAX (the setter falls back to
        # False, with a warning, for a model that cannot be compiled).
        model.jit_compile = True
    with open(job_dir / f"data_rank{rank}.pkl", "rb") as file:
        data = pickle.load(file)
    _log("model and data loaded")

    if rank == 0:
        progress = _progress_callback(channel, job, strategy, len(devices))
        # The kernel's Stop, relayed here, is the same intent every other stop is.
        from .intents import StopTraining

        stop = StopTraining("user")
        callbacks = [progress, _stop_callback(channel, lambda: progress.submit(stop))]
    else:
        callbacks = [_stop_callback(channel, lambda: None)]

    fit_kwargs = dict(data.get("fit_kwargs") or {})
    if "validation_data" in data:
        fit_kwargs["validation_data"] = data["validation_data"]
    history = model.fit(
        data["x"],
        data.get("y"),
        sample_weight=data.get("sample_weight"),
        callbacks=callbacks,
        verbose=0,
        **fit_kwargs,
    )

    _log(f"fit ended (TensorFlow imported: {'tensorflow' in sys.modules})")
    # Leave SPMD mode on every rank before any rank-local read or write.
    keras.distribution.set_distribution(None)
    import numpy as np

    weights = [np.asarray(w) for w in model.get_weights()]
    optimizer = getattr(model, "optimizer", None)
    opt_values = [np.asarray(v) for v in optimizer.variables] if optimizer is not None else []
    iterations = int(np.asarray(optimizer.iterations)) if optimizer is not None else 0
    if rank == 0:
        arrays = {f"w{i}": w for i, w in enumerate(weights)}
        arrays.update({f"o{i}": v for i, v in enumerate(opt_values)})
        np.savez(job_dir / "result.tmp.npz", **arrays)
        os.replace(job_dir / "result.tmp.npz", job_dir / "result.npz")
        _write_text(
            job_dir / "history.json",
            json.dumps(
                {
                    "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                    "epoch": list(history.epoch),
                    "params": {k: v for k, v in (history.params or {}).items()},
                    "weights": len(weights),
                    "optimizer_variables": len(opt_values),
                }
            ),
        )
    _write_text(
        job_dir / f"done_rank{rank}.json",
        json.dumps(
            {
                "rank": rank,
                "digest": weights_digest(weights),
                "iterations": iterations,
                "devices": len(devices),
                "strategy": strategy,
            }
        ),
    )
    _log("results written")
    channel.send(phase="done")
    # Every rank finishes the same way, so the shutdown barrier is met.
    jax.distributed.shutdown()


def main(argv: list[str] | None = None) -> None:
    """Runs one worker and exits with 0, or 1 after writing the traceback."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kernelkit._worker_main JOB_DIR RANK", file=sys.stderr)
        sys.exit(2)
    job_dir, rank = Path(args[0]), int(args[1])
    code = EXIT_OK
    try:
        run(job_dir, rank)
    except BaseException:
        text = traceback.format_exc()
        _write_text(job_dir / f"error_rank{rank}.txt", text)
        print(text, file=sys.stderr)
        code = EXIT_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: after a failure, JAX's exit hooks would wait for ranks that
    # will never answer; the notebook side kills those.
    os._exit(code)


if __name__ == "__main__":
    main()
