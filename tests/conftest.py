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

import queue
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest


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


class Kernel:
    """A real kernel (jupyter_client) with helpers that wait for states, never sleep."""

    def __init__(self, km: Any, kc: Any) -> None:
        self.km = km
        self.kc = kc

    def execute(self, code: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict]]:
        """Runs ``code``; returns (the execute reply's content, iopub messages of the cell)."""
        msg_id = self.kc.execute(code)
        return self.collect(msg_id, timeout)

    def collect(self, msg_id: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict]]:
        """Gathers iopub messages of ``msg_id`` until the kernel is idle again."""
        deadline = time.monotonic() + timeout
        messages: list[dict] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"kernel did not finish within {timeout} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        return reply["content"], messages

    def wait_for(
        self, msg_id: str, predicate: Any, timeout: float = 120.0
    ) -> list[dict]:
        """Reads iopub until a message of the cell satisfies ``predicate``; returns what it read."""
        deadline = time.monotonic() + timeout
        seen: list[dict] = []
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if predicate(msg):
                return seen
        raise TimeoutError("the awaited message never came")

    @staticmethod
    def text(messages: list[dict]) -> str:
        """Everything the cell showed as text: streams, text/plain and errors."""
        parts = []
        for m in messages:
            c = m["content"]
            if m["msg_type"] == "stream":
                parts.append(c["text"])
            elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                parts.append(c["data"].get("text/plain", ""))
            elif m["msg_type"] == "error":
                parts.append(f"{c['ename']}: {c['evalue']}")
        return "\n".join(parts)


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
