"""The user's own tf.distribute strategy wins, and a TPU without TensorFlow is one line."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kernelkit.devices import FakeProbe, detect
from kernelkit.strategy import plan

COLAB_TPU = {"COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v5e-1"}


def test_tpustrategy_on_a_runtime_without_tensorflow_is_one_line_with_the_fix():
    # Colab's TPU runtime in 2026: a TPU, and no TensorFlow to drive it through TPUStrategy.
    report = detect(
        FakeProbe(environ=COLAB_TPU, modules=(), versions={"python": "3.12", "keras": "3.15"})
    )
    for spec in ("tpu", "auto"):
        with pytest.raises(ValueError) as err:
            plan(spec, report)
        assert str(err.value) == (
            "TPUStrategy needs TensorFlow, which this runtime does not have: set "
            "KERAS_BACKEND=jax before Keras is imported (kernelkit then trains on the TPU "
            "through keras.distribution), or pip install 'kernelkit[tensorflow]'."
        )


def test_the_same_tpu_under_jax_plans_data_parallel_without_tensorflow():
    report = detect(
        FakeProbe(
            environ=COLAB_TPU,
            modules=(),
            backend="jax",
            versions={"python": "3.12", "keras": "3.15", "jax": "0.10"},
            devices=["TPU:0"],
            device_kind="TPU v5 lite",
        )
    )
    assert plan("tpu", report).text == "default (one device)"
    assert dict(report.rows())["chips"] == "1 x TPU v5 lite (JAX sees them)"


@pytest.mark.tensorflow
@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="TF backend"
)
def test_a_strategy_scope_the_user_entered_is_used_and_named(ip):
    import keras
    import tensorflow as tf

    from kernelkit import session

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    rng = np.random.default_rng(0)
    ip.user_ns.update(keras=keras, x=rng.normal(size=(64, 4)).astype("float32"))
    cell = (
        "own = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
        "own.compile('sgd', 'mse')\n"
        "own.fit(x, x[:, :1], epochs=1)\n"
    )
    with strategy.scope():
        card = session.run_cell(ip, "own", cell)
    entry = session.registry._REGISTRY["own"]
    try:
        assert entry.strategy is strategy
        assert ip.user_ns["own"].distribute_strategy is strategy
        assert "strategy OneDeviceStrategy (CPU:0)" in repr(card)
        # "cpu" inside a OneDeviceStrategy over CPU:0 means the same thing: accepted.
        with strategy.scope():
            session.run_cell(ip, "own2", cell.replace("own", "own2"), strategy="cpu")
        assert session.registry._REGISTRY["own2"].strategy is strategy

    finally:
        session.unregister("own")
        session.unregister("own2")
