"""A real MirroredStrategy fit across two logical CPU devices (in a subprocess).

Logical devices must be configured before TensorFlow runs any op, which this
test process cannot promise, so tests/_scripts/mirrored_fit.py does the work in
a fresh interpreter and prints one RESULT json line.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_scripts" / "mirrored_fit.py"

pytestmark = pytest.mark.tensorflow  # tf.distribute.MirroredStrategy in the child


@pytest.fixture(scope="module")
def result():
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": "tensorflow",
    }
    env.pop("TF_CONFIG", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check-upstream"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    data = json.loads(lines[-1][len("RESULT ") :])
    data["process_seconds"] = time.perf_counter() - start
    return data


def test_detection_does_not_lock_logical_devices(result):
    # devices() ran before set_logical_device_configuration, which still worked.
    assert result["devices_before"] == ["CPU:0"]
    assert result["devices_after"] == ["CPU:0", "CPU:1"]


def test_two_replicas_reported(result):
    assert result["describe"] == ["MirroredStrategy (2 replicas)", 2]
    assert result["model_replicas"] == 2
    assert result["strategy_notes"] == []
    assert result["auto"] == "default"  # auto never mirrors split CPUs


def test_prepare_fit_forces_one_step_per_execution_and_fit_succeeds(result, capsys):
    with capsys.disabled():
        print(
            f"\n[mirrored] fit {result['fit_seconds']} s, "
            f"whole process {result['process_seconds']:.1f} s; "
            f"keras#19246 still fails without the fix: {result['upstream_19246_fails']}"
        )
    assert result["prepare_notes"] == [
        "MirroredStrategy (2 replicas): steps_per_execution 4 -> 1, since it fails inside fit "
        "otherwise (keras-team/keras#19246)"
    ]
    assert result["steps_per_execution"] == 1
    assert len(result["loss"]) == 3 and all(math.isfinite(v) for v in result["loss"])
    assert result["loss"][-1] < result["loss"][0]
    assert len(result["val_loss"]) == 3


def test_uneven_batch_is_refused_before_training(result):
    assert result["uneven_batch_error"] == (
        "batch_size 31 does not split evenly over MirroredStrategy (2 replicas): use a multiple "
        "of 2, e.g. 32."
    )
    assert result["steps_per_execution_after_refusal"] == 4  # refused: nothing changed


def test_kernelkit_features_work_under_mirrored_strategy(result):
    # live progress reports the strategy and its replicas, and ends honestly
    assert result["live_strategy"] == "MirroredStrategy (2 replicas)"
    assert result["live_replicas"] == 2
    assert result["live_end"] == "finished"
    # a freeze takes effect under the strategy
    assert result["frozen_unchanged"] is True
    assert result["trainable_weights_after_freeze"] == 2
    # extraction returns every layer and matches the sub-model
    assert result["extract_shapes"] == [[40, 16], [40, 1]]
    assert result["extract_matches"] is True
