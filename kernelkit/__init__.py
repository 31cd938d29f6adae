"""kernelkit: interactive Keras 3 training in Jupyter.

``import kernelkit`` is cheap: it imports neither TensorFlow nor Keras. Each
public name is loaded from its module on first use (PEP 562), so
``%load_ext kernelkit`` stays fast.

Example:
    >>> import kernelkit
    >>> history = kernelkit.fit(model, x, y, epochs=5)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from . import display as _display
from . import reporting as _reporting
from ._version import __version__

# Public name -> the module (relative to this package) that defines it.
_API: dict[str, str] = {
    # live progress and fitting
    "LiveProgress": ".callback",
    "fit": ".session",
    # the model registry and the card
    "register": ".session",
    "unregister": ".session",
    "models": ".session",
    "get": ".session",
    "card": ".session",
    # the run ledger
    "runs": ".session",
    "compare": ".session",
    "delete_runs": ".session",
    "export_runs": ".session",
    "ActivationWatch": ".watch",
    "activation_stats": ".session",
    # freezing
    "freeze": ".freezing",
    "unfreeze": ".freezing",
    "set_trainable": ".freezing",
    "recompile": ".freezing",
    # fine-tuning and the learning-rate finder
    "freeze_to": ".finetune",
    "layer_lrs": ".finetune",
    "lr_find": ".lr_find",
    # feature extraction
    "extract": ".extraction",
    "FeatureView": ".views.features",
    # stateful RNNs
    "reset_states": ".rnn_state",
    "state_summary": ".rnn_state",
    "ResetStates": ".rnn_state",
    # devices and strategies
    "devices": ".devices",
    "strategy": ".strategy",
    # weights and configs
    "load_weights": ".weights",
    "to_yaml": ".weights",
    "model_from_yaml": ".weights",
}

__all__ = ["__version__", "load_ipython_extension", *sorted(_API)]


# ``kernelkit.devices``, ``kernelkit.strategy`` and ``kernelkit.lr_find`` are
# both a function and a submodule; importing the submodule binds it on the
# package, so the public name is the module itself, made callable (``kernelkit.devices()`` runs
# detection and ``kernelkit.devices.detect`` is there too).
_CALLABLE_MODULES = {"devices", "strategy", "lr_find"}


# Submodules reachable as attributes after a plain ``import kernelkit``.
_SUBMODULES = {
    "checkpoints",
    "ledger",
    "weights",
    "freezing",
    "finetune",
    "extraction",
    "rnn_state",
    "workers",
    "events",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'kernelkit' has no attribute {name!r}")
    loaded = importlib.import_module(module, __name__)
    value = loaded if name in _CALLABLE_MODULES else getattr(loaded, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


def _notebook_task(label: str, total: int | None, unit: str = "") -> Any:
    # The public layer picks what draws long calls; the core only reports.
    from .views._busy import notebook_task

    return notebook_task(label, total, unit)


_reporting.set_factory(_notebook_task)


def _progress_view(callback: Any) -> Any:
    # The notebook widget or the terminal line; imported when a fit first shows.
    from .views.progress import make_view

    return make_view(callback)


def _lr_find_view(display: str, history: Any, points: Any, submit: Any) -> Any:
    from .views.lr_find import make_view

    return make_view(display, history, points, submit)


def _auto_plan(report: Any) -> str:
    # The device report's "auto" row: what strategy("auto") would pick there.
    from .strategy import _auto_text

    return _auto_text(report)


_display.set_progress_view(_progress_view)
_display.set_lr_find_view(_lr_find_view)
_display.set_auto_plan(_auto_plan)


def load_ipython_extension(ipython: Any) -> None:
    """Registers ``%%kmodel`` and ``%kmodel`` (called by ``%load_ext kernelkit``)."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Undoes ``load_ipython_extension`` (called by ``%unload_ext kernelkit``)."""
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt extension (the template's convention)."""
    return [{"src": "labextension", "dest": "kernelkit"}]
