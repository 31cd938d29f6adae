"""The backend-neutral tests once more under KERAS_BACKEND=jax (issue: Keras's other backends).

Keras picks its backend once per process, so they run in a child pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NEUTRAL = [
    "test_callback.py",
    "test_history.py",
    "test_magics.py",
    "test_freezing.py",
    "test_views_layers.py",
    "test_extraction.py",
    "test_rnn_state.py",
    "test_views_states.py",
]


@pytest.mark.slow
def test_backend_neutral_suite_passes_under_jax():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    files = [str(HERE / f) for f in NEUTRAL if (HERE / f).exists()]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        capture_output=True, text=True, env=env, timeout=1200, cwd=HERE.parent,
    )
    tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
    assert proc.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail
