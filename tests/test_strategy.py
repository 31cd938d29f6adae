"""kernelkit.strategy: plans on fake machines, real builds, TPU failures, TF_CONFIG, JAX."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from kernelkit.devices import FakeProbe, detect
from kernelkit.strategy import (
    SPECS,
    StrategyNote,
    describe,
    plan,
    prepare_fit,
    resolve,
    scope,
    strategy,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "_scripts"
VERSIONS = {"python": "3.11", "keras": "3", "tensorflow": "2", "jax": "0"}


def machine(environ=None, **kwargs):
    return detect(FakeProbe(environ=environ or {}, modules=(), versions=VERSIONS, **kwargs))


COLAB_TPU = {"COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v2-8"}


def run_script(args, env=None, timeout=120):
    """Runs a tests/_scripts file in a fresh interpreter and returns its RESULT json."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    full_env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, *map(str, args)],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# -- plan: pure decisions on fake machines ----------------------------------------------


@pytest.mark.parametrize(
    ("report_kwargs", "kind", "text"),
    [
        ({"environ": COLAB_TPU}, "tpu", "TPUStrategy (v2-8, 8 cores)"),
        (
            {
                "environ": {
                    "KAGGLE_KERNEL_RUN_TYPE": "x",
                    "ISTPUVM": "1",
                    "TPU_ACCELERATOR_TYPE": "v3-8",
                }
            },
            "tpu",
            "TPUStrategy (v3-8, 8 cores)",
        ),
        ({"environ": {"COLAB_TPU_ADDR": "10.0.0.2:8470"}}, "tpu", "TPUStrategy (v2-8, 8 cores)"),
        ({"environ": {"TPU_NAME": "my-tpu"}}, "tpu", "TPUStrategy (TPU_NAME=my-tpu)"),
        ({"gpus": 2}, "mirrored", "MirroredStrategy over GPU:0, GPU:1"),
        ({"gpus": 1}, "default", "default strategy (GPU:0)"),
        ({}, "default", "default strategy"),
        ({"devices": ("CPU:0", "CPU:1")}, "default", "default strategy"),  # auto never mirrors CPUs
    ],
)
def test_auto(report_kwargs, kind, text):
    chosen = plan("auto", machine(**report_kwargs))
    assert (chosen.kind, chosen.text) == (kind, text)


def test_tpu_plan_carries_the_resolver_argument():
    assert plan("auto", machine(COLAB_TPU)).tpu_address == "local"
    assert (
        plan("tpu", machine({"COLAB_TPU_ADDR": "10.0.0.2:8470"})).tpu_address
        == "grpc://10.0.0.2:8470"
    )
    assert plan("tpu", machine({"TPU_NAME": "x"})).tpu_address is None


@pytest.mark.parametrize(
    ("spec", "report_kwargs", "kind", "devices"),
    [
        ("gpu", {"gpus": 2}, "mirrored", ("GPU:0", "GPU:1")),
        ("gpu", {"gpus": 1}, "default", ()),
        ("mirrored", {"gpus": 1}, "mirrored", ("GPU:0",)),
        ("mirrored", {"devices": ("CPU:0", "CPU:1")}, "mirrored", ("CPU:0", "CPU:1")),
        ("cpu", {"gpus": 2}, "one_device", ("CPU:0",)),
        ("cpu", {}, "default", ()),
        (" TPU ", {"environ": COLAB_TPU}, "tpu", ()),
    ],
)
def test_explicit_specs(spec, report_kwargs, kind, devices):
    chosen = plan(spec, machine(**report_kwargs))
    assert (chosen.kind, chosen.devices) == (kind, devices)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            "tpu",
            "No TPU found for strategy 'tpu': on Colab choose Runtime > Change runtime type > TPU",
        ),
        (
            "gpu",
            "No GPU visible to TensorFlow for strategy 'gpu': "
            "on Colab choose Runtime > Change runtime type > GPU",
        ),
        (
            "mirrored",
            "MirroredStrategy needs two or more devices, found CPU:0: "
            "get GPUs (on Colab choose Runtime > Change runtime type",
        ),
    ],
)
def test_missing_hardware_is_one_clear_line(spec, needle):
    with pytest.raises(ValueError) as raised:
        plan(spec, machine())
    message = str(raised.value)
    assert message.startswith(needle)
    assert "\n" not in message


def test_gpus_tensorflow_cannot_use_are_named_in_the_error():
    with pytest.raises(
        ValueError, match=r"1 GPU\(s\) here, but the tensorflow build cannot use them"
    ):
        plan("gpu", machine(gpus=[("Tesla T4", 15360)], devices=("CPU:0",)))


@pytest.mark.parametrize("spec", ["tpus", "", "Mirrored-2", None])
def test_unknown_spec_lists_the_allowed_ones(spec):
    with pytest.raises(ValueError, match="use one of auto, cpu, gpu, mirrored, tpu") as raised:
        plan(spec, machine())
    assert "\n" not in str(raised.value)
    assert SPECS == ("auto", "cpu", "gpu", "mirrored", "tpu")


def test_tf_config_plans():
    two = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'
    one = '{"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}'
    with pytest.raises(ValueError, match=r"keras-team/keras#20585.*--workers N"):
        plan("auto", machine({"TF_CONFIG": two}))
    assert plan("auto", machine({"TF_CONFIG": one})).kind == "multi_worker"
    explicit = plan("mirrored", machine({"TF_CONFIG": two}, gpus=2))
    assert explicit.kind == "mirrored" and explicit.notes == (
        "TF_CONFIG is ignored by strategy 'mirrored'",
    )


@pytest.mark.parametrize(
    ("spec", "devices", "kind", "text"),
    [
        ("auto", ("CPU:0", "CPU:1"), "data_parallel", "DataParallel over 2 CPU devices"),
        ("auto", ("CPU:0",), "default", "default (one device)"),
        (
            "auto",
            ("GPU:0", "GPU:1", "GPU:2", "GPU:3"),
            "data_parallel",
            "DataParallel over 4 GPU devices",
        ),
        (
            "tpu",
            tuple(f"TPU:{i}" for i in range(8)),
            "data_parallel",
            "DataParallel over 8 TPU devices",
        ),
        ("gpu", ("GPU:0",), "default", "default (one device)"),
        ("mirrored", ("CPU:0", "CPU:1"), "data_parallel", "DataParallel over 2 CPU devices"),
        ("cpu", ("GPU:0", "GPU:1"), "one_device", "DataParallel over CPU:0"),
    ],
)
def test_jax_plans(spec, devices, kind, text):
    chosen = plan(spec, machine(backend="jax", devices=devices))
    assert (chosen.kind, chosen.text, chosen.backend) == (kind, text, "jax")


def test_jax_missing_hardware():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        plan("mirrored", machine(backend="jax", devices=("CPU:0",)))
    with pytest.raises(ValueError, match=r"JAX sees none: pip install 'jax\[tpu\]'"):
        plan("tpu", machine(COLAB_TPU, backend="jax", devices=("CPU:0",)))


def test_torch_backend():
    assert (
        plan("auto", machine(backend="torch", gpus=2))
        .notes[0]
        .startswith("Keras's torch backend trains on one device")
    )
    with pytest.raises(ValueError, match="needs Keras's tensorflow or jax backend"):
        plan("mirrored", machine(backend="torch", gpus=2))


# -- resolve: real TensorFlow builds and the TPU failure paths --------------------------

keras = pytest.importorskip("keras")
try:
    import tensorflow as tf
except ImportError:  # the JAX leg has no TensorFlow: what needs it is marked `tensorflow`
    tf = None


def needs_tf(test):
    """tf.distribute itself: the TensorFlow leg, on Keras's TensorFlow backend."""
    on_tf = pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="TensorFlow backend")
    return pytest.mark.tensorflow(on_tf(test))


def tiny_fit(model_strategy):
    with scope(model_strategy):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(
            np.ones((16, 4), "float32"),
            np.ones((16, 1), "float32"),
            batch_size=8,
            epochs=1,
            verbose=0,
        )
    return history.history["loss"][0]


@needs_tf
def test_tpu_vm_not_found_falls_back_in_auto(monkeypatch):
    # A fake Colab TPU VM: the real TPUClusterResolver(tpu="local") is built and the
    # real initialize_tpu_system raises NotFoundError, since this machine has no TPU.
    report = machine(COLAB_TPU)
    resolved = resolve("auto", report)
    assert resolved.text == "default" and resolved.replicas == 1
    assert resolved.strategy is tf.distribute.get_strategy()
    assert resolved.notes == (
        "TPU found but not started (NotFoundError: TPUs not found in the "
        "cluster); using the default strategy",
    )
    assert np.isfinite(tiny_fit(resolved.strategy))  # no crash: training still works
    with pytest.warns(StrategyNote, match="TPU found but not started"):
        assert strategy("auto", report) is tf.distribute.get_strategy()


@needs_tf
def test_tpu_name_resolver_error_falls_back_in_auto(monkeypatch):
    # The probe claims TPU_NAME; the real environment has none, so the real
    # TPUClusterResolver() raises ValueError at once.
    monkeypatch.delenv("TPU_NAME", raising=False)
    resolved = resolve("auto", machine({"TPU_NAME": "gone"}))
    assert resolved.notes == (
        "TPU found but not started (ValueError: Please provide a TPU Name to connect to); "
        "using the default strategy",
    )


@needs_tf
def test_explicit_tpu_that_does_not_start_is_one_clear_line():
    with pytest.raises(ValueError) as raised:
        resolve("tpu", machine(COLAB_TPU))
    message = str(raised.value)
    assert message.startswith(
        "TPU found (TPU VM: COLAB_TPU_1VM=1, TPU_ACCELERATOR_TYPE=v2-8) but TensorFlow could "
        "not start it: NotFoundError: TPUs not found in the cluster. Restart the runtime and call "
        "kernelkit.strategy('tpu') before any other TensorFlow code."
    )
    assert "\n" not in message


@needs_tf
def test_resolve_on_this_machine_is_the_default_strategy():
    report = machine()
    resolved = resolve("auto", report)
    assert (resolved.strategy, resolved.text, resolved.replicas, resolved.notes) == (
        tf.distribute.get_strategy(),
        "default",
        1,
        (),
    )
    assert strategy("cpu", report) is tf.distribute.get_strategy()


@needs_tf
def test_one_device_and_mirrored_builds_are_cached():
    one = resolve("cpu", machine(gpus=1))  # a GPU "exists", so cpu pins CPU:0
    assert one.text == "OneDeviceStrategy (CPU:0)" and one.replicas == 1
    assert resolve("cpu", machine(gpus=1)).strategy is one.strategy
    assert np.isfinite(tiny_fit(one.strategy))
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert describe(mirrored) == ("MirroredStrategy (1 replica)", 1)


@pytest.mark.tensorflow
def test_describe_defaults():
    assert describe(None) == ("default", 1)
    assert describe(tf.distribute.get_strategy()) == ("default", 1)


def test_scope_of_none_is_a_no_op():
    with scope(None) as entered:
        assert entered is None


@pytest.mark.tensorflow  # resolve builds a real tf.distribute.MirroredStrategy
def test_strategy_redetects_when_hardware_seems_missing(monkeypatch):
    import kernelkit.devices as devices_module

    calls = []
    real_detect = devices_module.detect

    def counting_detect(probe=None):
        calls.append(probe)
        return real_detect(FakeProbe(environ={}, modules=(), versions=VERSIONS, gpus=2))

    monkeypatch.setattr(devices_module, "_REPORT", machine())  # a stale report: 1 CPU
    monkeypatch.setattr(devices_module, "detect", counting_detect)
    chosen = resolve("mirrored", devices_module.devices(refresh=True)).plan
    assert chosen.kind == "mirrored" and calls == [None]


# -- prepare_fit ------------------------------------------------------------------------


def compiled(steps_per_execution=1):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=steps_per_execution)
    return model


@needs_tf
def test_prepare_fit_default_strategy_changes_nothing():
    model = compiled(steps_per_execution=4)
    kwargs = {"x": np.ones((10, 4)), "y": np.ones((10, 1)), "batch_size": 3}
    adjusted, notes = prepare_fit(model, tf.distribute.get_strategy(), kwargs)
    assert adjusted == kwargs and adjusted is not kwargs and notes == []
    assert model.steps_per_execution == 4


@needs_tf
def test_prepare_fit_mirrored_forces_one_step_per_execution():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with mirrored.scope():
        model = compiled(steps_per_execution=4)
    x, y = np.ones((32, 4), "float32"), np.ones((32, 1), "float32")
    adjusted, notes = prepare_fit(model, mirrored, {"x": x, "y": y, "epochs": 1, "verbose": 0})
    assert notes == [
        "MirroredStrategy (1 replica): steps_per_execution 4 -> 1, since it fails "
        "inside fit otherwise (keras-team/keras#19246)"
    ]
    assert model.steps_per_execution == 1
    with mirrored.scope():
        assert np.isfinite(model.fit(**adjusted).history["loss"][0])


@needs_tf
def test_prepare_fit_refuses_a_model_built_outside_the_scope():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = compiled(steps_per_execution=4)
    with pytest.raises(ValueError, match=r"built outside MirroredStrategy \(1 replica\)'s scope"):
        prepare_fit(model, mirrored, {})
    assert model.steps_per_execution == 4  # nothing changed


class FakeTPUStrategyV2:
    """Stands in for tf.distribute.TPUStrategy (matched by class name)."""

    num_replicas_in_sync = 8


FakeTPUStrategyV2.__name__ = "TPUStrategyV2"


def stand_in_model(steps_per_execution=1):
    return types.SimpleNamespace(
        steps_per_execution=steps_per_execution,
        train_function=object(),
        test_function=None,
        predict_function=None,
    )


def test_prepare_fit_tpu_raises_steps_per_execution_and_notes_odd_batches():
    model = stand_in_model()
    _, notes = prepare_fit(model, FakeTPUStrategyV2(), {"x": np.zeros((1000, 4)), "batch_size": 60})
    assert model.steps_per_execution == 17 and model.train_function is None  # ceil(1000/60) < 32
    assert notes == [
        "batch_size 60 does not split evenly over TPUStrategy (8 replicas): "
        "use a multiple of 8, e.g. 64",
        "TPUStrategy (8 replicas): steps_per_execution 1 -> 17 (fewer host round trips); "
        "compile with another value to choose yours",
    ]
    model = stand_in_model(steps_per_execution=4)
    assert (
        prepare_fit(model, FakeTPUStrategyV2(), {"x": np.zeros((1024, 4)), "batch_size": 64})[1]
        == []
    )
    assert model.steps_per_execution == 4  # the user's choice stays


# -- subprocesses: TF_CONFIG, real multi-worker cluster, JAX -----------------------------


@pytest.mark.tensorflow  # MultiWorkerMirroredStrategy in a child process
def test_tf_config_with_two_workers_refuses_at_once(capsys):
    ports = free_ports(2)
    start = time.perf_counter()
    result = run_script([SCRIPTS / "multiworker.py", "auto", *ports], timeout=90)
    with capsys.disabled():
        print(
            f"\n[tf_config] refused in {result['seconds']} s, "
            f"process {time.perf_counter() - start:.1f} s; "
            f"1-worker MWMS built in {result['single_seconds']} s"
        )
    assert result["workers"] == 2
    assert result["error"].startswith(
        "TF_CONFIG is set: Keras 3 cannot fit under "
        "MultiWorkerMirroredStrategy across 2 workers (keras-team/keras#20585)"
    )
    assert "--workers N" in result["error"]
    assert result["seconds"] < 5  # it did not wait for peers
    assert result["single_describe"] == ["MultiWorkerMirroredStrategy (1 worker, 1 replica)", 1]


@pytest.mark.tensorflow
@pytest.mark.slow  # two TensorFlow processes: ~10 s on 2 idle cores
def test_real_two_worker_cluster_is_refused_before_fit(capsys):
    ports = [str(p) for p in free_ports(2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPTS / "multiworker.py"), "worker", str(i), *ports],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert proc.returncode == 0 and lines, out[-2000:] + err[-4000:]
            results.append(json.loads(lines[-1][7:]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    with capsys.disabled():
        print(
            f"\n[multiworker] 2 workers formed the cluster in "
            f"{max(r['cluster_seconds'] for r in results)} s; "
            f"both done in {time.perf_counter() - start:.1f} s"
        )
    for result in results:
        assert result["describe"] == ["MultiWorkerMirroredStrategy (2 workers, 2 replicas)", 2]
        assert result["error"].startswith(
            "Keras 3 cannot fit under MultiWorkerMirroredStrategy across "
            "2 workers (keras-team/keras#20585)"
        )


def test_jax_backend_data_parallel_over_two_devices(capsys):
    result = run_script(
        [SCRIPTS / "jax_fit.py"],
        env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    with capsys.disabled():
        print(
            f"\n[jax] detection {result['detect_warm_seconds'] * 1e3:.1f} ms, "
            f"fit {result['fit_seconds']} s"
        )
    assert result["backend"] == "jax"
    assert result["devices"] == ["CPU:0", "CPU:1"]
    assert result["tensorflow_imported_by_devices"] is False
    assert result["tensorflow_imported"] is False
    assert result["strategy_class"] == "DataParallel"
    assert result["describe"] == ["DataParallel (2 devices)", 2]
    assert (
        result["distribution_before"],
        result["distribution_inside"],
        result["distribution_after"],
    ) == ("None", "DataParallel", "None")
    assert result["errors"]["odd_batch"].startswith(
        "batch_size 31 does not split evenly over DataParallel (2 devices)"
    )
    assert result["errors"]["odd_last_batch"] == (
        "The last batch of 255 training samples in batches of 32 would have 31 samples, "
        "which Keras cannot split over DataParallel (2 devices): use 254 samples (x[:254])."
    )
    assert result["prepare_notes"] == [] and result["steps_per_execution"] == 4
    assert len(result["loss"]) == 3 and all(np.isfinite(result["loss"]))
