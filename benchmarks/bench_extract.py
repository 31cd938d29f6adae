"""How long kernelkit.extract takes next to model.predict on the same input.

The target (issue): extracting every layer of a ~10-layer CNN for 2,000
digits images costs at most 1.5 x ``model.predict`` on the same input.

All timings come from one run, with the methods interleaved in each
repetition so that a slow spell on a shared machine hits all of them; the
figures are medians. Every method is called once before timing, so tracing
and compilation are excluded for all of them alike (each caches its compiled
function on the model).

Methods:
  predict     model.predict(x, batch_size)                         (the baseline)
  extract     kernelkit.extract(model, x, batch_size)               (every layer)
  submodel    keras.Model(model.inputs, [l.output ...]).predict(x)  (Keras's own recipe,
              the sub-model built once; Sequential/Functional only)

A second table does the same on keras.applications models (weights=None, so
nothing is downloaded; 96x96x3 inputs, 24 samples, all layers), with the copy
path as it was before issue 18 (keras.ops.convert_to_numpy, then the column's
copy) next to today's (a zero-copy view on the TensorFlow CPU, then one copy).

Run:
  TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=. .venv/bin/python benchmarks/bench_extract.py [--repeats 9]
      [--applications MobileNetV2,EfficientNetB0,DenseNet121,NASNetMobile] [--app-repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

import kernelkit


def digits(count: int) -> np.ndarray:
    images = load_digits().images.astype("float32") / 16.0  # 1,797 images, 8x8
    return np.resize(images, (count, 8, 8))[..., None]  # repeated up to `count`


def cnn() -> keras.Model:
    """Ten layers: four convolutions, batch norm, pooling, dense head with dropout."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.BatchNormalization(name="bn"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv4"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(10, activation="softmax", name="logits"),
        ],
        name="digits_cnn",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--applications",
                        default="MobileNetV2,EfficientNetB0,DenseNet121,NASNetMobile",
                        help="keras.applications models to time, comma-separated ('' for none)")
    parser.add_argument("--app-repeats", type=int, default=5)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x = digits(args.samples)
    model = cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    submodel = keras.Model(model.inputs, [layer.output for layer in model.layers])
    size = args.batch_size

    methods = {
        "predict": lambda: model.predict(x, batch_size=size, verbose=0),
        "extract": lambda: kernelkit.extract(model, x, batch_size=size),
        "submodel": lambda: submodel.predict(x, batch_size=size, verbose=0),
    }
    # Warm-up: trace/compile each method once, and check extract against Keras.
    results = {name: run() for name, run in methods.items()}
    for layer, reference in zip(model.layers, results["submodel"], strict=True):
        np.testing.assert_allclose(results["extract"][layer.name], reference, rtol=1e-5, atol=1e-5)

    def mib(value) -> float:
        leaves = value.values() if isinstance(value, dict) else value
        leaves = leaves if isinstance(leaves, (list, tuple, type({}.values()))) else [leaves]
        return sum(np.asarray(a).nbytes for a in leaves) / 2**20

    sizes = {name: mib(result) for name, result in results.items()}

    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():  # interleaved
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}

    print(
        f"keras {keras.__version__} ({keras.backend.backend()}), {platform.machine()}, "
        f"{os.cpu_count()} cpus; {len(model.layers)}-layer CNN, x {x.shape}, "
        f"batch_size {size}, {args.repeats} interleaved repeats, medians"
    )
    print(f"extract returns {len(results['extract'])} layers")
    for name, median in medians.items():
        low, high = min(times[name]), max(times[name])
        ratio = median / medians["predict"]
        print(
            f"  {name:<9} {median * 1000:8.1f} ms  (min {low * 1000:.1f}, max {high * 1000:.1f})"
            f"  ratio to predict {ratio:.2f}  returns {sizes[name]:.2f} MiB"
        )
    ratio = medians["extract"] / medians["predict"]
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"extract / predict = {ratio:.2f} ({verdict} the <= 1.5 target)")
    if args.applications:
        applications(args.applications.split(","), args.app_repeats)


def _copying_fetch(self, outputs):
    """The fetch before issue 18: convert_to_numpy copies, then the column copies again."""
    if self._backend == "jax":
        import jax

        return list(jax.device_get(outputs))
    return [keras.ops.convert_to_numpy(t) for t in outputs]


def applications(names: list[str], repeats: int) -> None:
    """All-layer extraction next to predict on keras.applications models (CPU figures)."""
    from kernelkit import extraction

    x = np.random.default_rng(0).random((24, 96, 96, 3), dtype="float32")
    print(f"\nkeras.applications, weights=None, x {x.shape}, batch_size 32, all layers, "
          f"{repeats} interleaved repeats, medians (min-max)")
    print("| model | layers | predict | extract | extract / predict | before (2 copies) / predict "
          "| activations |")
    print("|---|---|---|---|---|---|---|")
    today = extraction._Pass.fetch
    for name in names:
        model = getattr(keras.applications, name)(weights=None, input_shape=x.shape[1:])
        # partial binds this loop's model (a closure would read whatever `model` names later).
        methods = {
            "predict": functools.partial(model.predict, x, batch_size=32, verbose=0),
            "extract": functools.partial(kernelkit.extract, model, x, batch_size=32),
            "before": functools.partial(kernelkit.extract, model, x, batch_size=32),
        }
        times: dict[str, list[float]] = {k: [] for k in methods}
        result = None
        for _ in range(repeats + 1):  # the first round traces: not counted
            for kind, run in methods.items():
                extraction._Pass.fetch = _copying_fetch if kind == "before" else today
                try:
                    start = time.perf_counter()
                    out = run()
                    times[kind].append(time.perf_counter() - start)
                finally:
                    extraction._Pass.fetch = today
                if kind == "extract":
                    result = out
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        ratios = [e / p for e, p in zip(times["extract"][1:], times["predict"][1:], strict=True)]
        before = [e / p for e, p in zip(times["before"][1:], times["predict"][1:], strict=True)]
        size = sum(np.asarray(a).nbytes for a in _leaves(result)) / 2**20
        print(f"| {name} | {len(result)} | {med['predict'] * 1e3:.0f} ms | "
              f"{med['extract'] * 1e3:.0f} ms | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {statistics.median(before):.2f} | "
              f"{size:.0f} MiB |", flush=True)
        del model, result, methods, run, out  # the partials hold the model too
        keras.backend.clear_session()


def _leaves(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


if __name__ == "__main__":
    main()
