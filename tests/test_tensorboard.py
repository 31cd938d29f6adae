"""TensorBoard logs on every backend: Keras's callback on TensorFlow, ScalarTensorBoard elsewhere.

The same file runs under the TensorFlow venv and under a JAX-only venv (no
TensorFlow installed, as on a Colab or Kaggle TPU runtime). Event files are
read back with TensorBoard's own EventAccumulator and compared with ``History``.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kernelkit.checkpoints import ScalarTensorBoard, check_tensorboard, tensorboard_callback

pytest.importorskip("tensorboard")

SAMPLES = 64  # validation_split=0.25 leaves 48 for training
BATCH = 8  # so 6 training steps per epoch
STEPS = 6
BACKEND = keras.backend.backend()


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")).astype("float32")
    return x, y


def make_model(**compile_kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"], **compile_kwargs
    )
    return model


def fit(model, callback, epochs=3, **kwargs):
    x, y = data()
    return model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=BATCH,
        validation_split=0.25,
        verbose=0,
        callbacks=[callback],
        **kwargs,
    )


def read(logdir, part):
    """{tag: [(step, value), ...]} of ``logdir/part``, in step order.

    Keras's callback (tf.summary) writes scalars as tensors, ScalarTensorBoard
    as simple values; TensorBoard shows both as scalars, so read both.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(os.path.join(logdir, part), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    found = {}
    for tag in acc.Tags()["scalars"]:
        found[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    for tag in acc.Tags()["tensors"]:
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        if all(v.shape == () and v.dtype.kind == "f" for _, v in values):
            found[tag] = [(step, float(v)) for step, v in values]
    return {tag: sorted(points) for tag, points in found.items()}


def epochs_of(points):
    return [step for step, _ in points]


def values_of(points):
    return [value for _, value in points]


def approx(values):
    return pytest.approx(values, rel=1e-6)


# ----------------------------------------------------------------------------
# Epoch charts: the same tags and values as History, with either callback


@pytest.mark.parametrize("make", ["tensorboard_callback", "ScalarTensorBoard"])
def test_epoch_scalars_equal_history(tmp_path, make):
    if make == "tensorboard_callback":
        callback, logdir = tensorboard_callback("tiny", root=tmp_path)
    else:
        logdir = str(tmp_path / "run")
        callback = ScalarTensorBoard(logdir)
    history = fit(make_model(), callback).history

    train, validation = read(logdir, "train"), read(logdir, "validation")
    for key in ("loss", "mae"):
        assert epochs_of(train[f"epoch_{key}"]) == [0, 1, 2]
        assert values_of(train[f"epoch_{key}"]) == approx(history[key])
        assert epochs_of(validation[f"epoch_{key}"]) == [0, 1, 2]
        assert values_of(validation[f"epoch_{key}"]) == approx(history[f"val_{key}"])
    assert values_of(train["epoch_learning_rate"]) == approx([0.01] * 3)
    assert not any(tag.startswith("epoch_val_") for tag in train | validation)
    assert not any(tag.startswith("batch_") for tag in train)  # update_freq="epoch"


def test_tensorboard_callback_is_keras_own_only_on_tensorflow(tmp_path):
    callback, _ = tensorboard_callback("tiny", root=tmp_path, update_freq=3)
    if BACKEND == "tensorflow":
        assert type(callback) is keras.callbacks.TensorBoard
    else:
        assert isinstance(callback, ScalarTensorBoard)
    assert callback.update_freq == 3


def test_without_validation_there_is_no_validation_folder(tmp_path):
    callback = ScalarTensorBoard(tmp_path)
    x, y = data()
    history = make_model().fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[callback])
    assert values_of(read(tmp_path, "train")["epoch_loss"]) == approx(history.history["loss"])
    assert os.listdir(tmp_path) == ["train"]


# ----------------------------------------------------------------------------
# Batch charts


def test_batch_scalars_every_n_steps_count_all_steps(tmp_path):
    callback = ScalarTensorBoard(tmp_path, update_freq=2)
    history = fit(make_model(), callback).history

    batch_loss = read(tmp_path, "train")["batch_loss"]
    assert epochs_of(batch_loss) == list(range(2, 3 * STEPS + 1, 2))
    # The last step's logs are the epoch's training logs in Keras 3.
    at_epoch_end = dict(batch_loss)
    assert [at_epoch_end[STEPS * (e + 1)] for e in range(3)] == approx(history["loss"])
    assert "batch_loss" not in read(tmp_path, "validation")


def test_update_freq_batch_writes_every_step(tmp_path):
    callback = ScalarTensorBoard(tmp_path, update_freq="batch")
    fit(make_model(), callback, epochs=2)
    train = read(tmp_path, "train")
    assert epochs_of(train["batch_mae"]) == list(range(1, 2 * STEPS + 1))


def test_steps_per_execution_writes_when_a_chunk_passes_a_multiple(tmp_path):
    # 6 steps in chunks of 4: the hook fires at steps 4 and 6 (a short last chunk).
    callback = ScalarTensorBoard(tmp_path, update_freq=3)
    history = fit(make_model(steps_per_execution=4), callback, epochs=2).history
    batch_loss = read(tmp_path, "train")["batch_loss"]
    # Steps 1-4 pass 3, steps 5-6 pass 6, 7-10 pass 9, 11-12 pass 12.
    assert epochs_of(batch_loss) == [4, 6, 10, 12]
    assert values_of(batch_loss)[1::2] == approx(history["loss"])


@pytest.mark.parametrize("update_freq", [0, -1, "step", 1.5, True])
def test_bad_update_freq(tmp_path, update_freq):
    with pytest.raises(ValueError, match="update_freq must be") as info:
        ScalarTensorBoard(tmp_path, update_freq=update_freq)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------
# A second fit with the same callback


def test_second_fit_continues_the_same_files(tmp_path):
    callback = ScalarTensorBoard(tmp_path, update_freq=STEPS)
    model = make_model()
    first = fit(model, callback, epochs=2).history
    files = sorted(glob.glob(str(tmp_path / "*" / "events.out.tfevents.*")))
    second = fit(model, callback, epochs=2).history  # epochs start over at 0

    train, validation = read(tmp_path, "train"), read(tmp_path, "validation")
    assert epochs_of(train["epoch_loss"]) == [0, 1, 2, 3]
    assert values_of(train["epoch_loss"]) == approx(first["loss"] + second["loss"])
    assert values_of(validation["epoch_loss"]) == approx(first["val_loss"] + second["val_loss"])
    assert epochs_of(train["batch_loss"]) == [6, 12, 18, 24]
    assert sorted(glob.glob(str(tmp_path / "*" / "events.out.tfevents.*"))) == files


def test_a_fit_with_initial_epoch_keeps_its_epochs(tmp_path):
    callback = ScalarTensorBoard(tmp_path)
    model = make_model()
    fit(model, callback, epochs=2)
    fit(model, callback, epochs=4, initial_epoch=2)
    assert epochs_of(read(tmp_path, "train")["epoch_loss"]) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------
# Values TensorBoard cannot chart are skipped


def test_non_scalar_and_non_finite_logs_are_skipped(tmp_path):
    callback = ScalarTensorBoard(tmp_path, update_freq=1)
    callback.set_model(make_model())
    callback.set_params({"epochs": 1, "steps": 1, "verbose": 0})
    odd = {
        "loss": 0.5,
        "nan": float("nan"),
        "inf": np.float32("inf"),
        "vector": np.ones(3),
        "one_element": np.ones((1,)),  # float() takes it, but it is not a scalar
        "text": "hello",
        "numeric_text": "1.5",  # float() parses it, but it is a string
        "nothing": None,
        "count": np.int64(7),
    }
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(0, dict(odd))
    callback.on_epoch_end(0, {**odd, "val_loss": 0.25, "val_nan": float("nan")})
    callback.on_train_end()

    train = read(tmp_path, "train")
    assert set(train) == {
        "batch_loss",
        "batch_count",
        "epoch_loss",
        "epoch_count",
        "epoch_learning_rate",
    }
    assert train["epoch_count"] == [(0, 7.0)]
    assert read(tmp_path, "validation") == {"epoch_loss": [(0, 0.25)]}


# ----------------------------------------------------------------------------
# check_tensorboard


def test_check_tensorboard_passes_with_the_package_installed():
    assert check_tensorboard() is None


def run_python(code):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_check_tensorboard_without_the_package_is_one_line():
    pytest.importorskip("jax")
    out = run_python(
        """
        import sys
        sys.modules["tensorboard"] = None  # as if it were not installed
        from kernelkit import checkpoints
        try:
            checkpoints.check_tensorboard()
        except ValueError as e:
            print(repr(str(e)))
        else:
            print("no error")
        try:
            checkpoints.tensorboard_callback("tiny", root=sys.argv[0] + "-unused")
        except ValueError as e:
            print("callback:", "tensorboard package" in str(e))
        print("tensorflow imported:", "tensorflow" in sys.modules)
        """
    )
    lines = out.strip().splitlines()
    message = eval(lines[0])  # the repr printed above
    assert message.startswith("--tensorboard needs the tensorboard package, which is not installed")
    assert "pip install tensorboard" in message
    assert "TensorFlow itself is not needed" in message
    assert "\n" not in message
    assert lines[1:] == ["callback: True", "tensorflow imported: False"]


def test_jax_fit_writes_events_without_importing_tensorflow(tmp_path):
    pytest.importorskip("jax")
    out = run_python(
        f"""
        import sys
        import numpy as np
        import keras
        from kernelkit import checkpoints

        callback, logdir = checkpoints.tensorboard_callback(
            "tiny", root={str(tmp_path)!r}, update_freq=2
        )
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        history = model.fit(x, x[:, :1], epochs=2, batch_size=8, validation_split=0.25,
                            verbose=0, callbacks=[callback])
        print(keras.backend.backend(), type(callback).__name__)
        print("tensorflow imported:", "tensorflow" in sys.modules)
        print(logdir)
        print(history.history["loss"])
        """
    )
    lines = out.strip().splitlines()
    assert lines[:2] == ["jax ScalarTensorBoard", "tensorflow imported: False"]
    train = read(lines[2], "train")
    assert values_of(train["epoch_loss"]) == approx(eval(lines[3]))
    assert epochs_of(train["batch_loss"]) == [2, 4, 6, 8, 10, 12]
