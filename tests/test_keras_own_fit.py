"""Keras's own fit tests, with every ``Model.fit`` routed through kernelkit as in a cell.

The keras wheel ships its tests beside its modules. They run twice in fresh
interpreters, plainly and with ``tests/_keras_route.py`` routing ``Model.fit``
through kernelkit exactly as ``%%kmodel`` does; both runs must pass the same
tests. (grain and torch are not installed here: their data-adapter tests are
left out of both runs.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

FILES = [
    "trainers/trainer_test.py",
    "callbacks/callback_test.py",
    "callbacks/early_stopping_test.py",
    "callbacks/terminate_on_nan_test.py",
    "callbacks/learning_rate_scheduler_test.py",
    "callbacks/reduce_lr_on_plateau_test.py",
    "callbacks/csv_logger_test.py",
    "callbacks/lambda_callback_test.py",
    "callbacks/backup_and_restore_test.py",
    "callbacks/model_checkpoint_test.py",
]


def keras_tests(tmp_path, *plugin):
    import keras

    src = Path(keras.__file__).parent / "src"
    env = dict(os.environ, PYTHONPATH=str(HERE), TF_CPP_MIN_LOG_LEVEL="3")
    # Keras's tests, under Keras's own settings: without an ini of their own, pytest takes
    # kernelkit's pyproject (the common folder of a venv inside the checkout), and its
    # --strict-markers refuses Keras's markers.
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini),
         "--rootdir", str(tmp_path), *plugin,
         "-k", "not grain and not torch", *(str(src / f) for f in FILES)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500,
    )
    tail = done.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|skipped)", tail)}
    failed = sorted(re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M))
    return counts, failed, tail


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
    reason="runs once, in the TensorFlow leg (CI time)",
)
def test_keras_fit_tests_pass_with_fit_routed_through_kernelkit(tmp_path):
    baseline, baseline_failed, baseline_tail = keras_tests(tmp_path)
    routed, routed_failed, routed_tail = keras_tests(tmp_path, "-p", "_keras_route")
    assert baseline.get("passed", 0) > 150, baseline_tail  # the suite really ran
    assert routed_failed == baseline_failed == [], routed_tail
    assert routed == baseline, (baseline_tail, routed_tail)
