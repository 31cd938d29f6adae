"""A real MirroredStrategy fit over two logical CPU devices, in its own process.

Logical devices must be configured before TensorFlow runs any op, so this runs
in a fresh interpreter (tests/test_mirrored.py starts it). It prints one line
``RESULT {json}`` at the end; add steps to ``main`` and keys to ``result`` to
check more under the same strategy (live progress, freezing, extraction...).

Usage: python tests/_scripts/mirrored_fit.py [--check-upstream]
  --check-upstream  also fit once with steps_per_execution=4 without
                    prepare_fit, to record whether keras-team/keras#19246 still fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import kernelkit
from kernelkit.strategy import describe, prepare_fit, scope


def data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :4].sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def build_model(steps_per_execution: int):
    import keras

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def main(argv: list[str]) -> dict:
    result: dict = {}
    # 1. Detection must not start TensorFlow's runtime: configuring logical
    #    devices afterwards still has to work.
    before = kernelkit.devices()
    result["devices_before"] = list(before.devices)
    result["detect_seconds"] = before.seconds

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    # 2. strategy("mirrored"): the cached report still lists one CPU, so this also
    #    exercises the re-detection.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strat = kernelkit.strategy("mirrored")
    result["strategy_notes"] = [str(w.message) for w in caught]
    result["devices_after"] = list(kernelkit.devices().devices)
    result["describe"] = list(describe(strat))
    result["auto"] = describe(kernelkit.strategy("auto"))[0]

    x, y = data()
    with scope(strat):
        model = build_model(steps_per_execution=4)

    # 3. An uneven batch is refused before training, and leaves the model alone.
    try:
        prepare_fit(model, strat, {"x": x, "y": y, "batch_size": 31})
        result["uneven_batch_error"] = None
    except ValueError as error:
        result["uneven_batch_error"] = str(error)
    result["steps_per_execution_after_refusal"] = int(model.steps_per_execution)

    # 4. prepare_fit forces steps_per_execution=1 (keras-team/keras#19246) and the fit works.
    fit_kwargs = {
        "x": x,
        "y": y,
        "batch_size": 32,
        "epochs": 3,
        "verbose": 0,
        "validation_split": 0.25,
    }
    kwargs, notes = prepare_fit(model, strat, fit_kwargs)
    result["prepare_notes"] = notes
    result["steps_per_execution"] = int(model.steps_per_execution)
    start = time.perf_counter()
    with scope(strat):
        history = model.fit(**kwargs)
    result["fit_seconds"] = round(time.perf_counter() - start, 3)
    result["loss"] = [float(v) for v in history.history["loss"]]
    result["val_loss"] = [float(v) for v in history.history["val_loss"]]
    result["model_replicas"] = int(model.distribute_strategy.num_replicas_in_sync)

    # 5. kernelkit under the same strategy: a %%kmodel-style registered model gets
    #    live progress, a freeze takes effect, an extraction works.
    import keras

    from kernelkit import events as ev

    with scope(strat):
        live_model = build_model(steps_per_execution=1)
    kernelkit.register("mirrored_model", live_model, strategy=strat)
    got: list = []
    live = kernelkit.LiveProgress(display="none", sink=got.append)
    kernelkit.fit(live_model, x, y, batch_size=32, epochs=2, callbacks=[live])
    begin = next(e for e in got if isinstance(e, ev.TrainBegin))
    result["live_strategy"] = begin.strategy
    result["live_replicas"] = begin.replicas
    result["live_end"] = got[-1].state
    first = live_model.layers[0].name
    report = kernelkit.freeze(live_model, first)
    frozen_before = [w.numpy().copy() for w in live_model.layers[0].weights]
    kernelkit.fit(live_model, x, y, batch_size=32, epochs=1)
    result["frozen_unchanged"] = all(
        np.array_equal(a, w.numpy())
        for a, w in zip(frozen_before, live_model.layers[0].weights, strict=True))
    result["trainable_weights_after_freeze"] = len(live_model.trainable_weights)
    result["freeze_report"] = repr(report).splitlines()[0]
    features = kernelkit.extract(live_model, x[:40], batch_size=8)
    result["extract_shapes"] = [list(v.shape) for v in features.values()]
    first_layer = keras.Model(live_model.inputs, live_model.layers[0].output)
    expected = first_layer.predict(x[:40], verbose=0)
    result["extract_matches"] = bool(np.allclose(features[first], expected, atol=1e-5))

    # 6. Optional: is the upstream bug still there?
    if "--check-upstream" in argv:
        with scope(strat):
            raw = build_model(steps_per_execution=4)
        try:
            raw.fit(x, y, batch_size=32, epochs=1, verbose=0)
            result["upstream_19246_fails"] = False
        except Exception as error:  # InvalidArgumentError while it is open
            result["upstream_19246_fails"] = type(error).__name__
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1:])), flush=True)
