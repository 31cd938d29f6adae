"""TF_CONFIG and MultiWorkerMirroredStrategy, in processes that cannot hang the tests.

Usage:
  python tests/_scripts/multiworker.py auto PORT0 PORT1
      With TF_CONFIG naming two workers (nobody listens on the ports),
      kernelkit.strategy("auto") must refuse at once instead of waiting for peers;
      then with TF_CONFIG naming one worker it builds MultiWorkerMirroredStrategy.
  python tests/_scripts/multiworker.py worker INDEX PORT0 PORT1
      One of two real workers: the cluster forms, a model is built in scope, and
      prepare_fit must refuse before fit (keras-team/keras#20585).

Each prints one line ``RESULT {json}``. The tests run it under a timeout.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def tf_config(ports: list[str], index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def auto(ports: list[str]) -> dict:
    import kernelkit
    from kernelkit.strategy import describe

    result: dict = {}
    os.environ["TF_CONFIG"] = tf_config(ports, 0)
    report = kernelkit.devices()
    result["workers"] = report.workers
    result["report_notes"] = list(report.notes)
    start = time.perf_counter()
    try:
        kernelkit.strategy("auto")
        result["error"] = None
    except ValueError as error:
        result["error"] = str(error)
    result["seconds"] = round(time.perf_counter() - start, 3)

    os.environ["TF_CONFIG"] = tf_config(ports[:1], 0)
    kernelkit.devices(refresh=True)
    start = time.perf_counter()
    single = kernelkit.strategy("auto")
    result["single_seconds"] = round(time.perf_counter() - start, 3)
    result["single_describe"] = list(describe(single))
    return result


def worker(index: int, ports: list[str]) -> dict:
    os.environ["TF_CONFIG"] = tf_config(ports, index)
    import keras
    import numpy as np
    import tensorflow as tf

    from kernelkit.strategy import describe, prepare_fit, scope

    result: dict = {"index": index}
    start = time.perf_counter()
    strat = tf.distribute.MultiWorkerMirroredStrategy()
    result["cluster_seconds"] = round(time.perf_counter() - start, 3)
    result["describe"] = list(describe(strat))
    with scope(strat):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((16, 4), "float32")
    try:
        prepare_fit(model, strat, {"x": x, "y": x[:, :1], "batch_size": 8})
        result["error"] = None
    except ValueError as error:
        result["error"] = str(error)
    return result


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    out = auto(rest) if role == "auto" else worker(int(rest[0]), rest[1:])
    print("RESULT " + json.dumps(out), flush=True)
