"""What `pip install kernelkit` brings: its own needs, no TensorFlow (issue: TPUs in 2026)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

CORE = {"keras", "ipywidgets", "h5py", "numpy", "pyyaml"}


def requirements():
    """(name, extra or None) for every requirement in the installed metadata."""
    found = []
    for line in importlib.metadata.requires("kernelkit") or []:
        name = re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower()
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", line)
        found.append((name, extra.group(1) if extra else None))
    return found


def test_core_dependencies_are_what_kernelkit_itself_needs():
    core = {name for name, extra in requirements() if extra is None}
    assert core == CORE


def test_backends_and_tensorboard_are_extras():
    by_extra: dict[str, set[str]] = {}
    for name, extra in requirements():
        by_extra.setdefault(extra, set()).add(name)
    assert by_extra["tensorflow"] == {"tensorflow"}
    assert by_extra["jax"] == {"jax"}
    assert by_extra["tensorboard"] == {"tensorboard"}
    assert "tensorflow" not in by_extra["test-jax"]


IN_JAX_LEG = Path(sys.prefix).name == ".venv-jax"


@pytest.mark.skipif(not IN_JAX_LEG, reason="checks the JAX leg's environment (.venv-jax)")
def test_the_jax_runtime_has_no_tensorflow_and_kept_its_pins():
    # .venv-jax is made as a TPU runtime is: jax and keras first (their versions saved
    # then), kernelkit after. Installing kernelkit must add no TensorFlow and move none.
    assert importlib.util.find_spec("tensorflow") is None
    pins = Path(sys.prefix) / "runtime-pins.txt"
    assert pins.exists(), "the Makefile saves the runtime's pins before installing kernelkit"
    moved = []
    for line in pins.read_text().splitlines():
        if "==" not in line:
            continue
        name, version = line.split("==", 1)
        now = importlib.metadata.version(name)
        if now != version:
            moved.append(f"{name} {version} -> {now}")
    assert moved == []
