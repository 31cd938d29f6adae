"""Runs inside the benchmark's kernels (imported there): the fit, the methods, the meters.

Not a test helper and not part of kernelkit: ``bench_peers.py`` starts fresh kernels,
imports this module in them and calls ``run(kind)``. The peers (tqdm, livelossplot)
come from the benchmark environment (``make benchmarks``), never from kernelkit's.

The fit is the issue's: 20,000 samples x 64 features, Dense 64 -> 10, batch 32,
3 epochs, validation_split 0.1.
"""

from __future__ import annotations

import os
import threading
import time

import keras
import numpy as np
from keras.src.utils.python_utils import is_default  # how Keras itself tells hooks apart

import kernelkit
from kernelkit.callback import LiveProgress

SAMPLES, FEATURES, CLASSES, BATCH, EPOCHS = 20_000, 64, 10, 32, 3

_rng = np.random.default_rng(0)
x = _rng.random((SAMPLES, FEATURES), dtype="float32")
y = (x[:, :CLASSES].argmax(axis=1)).astype("int32")

HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end",
    "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
)  # fmt: skip
PER_STEP = {"on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
            "on_test_batch_end"}  # fmt: skip
# Keras's default batch hooks call these: a callback may override only them.
ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}

meter: dict = {}
_depth = [0]


def _reset_meter() -> None:
    meter.update(hooks_wall=0.0, hooks_cpu=0.0, step_wall=0.0, step_calls=0, keep_wall=0.0,
                 keep_calls=0, by_hook={})  # fmt: skip


_reset_meter()


def _wrap(name: str, fn):
    """``fn`` timed. Per-step hooks read one clock (perf_counter, ~50 ns) and count their
    wall time as CPU; the others also read the thread's CPU clock (a system call)."""
    clock = time.perf_counter

    if name in PER_STEP:

        def step_hook(*args, **kwargs):
            if _depth[0]:
                return fn(*args, **kwargs)
            _depth[0] = 1
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                wall = clock() - t
                _depth[0] = 0
                meter["step_wall"] += wall
                meter["step_calls"] += 1

        return step_hook

    def hook(*args, **kwargs):
        if _depth[0]:  # a hook calling another one
            return fn(*args, **kwargs)
        _depth[0] = 1
        t, c = clock(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall = clock() - t
            _depth[0] = 0
            meter["hooks_wall"] += wall
            meter["hooks_cpu"] += time.thread_time() - c
            meter["by_hook"][name] = meter["by_hook"].get(name, 0.0) + wall

    return hook


def _does_work(callback, name: str) -> bool:
    """Whether Keras's call of hook ``name`` runs any of ``callback``'s own code."""
    if name in vars(callback) or not is_default(getattr(type(callback), name)):
        return True
    alias = ALIASES.get(name)
    return alias is not None and _does_work(callback, alias)


def timed(callback):
    """Times the hooks ``callback`` implements (instance attributes too: tqdm sets some).

    Hooks it leaves to Keras's defaults stay unwrapped, as a timer there would only
    time itself.
    """
    for name in HOOKS:
        if _does_work(callback, name):
            setattr(callback, name, _wrap(name, getattr(callback, name)))
    if isinstance(callback, LiveProgress):
        keep = callback._keep_good_state

        def keep_timed(epoch):
            t = time.perf_counter()
            try:
                return keep(epoch)
            finally:
                meter["keep_wall"] += time.perf_counter() - t
                meter["keep_calls"] += 1

        callback._keep_good_state = keep_timed
    return callback


def totals(result: dict) -> None:
    """Adds the per-step hooks (wall counted as CPU) to the hook totals."""
    result["hooks_wall"] += result["step_wall"]
    result["hooks_cpu"] += result["step_wall"]


class HFNotebookBar(keras.callbacks.Callback):
    """A replica of Hugging Face's NotebookProgressCallback (transformers/utils/notebook.py).

    One ``display(HTML, display_id=True)`` handle updated in place: a <progress> bar with
    elapsed and remaining time, redrawn every ``wait_for`` steps so that updates come about
    every 0.2 s after 5 warm-up updates, plus an HTML table with a row per epoch.
    """

    update_every, warmup = 0.2, 5

    def on_train_begin(self, logs=None):
        self.total = self.params["epochs"] * self.params["steps"]
        self.rows, self.output, self.last, self.wait_for = [], None, None, 1

    def on_train_batch_end(self, batch, logs=None):
        value = self.epoch * self.params["steps"] + batch + 1
        now = time.time()
        if self.last is None:
            self.start, self.last, self.first_calls = now, value, self.warmup
            self._show(value, "[ : < :")
        elif self.first_calls > 0 or value >= min(self.last + self.wait_for, self.total):
            self.first_calls -= 1
            per_item = (now - self.start) / value
            left = per_item * (self.total - value)
            self._show(value, f"{now - self.start:.0f}s < {left:.0f}s, Epoch {self.epoch + 1}")
            self.last = value
            self.wait_for = max(int(self.update_every / per_item), 1) if per_item else 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append([epoch + 1] + [f"{v:.6f}" for v in (logs or {}).values()])
        self.head = ["Epoch", *(logs or {}).keys()]
        self._show(self.last or 0, f"Epoch {epoch + 1}")

    def _show(self, value, label):
        from IPython import display as disp

        html = (
            f"<div><progress value='{value}' max='{self.total}' style='width:300px; "
            f"height:20px; vertical-align: middle;'></progress> [{value}/{self.total} {label}]"
            "</div>"
        )
        if self.rows:
            head = "".join(f"<th>{h}</th>" for h in self.head)
            body = "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in self.rows
            )
            html += (
                f"<table border='1' class='dataframe'><thead><tr>{head}</tr></thead>{body}"
                "</table>"
            )
        if self.output is None:
            self.output = disp.display(disp.HTML(html), display_id=True)
        else:
            self.output.update(disp.HTML(html))


def make() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(64, activation="relu"),
         keras.layers.Dense(CLASSES)]
    )  # fmt: skip
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def _keras(verbose: int, callbacks: list) -> callable:
    def fit(model, n, epochs):
        return model.fit(x[:n], y[:n], epochs=epochs, batch_size=BATCH, validation_split=0.1,
                         verbose=verbose, callbacks=callbacks)  # fmt: skip

    return fit


def _kernelkit(*, ledger: bool = False, watch: bool = False, **options) -> callable:
    """kernelkit.fit; ``ledger``: of a registered model (its run recorded in the ledger, the
    last run drawn as a ghost); ``watch``: with an ActivationWatch on 32 probe inputs."""

    def fit(model, n, epochs):
        live = timed(LiveProgress(**options))
        fit.live = live
        callbacks = [live]
        if watch:
            callbacks.append(timed(kernelkit.ActivationWatch(x[:32])))
        if ledger:
            kernelkit.register("bench", model)
        try:
            return kernelkit.fit(model, x[:n], y[:n], epochs=epochs, batch_size=BATCH,
                                 validation_split=0.1, callbacks=callbacks)  # fmt: skip
        finally:
            if ledger:
                kernelkit.unregister("bench")

    return fit


def input_clock_us(calls: int = 200_000) -> float:
    """What kernelkit's input clock adds to each ``next`` of the train step's iterator (us).

    The clock (``kernelkit.timing.InputTimer``) wraps the iterator Keras's JAX train step
    pulls batches from; this times that wrapper around a trivial iterator against the bare
    iterator, in this process, best of 5.
    """
    from kernelkit.timing import InputTimer, _TimedIterator

    items = list(range(calls))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in iter(items):
            pass
        bare = time.perf_counter() - t
        timer = InputTimer()
        t = time.perf_counter()
        for _ in _TimedIterator(iter(items), timer):
            pass
        best = min(best, time.perf_counter() - t - bare)
    return 1e6 * best / calls


def _peer(kind: str) -> callable:
    if kind == "quiet":
        return _keras(0, [])
    if kind == "keras1":
        return _keras(1, [timed(keras.callbacks.ProgbarLogger())])
    if kind == "keras2":
        return _keras(2, [timed(keras.callbacks.ProgbarLogger())])
    if kind == "tqdm":
        from tqdm.keras import TqdmCallback

        return _keras(0, [timed(TqdmCallback())])
    if kind == "livelossplot":
        from livelossplot import PlotLossesKeras

        return _keras(0, [timed(PlotLossesKeras())])
    if kind == "empty":  # the floor: an empty batch hook, timed the same way
        class Empty(keras.callbacks.Callback):
            async_safe = True

            def on_train_batch_end(self, batch, logs=None):
                pass

        return _keras(0, [timed(Empty())])
    if kind == "hfbar":
        return _keras(0, [timed(HFNotebookBar())])
    if kind == "liveprogress":  # LiveProgress in a plain model.fit (verbose=0)
        def fit(model, n, epochs):
            live = timed(LiveProgress())
            fit.live = live
            return model.fit(x[:n], y[:n], epochs=epochs, batch_size=BATCH,
                             validation_split=0.1, verbose=0, callbacks=[live])  # fmt: skip

        return fit
    if kind == "kernelkit":
        return _kernelkit()
    if kind == "kernelkit_norestore":
        return _kernelkit(restore_on_nan=False)
    if kind == "kernelkit_ledger":
        return _kernelkit(ledger=True)
    if kind == "kernelkit_watch":
        return _kernelkit(watch=True)
    raise ValueError(f"unknown method {kind!r}")


def _thread_cpu(name: str) -> float:
    """CPU seconds of the named thread so far, from /proc (0.0 where unreadable)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            try:
                with open(f"/proc/self/task/{thread.native_id}/schedstat") as f:
                    return int(f.read().split()[0]) / 1e9
            except OSError:
                return 0.0
    return 0.0


def run(kind: str, n: int = SAMPLES, epochs: int = EPOCHS) -> dict:
    """Traces a fresh model with a quiet fit, then times one fit of ``kind``."""
    model = make()
    # 1,120 samples split as the full fit splits (1,008 + 112): the same partial-batch
    # shapes (16), so the timed fit traces nothing.
    model.fit(x[:1120], y[:1120], epochs=1, batch_size=BATCH, validation_split=0.1, verbose=0)
    fit = _peer(kind)
    _reset_meter()
    iopub0 = _thread_cpu("IOPub")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    fit(model, n, epochs)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    live = getattr(fit, "live", None)
    view = getattr(live, "view", None)
    waited = getattr(live, "input_timer", None)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) - 32
    result = {
        "kind": kind, "backend": keras.backend.backend(), "wall": wall, "cpu": cpu,
        "steps": steps, "iopub_cpu": _thread_cpu("IOPub") - iopub0,
        "render_cpu": float(getattr(view, "render_cpu", 0.0) or 0.0),
        "load": os.getloadavg()[0], **meter, "by_hook": dict(meter["by_hook"]),
        "input_batches": waited.batches if waited is not None and waited.measured else 0,
        "input_wait": waited.seconds if waited is not None and waited.measured else 0.0,
    }  # fmt: skip
    totals(result)
    return result


def logs_conversion(epochs: int = 1) -> dict:
    """What Keras's per-step logs conversion costs, and when it runs.

    Keras 3's ``CallbackList`` converts each step's logs to Python floats
    (``python_utils.pythonify_logs``) before it calls the batch hooks. This
    counts and times those calls in three fits: no callback at all, a callback
    with only ``on_epoch_end`` (an epoch-only mode) and one with a batch hook.
    """
    from keras.src.callbacks import callback_list

    utils = callback_list.python_utils
    original = utils.pythonify_logs
    spent = [0.0, 0]

    def counted(logs):
        t = time.perf_counter()
        try:
            return original(logs)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    class EpochOnly(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    class BatchHook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    out = {}
    for name, callbacks in (("none", []), ("epoch_only", [EpochOnly()]),
                            ("batch_hook", [BatchHook()])):  # fmt: skip
        model = make()
        model.fit(x[:1120], y[:1120], epochs=1, batch_size=BATCH, validation_split=0.1, verbose=0)
        utils.pythonify_logs = counted
        spent[:] = [0.0, 0]
        try:
            t = time.perf_counter()
            model.fit(x, y, epochs=epochs, batch_size=BATCH, validation_split=0.1, verbose=0,
                      callbacks=callbacks)  # fmt: skip
            wall = time.perf_counter() - t
        finally:
            utils.pythonify_logs = original
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) - 32
        out[name] = {"calls_per_step": spent[1] / steps, "us_per_call": 1e6 * spent[0] / spent[1],
                     "share": spent[0] / wall}  # fmt: skip
    return out
