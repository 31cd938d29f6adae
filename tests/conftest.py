"""Shared fixtures: a raising IPython shell, tiny models, and a real kernel."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import atexit
import shutil
import tempfile

# Every registered fit is written to the run ledger (.kernelkit/ next to the notebook). The suite's
# fits, its kernels' and the tutorials' go to one temporary ledger instead, gone afterwards.
if "KERNELKIT_LEDGER" not in os.environ:
    _LEDGER = tempfile.mkdtemp(prefix="kernelkit-test-ledger-")
    os.environ["KERNELKIT_LEDGER"] = _LEDGER
    atexit.register(shutil.rmtree, _LEDGER, ignore_errors=True)

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _kernel import Kernel


@pytest.fixture(scope="session")
def ip() -> Iterator[Any]:
    """A real IPython shell with kernelkit loaded, whose cells raise on error.

    As jupysql's TestingShell does: ``ip.run_cell(code)`` returns the result
    after ``raise_error()``, so a failing cell fails the test.
    """
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "kernelkit")
    original = shell.run_cell

    def run_cell(code: str, **kwargs: Any) -> Any:
        result = original(code, **kwargs)
        result.raise_error()
        return result

    shell.run_cell_raising = run_cell
    yield shell


@pytest.fixture
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """256 samples of 4 features and a linear target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
    return x, y


@pytest.fixture
def tiny_model() -> Any:
    """A compiled Dense 4 -> 8 -> 1 regression model."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
        name="tiny",
    )
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A fresh python3 kernel of this environment; shut down after the test."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    try:
        yield Kernel(km, kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def pytest_configure(config: Any) -> None:
    # The kernel must be this environment's Python, whatever kernelspec is installed.
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    exe_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = exe_dir + os.pathsep + os.environ.get("PATH", "")
