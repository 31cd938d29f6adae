"""Where is the kernel running? Cheap answers from ``sys.modules`` and the environment.

Nothing here imports a framework or touches the network: every check reads a
mapping, so it costs microseconds and tests can pass fakes. anywidget decides
"are we in Colab" the same way (``"google.colab" in sys.modules``).

Each function takes optional ``environ`` and ``modules`` arguments; ``None``
means the live ``os.environ`` and ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Mapping
from typing import Any

Environ = Mapping[str, str] | None
Modules = Collection[str] | None

#: The Keras backends kernelkit knows about.
BACKENDS = ("tensorflow", "jax", "torch")


def _environ(environ: Environ) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _modules(modules: Modules) -> Collection[str]:
    return sys.modules if modules is None else modules


def _flag(environ: Mapping[str, str], name: str) -> bool:
    # Colab exports some variables empty on runtimes without the feature
    # (COLAB_TPU_1VM='' on a GPU runtime), so only a set, non-empty value counts.
    return environ.get(name, "").strip() not in ("", "0", "false", "False")


def in_colab(environ: Environ = None, modules: Modules = None) -> bool:
    """True inside a Google Colab runtime."""
    env = _environ(environ)
    return "google.colab" in _modules(modules) or "COLAB_RELEASE_TAG" in env


def in_kaggle(environ: Environ = None, modules: Modules = None) -> bool:
    """True inside a Kaggle notebook (Kaggle sets KAGGLE_KERNEL_RUN_TYPE)."""
    env = _environ(environ)
    return "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env


def in_vscode(environ: Environ = None, modules: Modules = None) -> bool:
    """True when VS Code started the kernel.

    VSCODE_PID is the documented signal (microsoft/vscode-python#5875); remote
    and WSL sessions only carry VSCODE_CWD (holoviz/panel#5200).
    """
    env = _environ(environ)
    return "VSCODE_PID" in env or "VSCODE_CWD" in env


def in_notebook(environ: Environ = None, modules: Modules = None) -> bool:
    """True when running inside a Jupyter kernel (ipykernel is loaded)."""
    return "ipykernel" in _modules(modules)


def runtime(environ: Environ = None, modules: Modules = None) -> str:
    """Names where the kernel runs.

    Returns:
        "Colab", "Kaggle", "VS Code", "Jupyter" (a local Jupyter kernel) or
        "Python" (no kernel: a script or a plain interpreter).

    """
    if in_colab(environ, modules):
        return "Colab"
    if in_kaggle(environ, modules):
        return "Kaggle"
    if in_vscode(environ, modules):
        return "VS Code"
    if in_notebook(environ, modules):
        return "Jupyter"
    return "Python"


def keras_backend(environ: Environ = None, modules: Modules = None) -> str:
    """The Keras backend, found without importing Keras.

    The same order as Keras itself: an already imported Keras knows best, then
    KERAS_BACKEND, then ``keras.json`` in KERAS_HOME (default ``~/.keras``),
    then "tensorflow".
    """
    env = _environ(environ)
    mods = _modules(modules)
    if modules is None and "keras" in mods:
        try:
            return str(sys.modules["keras"].config.backend())
        except Exception:  # a half-imported keras: fall through to the env
            pass
    if env.get("KERAS_BACKEND"):
        return env["KERAS_BACKEND"]
    home = env.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here, without importing it.

    A ``pip install`` since the kernel started counts (the import caches are
    refreshed first); a broken entry in ``sys.modules`` counts as missing.
    """
    import importlib
    import importlib.util

    try:
        importlib.invalidate_caches()
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def tf_config(environ: Environ = None) -> dict | None:
    """The parsed TF_CONFIG, or None when unset or unreadable (JSON only, no TensorFlow)."""
    raw = _environ(environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def make_callable(module_name: str, function: Any) -> None:
    """Makes the module ``module_name`` callable as ``function``.

    ``kernelkit.devices`` and ``kernelkit.strategy`` are both a submodule and a
    function: importing the submodule binds it on the package under the
    function's name, so the module itself forwards calls to the function.
    """
    import sys
    import types

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
