"""Keras on JAX over 8 devices, as on a Kaggle TPU v5e-8: the JAX leg of ``make test``.

Runs only with ``KERAS_BACKEND=jax`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(the JAX leg sets both; elsewhere the module is skipped with that reason). Every test uses
real tiny Keras fits in a real IPython shell; what is asserted is what a user sees: the
one line of a refusal, the strategy the card and ``%kmodel`` name, where the weights live.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") != "jax":
    pytest.skip(
        "needs KERAS_BACKEND=jax with 8 host devices (the JAX leg)", allow_module_level=True
    )

import jax
import keras

if jax.device_count() != 8:
    pytest.skip(
        "needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (the JAX leg)",
        allow_module_level=True,
    )

from IPython.core.error import UsageError

import kernelkit
from kernelkit import session
from kernelkit.strategy import check_batches, prepare_fit, split_samples

pytestmark = pytest.mark.jax_devices


@pytest.fixture(autouse=True)
def no_distribution():
    """Each test starts, and leaves, with no global distribution and no registrations."""
    keras.distribution.set_distribution(None)
    yield
    keras.distribution.set_distribution(None)
    for name in list(session.registry._REGISTRY):
        session.unregister(name)


@pytest.fixture
def data(ip):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 8)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    ip.user_ns.update(x=x, y=y, np=np, keras=keras, jax=jax, kernelkit=kernelkit)
    return x, y


def build(name="clf", extra=""):
    return f"""
{name} = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation='relu'),
                         keras.layers.Dense(1, activation='sigmoid')])
{name}.compile('adam', 'binary_crossentropy')
{extra}
"""


def run_raising(ip, code):
    """Runs a cell; returns the UsageError line it showed (None when it succeeded)."""
    shown = []
    original = ip.show_usage_error
    ip.show_usage_error = shown.append
    try:
        result = ip.run_cell(code)
    finally:
        ip.show_usage_error = original
    if result.success:
        return None
    if not shown:
        result.raise_error()  # a real traceback: fail the test with it
    return str(shown[0])


class Recorder(keras.callbacks.Callback):
    """Reads, from inside the fit, what Keras trains with.

    On the training thread: Keras keeps the distribution per thread, and batch hooks
    of async-safe callbacks run on another one.
    """

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(keras.distribution.distribution())


def sharded_over(model):
    """How many devices the model's first kernel lives on."""
    return len(model.trainable_variables[0].value.sharding.device_set)


# --- 2. every fit of a model runs where the model was built ----------------------------------


def test_later_fit_trains_over_all_eight_devices_and_says_so(ip, data):
    ip.run_cell_magic(
        "kmodel", "clf --no-card", build(extra="clf.fit(x[:1440], y[:1440], epochs=1)")
    )
    # Another cell, no distribution in force: Keras alone would train undistributed.
    assert keras.distribution.distribution() is None
    recorder = Recorder()
    ip.user_ns["recorder"] = recorder
    ip.run_cell_raising("history = clf.fit(x[:1440], y[:1440], epochs=1, callbacks=[recorder])")
    seen = recorder.seen[0]
    assert type(seen).__name__ == "DataParallel" and seen.device_mesh.devices.size == 8
    assert sharded_over(ip.user_ns["clf"]) == 8
    assert keras.distribution.distribution() is None  # put back after the fit
    card = repr(kernelkit.card("clf"))
    assert "strategy DataParallel (8 devices)" in card
    table = repr(kernelkit.models())
    assert "DataParallel (8 devices)" in table.splitlines()[1]


def test_view_header_names_the_distribution_read_from_the_fit(ip, data):
    events = []
    ip.user_ns["live"] = kernelkit.LiveProgress(display="none", sink=events.append)
    ip.run_cell_magic(
        "kmodel",
        "clf --no-card",
        build(extra="clf.fit(x[:1440], y[:1440], epochs=1, callbacks=[live])"),
    )
    ip.run_cell_raising("clf.fit(x[:1440], y[:1440], epochs=1, callbacks=[live])")
    begins = [e for e in events if type(e).__name__ == "TrainBegin"]
    assert [(b.strategy, b.replicas) for b in begins] == [("DataParallel (8 devices)", 8)] * 2


def test_evaluate_and_predict_run_in_the_models_distribution(ip, data):
    ip.run_cell_magic("kmodel", "clf --no-card", build())
    ip.run_cell_raising(
        "loss = clf.evaluate(x[:64], y[:64], verbose=0); p = clf.predict(x[:64], verbose=0)"
    )
    assert ip.user_ns["p"].shape == (64, 1)
    line = run_raising(ip, "clf.evaluate(x[:100], y[:100], verbose=0)")
    assert line == (
        "clf.evaluate: The last batch of 100 evaluation samples in batches of 32 would have 4 "
        "samples, which Keras cannot split over DataParallel (8 devices): use 96 samples (x[:96])."
    )


def test_a_cells_own_fit_gets_the_prefit_check_and_loses_nothing(ip, data):
    ip.run_cell_magic("kmodel", "clf --no-card", build())
    before = ip.user_ns["clf"]
    weights = [w.copy() for w in before.get_weights()]
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic(
            "kmodel", "clf --no-card", build(extra="clf.fit(x, y, epochs=1, validation_split=0.1)")
        )
    assert str(err.value) == (
        "The last batch of 1350 training samples in batches of 32 (validation_split=0.1 of 1500) "
        "would have 6 samples, which Keras cannot split over DataParallel (8 devices): use 1440 "
        "samples (x[:1440]). (nothing was registered; the earlier clf was kept)"
    )
    assert session.get("clf") is before
    assert all(np.array_equal(a, b) for a, b in zip(weights, before.get_weights(), strict=True))


def test_a_later_fit_with_uneven_data_is_one_line_and_keeps_the_model(ip, data):
    ip.run_cell_magic(
        "kmodel", "clf --no-card", build(extra="clf.fit(x[:1440], y[:1440], epochs=1)")
    )
    model = ip.user_ns["clf"]
    weights = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations)
    line = run_raising(ip, "clf.fit(x, y, epochs=1)")
    assert line == (
        "The last batch of 1500 training samples in batches of 32 would have 28 samples, which "
        "Keras cannot split over DataParallel (8 devices): use 1496 samples (x[:1496])."
    )
    assert int(model.optimizer.iterations) == iterations
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    ip.run_cell_raising("clf.fit(x[:1496], y[:1496], epochs=1)")  # the fix it names works


# --- 3. devices that do not divide the data: Keras's own arithmetic --------------------------

GRID = [
    (samples, split, batch)
    for samples in (64, 68, 72, 89, 90, 100, 160)
    for split in (0.0, 0.2, 0.25)
    for batch in (12, 16, 32, 100)
]


def keras_trains(samples, split, batch):
    """What Keras 3 itself does: fit a fresh model under DataParallel over 8 devices."""
    x = np.zeros((samples, 2), "float32")
    with keras.distribution.DataParallel(devices=jax.devices()).scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        try:
            model.fit(x, x[:, :1], batch_size=batch, epochs=1, validation_split=split, verbose=0)
        except Exception as error:  # jax's IndivisibleError, named by its text
            assert "evenly divide" in str(error) or "Indivisible" in type(error).__name__, error
            return False
    return True


def test_the_batch_check_agrees_with_what_keras_does_over_a_grid():
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    disagree = []
    for samples, split, batch in GRID:
        try:
            check_batches(
                distribution, np.zeros((samples, 2)), batch_size=batch, validation_split=split
            )
            predicted = True
        except ValueError:
            predicted = False
        actual = keras_trains(samples, split, batch)
        if predicted != actual:
            disagree.append((samples, split, batch, predicted, actual))
    assert disagree == []
    # Both outcomes occur in the grid, so the comparison means something.
    outcomes = {keras_trains(72, 0.0, 16), keras_trains(68, 0.0, 16)}
    assert outcomes == {True, False}


def test_validation_split_rounds_as_keras_does():
    for samples in range(10, 200, 7):
        for split in (0.1, 0.15, 0.2, 1 / 3):
            x = np.arange(samples)
            from keras.src.trainers.data_adapters.array_slicing import train_validation_split

            train, held_out = train_validation_split((x,), validation_split=split)
            assert split_samples(samples, split) == (len(train[0]), len(held_out[0]))


def test_every_suggested_fix_trains():
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    for samples, split, batch in [(1500, 0.1, 32), (68, 0.0, 16), (89, 0.2, 16)]:
        with pytest.raises(ValueError) as err:
            check_batches(
                distribution, np.zeros((samples, 2)), batch_size=batch, validation_split=split
            )
        fixed = int(str(err.value).split("use ")[1].split(" samples")[0])
        assert keras_trains(fixed, split, batch), (samples, split, batch, fixed)


# --- 4. the user's distribution wins ---------------------------------------------------------


def test_the_faq_recipe_distribution_is_kept_and_named(ip, data):
    ip.run_cell_raising(
        "keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))"
    )
    users = keras.distribution.distribution()
    ip.run_cell_magic(
        "kmodel", "clf --no-card", build(extra="clf.fit(x[:1440], y[:1440], epochs=1)")
    )
    assert keras.distribution.distribution() is users
    assert session.registry._REGISTRY["clf"].strategy is users
    assert "strategy DataParallel (8 devices)" in repr(kernelkit.card("clf"))


def test_a_subset_distribution_is_kept_not_replaced(ip, data):
    ip.run_cell_raising(
        "keras.distribution.set_distribution("
        "keras.distribution.DataParallel(devices=jax.devices()[:4]))"
    )
    ip.run_cell_magic(
        "kmodel", "clf --no-card", build(extra="clf.fit(x[:1440], y[:1440], epochs=1)")
    )
    assert sharded_over(ip.user_ns["clf"]) == 4
    assert "strategy DataParallel (4 devices)" in repr(kernelkit.card("clf"))
    keras.distribution.set_distribution(None)
    ip.run_cell_raising("clf.fit(x[:1440], y[:1440], epochs=1)")  # later: still its 4 devices
    assert sharded_over(ip.user_ns["clf"]) == 4


@pytest.mark.parametrize("spec", ["cpu", "mirrored"])
def test_an_explicit_strategy_that_conflicts_is_one_line_before_the_cell_runs(ip, data, spec):
    ip.run_cell_raising(
        "keras.distribution.set_distribution("
        "keras.distribution.DataParallel(devices=jax.devices()[:4]))"
    )
    ip.user_ns["ran"] = False
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("kmodel", f"clf --no-card --strategy {spec}", "ran = True\n" + build())
    assert str(err.value) == (
        f"--strategy {spec} conflicts with the distribution already in force (DataParallel "
        "(4 devices)): drop --strategy to train in yours, or call "
        "keras.distribution.set_distribution(None) first"
    )
    assert ip.user_ns["ran"] is False


def test_an_explicit_strategy_that_agrees_is_accepted(ip, data):
    ip.run_cell_raising(
        "keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))"
    )
    ip.run_cell_magic("kmodel", "clf --no-card --strategy mirrored", build())
    assert session.registry._REGISTRY["clf"].strategy is keras.distribution.distribution()


def test_strategy_cpu_without_a_user_distribution_trains_on_one_device(ip, data):
    ip.run_cell_magic(
        "kmodel", "clf --no-card --strategy cpu", build(extra="clf.fit(x, y, epochs=1)")
    )
    assert sharded_over(ip.user_ns["clf"]) == 1
    assert "strategy default" in repr(kernelkit.card("clf"))


# --- 5. TensorBoard without TensorFlow ------------------------------------------------------


def test_tensorboard_logs_without_tensorflow(ip, data, tmp_path, monkeypatch):
    import importlib.util
    import sys

    assert importlib.util.find_spec("tensorflow") is None, "the JAX leg has no TensorFlow"
    monkeypatch.chdir(tmp_path)
    ip.run_cell_magic(
        "kmodel",
        "clf --no-card --tensorboard",
        build(extra="clf.fit(x[:1440], y[:1440], epochs=2)"),
    )
    assert "tensorflow" not in sys.modules
    events = list(tmp_path.glob("runs/clf/*/train/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


# --- 6/7. TPU hints -------------------------------------------------------------------------


def test_steps_per_execution_hint_on_a_tpu_is_said_once(tiny_model):
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    kwargs = {"x": np.zeros((256, 4)), "batch_size": 32}
    _, notes = prepare_fit(tiny_model, distribution, kwargs, platform="tpu")
    assert notes == [
        "TPU: each step is one host round trip; compile with steps_per_execution=32 (or more) "
        "to run many steps per call, as the Keras FAQ recommends"
    ]
    assert prepare_fit(tiny_model, distribution, kwargs, platform="tpu")[1] == []
    assert prepare_fit(tiny_model, distribution, kwargs)[1] == []  # these are CPU devices


def test_devices_report_names_the_chips_as_jax_does(ip):
    from kernelkit.devices import FakeProbe, devices

    fake = devices(
        probe=FakeProbe(
            environ={"KAGGLE_KERNEL_RUN_TYPE": "Interactive"},
            backend="jax",
            devices=[f"TPU:{i}" for i in range(8)],
            device_kind="TPU v5 lite",
            started=True,
        )
    )
    rows = dict(fake.rows())
    assert rows["chips"] == "8 x TPU v5 lite (JAX sees them)"
    assert rows["auto"] == "DataParallel over 8 TPU devices"
    real = dict(ip.run_line_magic("kmodel", "--devices").rows())
    assert real["devices"] == ", ".join(f"CPU:{i}" for i in range(8))
