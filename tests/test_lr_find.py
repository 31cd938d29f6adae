"""kernelkit.lr_find: real sweeps on digits, the model put back bit for bit, one-line refusals.

Runs in both legs (TensorFlow and JAX); what needs TensorFlow (tf.data, MirroredStrategy) or
JAX (DataParallel) is skipped in the other. The two-device runs are subprocesses, because
devices must be set before the backend starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kernelkit.lr_find import (
    ExponentialSweep,
    LRFindError,
    LRFindResult,
    delays,
    lr_find,
    smooth,
    suggest,
)
from kernelkit.views.lr_find import LRFindView, result_bundle

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]

_digits = load_digits()
X = (_digits.data / 16).astype("float32")
Y = _digits.target.astype("int32")


def build(optimizer=None, *, seed: int = 0, batch_norm: bool = True, **compile_kwargs):
    """Digits classifier with BatchNormalization (moving statistics) and Dropout (a seed state)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,)), keras.layers.Dense(32, activation="relu", name="hidden")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.Dropout(0.2), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers, name="digits")
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return model


def state(model) -> list[np.ndarray]:
    """Every value lr_find may touch: weights, BN statistics, seed states, optimizer, metrics."""
    variables = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def bitwise_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )


def fit(model, epochs: int = 1, n: int = 512, **kwargs):
    """A short fit, the same for every model (Keras's first fit of a model on JAX draws one
    more shuffle while it peeks at the data: pass shuffle=False to compare a first fit)."""
    keras.utils.set_random_seed(7)  # the same shuffles and dropout masks for every model
    return model.fit(X[:n], Y[:n], batch_size=32, epochs=epochs, verbose=0, **kwargs)


def schedule_adam():
    return keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 20, 0.5))


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-3),
    "schedule": schedule_adam,
}


# --------------------------------------------------------------------------
# The model is put back exactly
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_the_model_is_put_back_bit_for_bit_and_trains_as_if_nothing_ran(kind):
    model = build(OPTIMIZERS[kind]())
    twin = build(OPTIMIZERS[kind]())
    fit(model)
    fit(twin)
    before = state(model)
    rate = model.optimizer.__dict__["_learning_rate"]
    train_function, history = model.train_function, model.history
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    found = lr_find(model, X[:1024], Y[:1024], batch_size=32, steps=60, display="none")

    assert found.ran >= 10 and found.restored
    assert bitwise_equal(state(model), before)
    assert model.optimizer.__dict__["_learning_rate"] is rate  # the schedule object itself
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations
    assert model.train_function is train_function and model.history is history
    assert "train_step" not in model.__dict__
    # The rate really moved: from start_lr upwards, once per step.
    assert found.lrs[0] == pytest.approx(1e-7) and list(found.lrs) == sorted(found.lrs)
    assert found.lrs[-1] > 1e-2

    # The next fit is the one the model would have had without lr_find.
    fit(model, epochs=2)
    fit(twin, epochs=2)
    assert bitwise_equal(state(model), state(twin))


def test_an_optimizer_never_used_is_left_where_a_first_fit_starts():
    model, twin = build(), build()
    assert not model.optimizer.built
    lr_find(model, X[:1024], Y[:1024], steps=40, display="none")
    fit(model, shuffle=False)
    fit(twin, shuffle=False)
    assert bitwise_equal(state(model), state(twin))


def test_steps_per_execution_points_average_their_steps():
    model = build(steps_per_execution=4)
    fit(model)
    before = state(model)
    found = lr_find(model, X, Y, steps=80, display="none")
    # One point per 4 steps (the epochs' last chunks are shorter).
    assert 10 <= found.ran <= 21
    assert list(found.lrs) == sorted(found.lrs)
    assert bitwise_equal(state(model), before)


def test_the_model_is_put_back_when_the_sweep_raises(monkeypatch):
    model = build()
    fit(model)
    before = state(model)

    class Boom(RuntimeError):
        pass

    from kernelkit import lr_find as module

    record = module._Sweep.on_train_batch_end

    def fail_at_step_5(self, batch, logs=None):
        if batch == 5:
            raise Boom("in the middle of the sweep")
        record(self, batch, logs)

    # The finder's own callback: it sees every step (LiveProgress may bind its step hook itself).
    monkeypatch.setattr(module._Sweep, "on_train_batch_end", fail_at_step_5)
    with pytest.raises(Boom):
        lr_find(model, X, Y, display="none")
    assert bitwise_equal(state(model), before)


# --------------------------------------------------------------------------
# The suggestion
# --------------------------------------------------------------------------


def test_the_suggestion_on_digits_trains_a_fresh_model():
    found = lr_find(build(), X, Y, batch_size=32, display="none")
    assert 1e-7 < found.steepest < found.minimum < 10
    assert found.suggestion == found.steepest
    assert found.min_over_10 == pytest.approx(found.minimum / 10)
    assert found.stopped in ("diverged", "end")

    model = build()
    model.optimizer.learning_rate = found.suggestion
    start = model.evaluate(X, Y, verbose=0, return_dict=True)["loss"]
    losses = model.fit(X, Y, batch_size=32, epochs=4, verbose=0).history["loss"]
    end = model.evaluate(X, Y, verbose=0, return_dict=True)
    assert losses == sorted(losses, reverse=True)  # the loss falls every epoch
    assert end["loss"] < 0.25 * start and end["accuracy"] > 0.9


def test_a_sweep_that_diverges_stops_early():
    found = lr_find(build(keras.optimizers.SGD(0.1)), X, Y, end_lr=1e3, display="none")
    assert found.stopped == "diverged" and found.ran < 100
    assert max(found.smoothed) > 4 * min(found.smoothed) * 0.999
    assert "stopped when the loss diverged (4 x its minimum)" in repr(found)


def test_smoothing_and_suggestion_are_plain_math():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    assert delays(3, 0.5) == pytest.approx([0.0, 1 / 3, (0.5 + 0.5) / 1.75])
    assert suggest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.95, 0.5, 0.4, 2.0]) == (0.01, 0.1)
    sweep = ExponentialSweep(1e-4, 1.0, 5, offset=3)
    assert [sweep.rate(i) for i in range(5)] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    in_graph = [float(keras.ops.convert_to_numpy(sweep(3 + i))) for i in range(6)]
    assert in_graph == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1.0], rel=1e-5)
    scaled = ExponentialSweep(1e-4, 1.0, 5, scale=0.1)  # a layer group at a tenth of the rate
    assert [scaled.rate(i) for i in range(5)] == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 0.1])
    assert float(keras.ops.convert_to_numpy(scaled(4))) == pytest.approx(0.1, rel=1e-5)


def test_a_noisy_dip_on_a_flat_start_is_not_the_steepest_descent():
    # A trained head being fine-tuned: flat for decades, one lucky batch early, then the descent.
    lrs = list(np.logspace(-7, 0, 36))
    flat = [1.40, 1.41, 1.39, 1.40, 1.20, 1.30, 1.39, 1.40, 1.41, 1.40, 1.39, 1.40, 1.40, 1.41]
    flat += [1.39, 1.40, 1.40, 1.40, 1.39, 1.40]
    descent = [1.38, 1.35, 1.30, 1.24, 1.20, 1.18, 1.17, 1.2, 1.3, 1.6, 2.5, 3, 4, 5, 6, 7]
    steepest, minimum = suggest(lrs, flat + descent)
    assert lrs[20] <= steepest < minimum == pytest.approx(lrs[26])


# --------------------------------------------------------------------------
# Data sources and distribution
# --------------------------------------------------------------------------


class Batches(keras.utils.PyDataset):
    def __init__(self, batches: int = 30):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return self.batches

    def __getitem__(self, i):
        rows = slice(32 * i, 32 * (i + 1))
        return X[rows], Y[rows]


def generator():
    while True:
        for i in range(0, 32 * 50, 32):
            yield X[i : i + 32], Y[i : i + 32]


def tf_dataset():
    tf = pytest.importorskip("tensorflow")
    if BACKEND != "tensorflow":
        pytest.skip("tf.data as fit's input is the TensorFlow leg's")
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)


@pytest.mark.parametrize("source", ["pydataset", "generator", "tf.data"])
def test_datasets_and_generators(source):
    data = {"pydataset": Batches, "generator": generator, "tf.data": tf_dataset}[source]()
    model = build()
    fit(model)
    before = state(model)
    found = lr_find(model, data, steps=60, display="none")
    assert found.ran >= 10
    assert bitwise_equal(state(model), before)


def test_under_a_distribution_in_this_process():
    if BACKEND == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with strategy.scope():
            model = build()
        fit(model)
        before = state(model)
        found = lr_find(model, X[:1024], Y[:1024], batch_size=32, steps=40, display="none")
    else:
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        try:
            model = build()
            fit(model)
            before = state(model)
            found = lr_find(model, X[:1024], Y[:1024], batch_size=32, steps=40, display="none")
        finally:
            keras.distribution.set_distribution(None)
    assert found.ran >= 10
    assert bitwise_equal(state(model), before)


TWO_DEVICES = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kernelkit.lr_find import lr_find
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        return model
    if backend == "tensorflow":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            model = build()
    else:
        import jax
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        replicas = len(jax.devices())
        model = build()
    model.fit(x, y, batch_size=32, verbose=0)
    def values():
        vs = [*model.variables, *model.optimizer.variables]
        return [np.array(keras.ops.convert_to_numpy(v)) for v in vs]
    before = values()
    found = lr_find(model, x, y, batch_size=32, display="none")
    same = all(a.tobytes() == b.tobytes() for a, b in zip(before, values()))
    print("RESULT " + json.dumps({"replicas": replicas, "same": same, "ran": found.ran,
                                  "suggestion": found.suggestion}))
    """
)


def test_two_devices_in_a_fresh_process():
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KERAS_BACKEND": BACKEND,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    done = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["replicas"] == 2
    assert result["same"] and result["ran"] >= 10 and result["suggestion"] > 0


# --------------------------------------------------------------------------
# Bad input: one line, nothing changed
# --------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_model_not_compiled_is_one_line():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)], name="raw")
    with pytest.raises(LRFindError) as err:
        lr_find(model, X, Y, display="none")
    assert "model 'raw' is not compiled" in one_line(err)


@pytest.mark.parametrize("steps", [5, 0, 2.5])
def test_too_few_steps_is_one_line(steps):
    with pytest.raises(LRFindError) as err:
        lr_find(build(), X, Y, steps=steps, display="none")
    assert "is too few: lr_find needs at least 10 steps" in one_line(err)


def test_a_loss_that_never_decreases_is_one_line_and_nothing_changed():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="zeros", trainable=False)]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x, y = np.ones((640, 4), "float32"), np.ones((640, 1), "float32")
    model.fit(x, y, verbose=0)
    before = state(model)
    with pytest.raises(LRFindError) as err:
        lr_find(model, x, y, display="none")
    assert "the loss never decreased from 1" in one_line(err)
    assert bitwise_equal(state(model), before)


def test_a_loss_that_diverges_at_once_is_too_few_steps():
    model = build(keras.optimizers.SGD(1.0), batch_norm=False)
    fit(model)
    before_find = state(model)
    with pytest.raises(LRFindError) as err:
        lr_find(model, X, Y, start_lr=1e6, end_lr=1e9, display="none")
    assert "recorded only" in one_line(err) and "before the loss diverged" in str(err.value)
    assert bitwise_equal(state(model), before_find)


def test_changed_trainable_flags_are_refused_before_anything_runs():
    model = build()
    fit(model)
    model.get_layer("hidden").trainable = False
    with pytest.raises(LRFindError) as err:
        lr_find(model, X, Y, display="none")
    assert "call kernelkit.recompile(digits) first" in one_line(err)


# --------------------------------------------------------------------------
# What the user sees: the live view, the static output, the magic
# --------------------------------------------------------------------------


class FakeHandle:
    def __init__(self):
        self.updates = []

    def update(self, bundle, raw=False):
        self.updates.append(bundle)


def test_the_live_view_draws_loss_against_rate_and_ends_static(monkeypatch):
    handle = FakeHandle()
    shown = []

    def show(self):
        self.build()
        self._handle = handle
        shown.append(self)

    monkeypatch.setattr(LRFindView, "show", show)
    found = lr_find(build(), X[:1024], Y[:1024], steps=60, display="widget")
    (view,) = shown
    # While it ran, the usual bar and the loss-rate chart on a log axis.
    assert "kk-progress" in view.body.value
    assert "learning rate (log scale)" in view.body.value
    # At the end: the static bundle is the last update, the widgets closed.
    bundle = handle.updates[-1]
    assert bundle["text/plain"] == found.summary() == repr(found)
    assert "<svg" in bundle["text/html"] and "suggested learning rate" in bundle["text/html"]
    figure = bundle["application/vnd.plotly.v1+json"]
    assert figure["layout"]["xaxis"]["type"] == "log"
    assert view.widget.comm is None  # closed
    assert repr(view) == found.summary()


def test_the_text_view_prints_the_suggestion_last(capsys):
    found = lr_find(build(), X[:1024], Y[:1024], steps=40, display="text")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == found.summary()
    assert lines[0].startswith("Epoch 1/")


def test_static_output_reads_without_a_kernel():
    found = LRFindResult(
        model="clf",
        suggestion=3e-3,
        method="steepest descent of the smoothed loss",
        steepest=3e-3,
        minimum=3e-2,
        min_over_10=3e-3,
        lrs=(1e-4, 1e-3, 1e-2, 1e-1),
        losses=(2.3, 2.0, 1.0, 5.0),
        smoothed=(2.3, 2.1, 1.5, 2.5),
        smoothed_lrs=(1e-4, 8e-4, 7e-3, 7e-2),
        start_lr=1e-4,
        end_lr=1.0,
        steps=4,
        stopped="diverged",
    )
    line = (
        "kernelkit lr_find clf: suggested learning rate 3.00e-03 (steepest descent of the "
        "smoothed loss; minimum / 10: 3.00e-03) · 4 steps from 1.00e-04 to 1.00e-01, stopped "
        "when the loss diverged (4 x its minimum) · model restored"
    )
    assert repr(found) == line
    bundle = result_bundle(found)
    assert bundle["text/plain"] == line
    html = bundle["text/html"]
    assert html.count("<svg") == 1 and "1e-3" in html and "suggested 3.0e-03" in html
    assert len(bundle["application/vnd.plotly.v1+json"]["data"]) == 4
    failed = result_bundle(None, "lr_find clf: the loss never decreased", ([], [], [], []))
    assert failed["text/plain"] == "lr_find clf: the loss never decreased"
    assert "application/vnd.plotly.v1+json" not in failed


BUILD = """
def build_digits():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.BatchNormalization(), keras.layers.Dense(10, "softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    return m
"""


def test_the_magic_runs_the_finder_on_the_cells_fit_arguments(ip):
    from kernelkit import session

    # 1536 digits: batches of 32 split over the 8 devices of the JAX leg too.
    ip.user_ns.update(keras=keras, np=np, x=X[:1536], y=Y[:1536])
    ip.run_cell_raising(BUILD)
    ip.run_cell_magic(
        "kmodel",
        "clf --lr-find --no-card",
        "clf = build_digits()\n"
        "found = clf.fit(x, y, batch_size=32, epochs=20, validation_split=0.1, verbose=0)\n",
    )
    found = ip.user_ns["found"]
    assert isinstance(found, LRFindResult) and found.model == "clf"
    clf = ip.user_ns["clf"]
    untrained = ip.user_ns["build_digits"]()
    assert bitwise_equal(
        [keras.ops.convert_to_numpy(v) for v in clf.weights],
        [keras.ops.convert_to_numpy(v) for v in untrained.weights],
    )
    entry = session.entry_for(clf)
    assert entry is not None and entry.runs == 0
    assert not entry.history.epochs  # the sweep is not one of the model's runs
    session.unregister("clf")


def test_the_magic_says_in_one_line_what_it_cannot_do(ip):
    from IPython.core.error import UsageError

    ip.user_ns.update(keras=keras, np=np, x=X, y=Y)
    ip.run_cell_raising(BUILD)
    with pytest.raises(UsageError, match="--lr-find trains nothing to resume"):
        ip.run_cell_magic("kmodel", "clf --lr-find --workers 2", "clf = build_digits()\n")
    cell = (
        "clf = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])\n"
        "clf.fit(x, y)\n"
    )
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("kmodel", "clf --lr-find --no-card", cell)
    assert "is not compiled" in str(err.value) and "\n" not in str(err.value)


KERNEL_CELL = """
%load_ext kernelkit
import numpy as np, keras, kernelkit
from sklearn.datasets import load_digits
d = load_digits()
x, y = (d.data / 16).astype("float32")[:1536], d.target[:1536]  # splits over 8 devices too
"""


@pytest.mark.kernel
def test_a_notebook_sees_the_usual_live_view_then_a_static_result(kernel):
    reply, _ = kernel.execute(KERNEL_CELL)
    assert reply["status"] == "ok"
    reply, messages = kernel.execute(
        "%%kmodel clf --lr-find --no-card\n" + BUILD + "clf = build_digits()\n"
        "found = clf.fit(x, y, batch_size=32, epochs=3)\n"
    )
    assert reply["status"] == "ok", kernel.text(messages)
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in m["content"]["data"] for m in shown)
    (final,) = [m for m in messages if m["msg_type"] == "update_display_data"][-1:]
    data = final["content"]["data"]
    reply, out = kernel.execute("print(repr(found))")
    assert data["text/plain"] == kernel.text(out).strip()
    assert data["text/plain"].startswith("kernelkit lr_find clf: suggested learning rate ")
    assert "<svg" in data["text/html"] and "learning rate (log scale)" in data["text/html"]
    assert data["application/vnd.plotly.v1+json"]["layout"]["xaxis"]["type"] == "log"
