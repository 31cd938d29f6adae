"""kernelkit._env: where the kernel runs, read from the environment and sys.modules."""

from __future__ import annotations

import json
import sys
import types

import pytest

from kernelkit import _env


@pytest.mark.parametrize(
    ("environ", "modules", "expected"),
    [
        ({}, {"google.colab", "ipykernel"}, "Colab"),
        ({"COLAB_RELEASE_TAG": "release-colab_20250101"}, set(), "Colab"),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, {"ipykernel"}, "Kaggle"),
        ({"VSCODE_PID": "4242"}, {"ipykernel"}, "VS Code"),
        ({"VSCODE_CWD": "/home/me"}, {"ipykernel"}, "VS Code"),  # WSL / remote: no VSCODE_PID
        ({}, {"ipykernel"}, "Jupyter"),
        ({}, set(), "Python"),
    ],
)
def test_runtime_from_fake_environment(environ, modules, expected):
    assert _env.runtime(environ, modules) == expected


def test_runtime_reads_live_environment(monkeypatch):
    for name in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert _env.runtime() != "Colab"
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert _env.in_colab() and _env.runtime() == "Colab"
    monkeypatch.delitem(sys.modules, "google.colab")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert _env.runtime() == "Kaggle"


def test_keras_backend_order(tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert _env.keras_backend({"KERAS_BACKEND": "jax", "KERAS_HOME": str(home)}, set()) == "jax"
    assert _env.keras_backend({"KERAS_HOME": str(home)}, set()) == "torch"
    assert _env.keras_backend({"KERAS_HOME": str(tmp_path / "missing")}, set()) == "tensorflow"


def test_keras_backend_prefers_imported_keras():
    keras = pytest.importorskip("keras")
    assert _env.keras_backend() == keras.config.backend()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("not json", None),
        ('["a list"]', None),
        ('{"cluster": {"worker": ["h:1"]}}', {"cluster": {"worker": ["h:1"]}}),
    ],
)
def test_tf_config(raw, expected):
    assert _env.tf_config({"TF_CONFIG": raw}) == expected


def test_flags_ignore_empty_values():
    # Colab exports COLAB_TPU_1VM='' on GPU runtimes.
    assert not _env._flag({"COLAB_TPU_1VM": ""}, "COLAB_TPU_1VM")
    assert not _env._flag({"ISTPUVM": "0"}, "ISTPUVM")
    assert _env._flag({"COLAB_TPU_1VM": "1"}, "COLAB_TPU_1VM")
