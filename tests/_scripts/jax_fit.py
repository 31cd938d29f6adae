"""kernelkit under KERAS_BACKEND=jax with two host CPU devices, in its own process.

The test (tests/test_strategy.py) starts it with KERAS_BACKEND=jax and
XLA_FLAGS=--xla_force_host_platform_device_count=2, which must be set before
JAX starts. Prints one line ``RESULT {json}``; add steps to ``main`` to check more.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import kernelkit
from kernelkit.strategy import describe, prepare_fit, scope


def main() -> dict:
    result: dict = {}
    report = kernelkit.devices()
    result["backend"] = report.backend
    result["devices"] = list(report.devices)
    result["detect_warm_seconds"] = kernelkit.devices(refresh=True).seconds
    result["tensorflow_imported_by_devices"] = "tensorflow" in sys.modules

    strat = kernelkit.strategy("auto")
    result["strategy_class"] = type(strat).__name__
    result["describe"] = list(describe(strat))

    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = x[:, :4].sum(axis=1, keepdims=True)
    result["distribution_before"] = repr(keras.distribution.distribution())
    with scope(strat):
        result["distribution_inside"] = type(keras.distribution.distribution()).__name__
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse", steps_per_execution=4)
        errors = {}
        for name, kwargs in {
            "odd_batch": {"x": x, "y": y, "batch_size": 31},
            "odd_last_batch": {"x": x[:255], "y": y[:255], "batch_size": 32},
        }.items():
            try:
                prepare_fit(model, strat, kwargs)
                errors[name] = None
            except ValueError as error:
                errors[name] = str(error)
        result["errors"] = errors
        kwargs, notes = prepare_fit(
            model,
            strat,
            {"x": x, "y": y, "batch_size": 32, "epochs": 3, "verbose": 0, "validation_split": 0.25},
        )
        result["prepare_notes"] = notes
        start = time.perf_counter()
        history = model.fit(**kwargs)
        result["fit_seconds"] = round(time.perf_counter() - start, 3)
    result["distribution_after"] = repr(keras.distribution.distribution())
    result["steps_per_execution"] = int(model.steps_per_execution)
    result["loss"] = [float(v) for v in history.history["loss"]]
    result["sharding"] = str(model.layers[0].kernel.value.sharding.spec)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
