"""Import hygiene: `import kernelkit` stays light and the core imports no UI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CORE = ["events", "history", "callback", "freezing", "extraction", "rnn_state", "devices",
        "strategy", "weights", "checkpoints", "intents", "ledger", "timing", "watch", "reporting",
        "status", "data", "display", "paths"]
UI = ("ipywidgets", "IPython", "plotly", "anywidget")


def clean_env() -> dict[str, str]:
    # Nothing of this process's imports, but its Keras backend: without TensorFlow (the JAX
    # leg), Keras's default backend cannot even be imported.
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    if "KERAS_BACKEND" in os.environ:
        env["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
    return env


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, env=clean_env(),
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_kernelkit_does_not_import_tensorflow_or_keras():
    mods = loaded_after("import kernelkit")
    assert "tensorflow" not in mods and "keras" not in mods
    assert not [m for m in mods if m.split(".")[0] in UI]


def test_core_modules_import_no_ui():
    # Keras itself imports parts of IPython when present: only what kernelkit adds counts.
    baseline = loaded_after("import keras, numpy, h5py, yaml")
    code = "\n".join(f"import kernelkit.{m}" for m in CORE)
    mods = loaded_after(code) - baseline
    bad = sorted(m for m in mods if m.split(".")[0] in UI)
    assert not bad, f"core pulled in UI modules: {bad[:5]}"


def test_public_names_resolve():
    import kernelkit

    for name in kernelkit.__all__:
        assert getattr(kernelkit, name) is not None, name
