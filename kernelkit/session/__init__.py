"""The one orchestrator: registry, fits with live progress, and ``%%kmodel`` cells.

Everything the magic does is callable from here: ``register``, ``models``,
``card``, ``fit`` and ``run_cell``. The package reads in one direction,
each module importing only those below it::

    cell      run_cell: a %%kmodel cell's checks, scope, routed fits, registration
    records   the card, the models table and the run ledger's tables
    fits      every fit: inherited options, checks before Keras starts, callbacks, the run
    context   CellContext: what a running cell tells its fits
    registry  Entry, register/unregister/get/entry_for, method patching, apply_intent
    errors    KernelkitError, FitRefused, and the one-line refusal

Example:
    >>> from kernelkit import session
    >>> session.register("clf", model)  # doctest: +SKIP
"""

from __future__ import annotations

# ``fits`` is imported before anything can fit: it hands the registry its route.
from .cell import CellError, run_cell
from .context import CellContext, FitDefaults
from .errors import FitRefused, KernelkitError
from .fits import fit, stop_current
from .records import activation_stats, card, compare, delete_runs, export_runs, models, runs
from .registry import Entry, apply_intent, entry_for, get, register, unregister

__all__ = [
    "CellContext",
    "CellError",
    "Entry",
    "FitDefaults",
    "FitRefused",
    "KernelkitError",
    "activation_stats",
    "apply_intent",
    "card",
    "compare",
    "delete_runs",
    "entry_for",
    "export_runs",
    "fit",
    "get",
    "models",
    "register",
    "run_cell",
    "runs",
    "stop_current",
    "unregister",
]
