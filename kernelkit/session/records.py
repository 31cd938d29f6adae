"""What kernelkit shows about registered models: the card, the models table, the run ledger.

Each function reads the registry (``kernelkit.session.registry``) and hands a
view what it needs; none changes a model, except the intents a card sends.
"""

from __future__ import annotations

from typing import Any

from .. import operations
from .errors import KernelkitError
from .registry import _REGISTRY, _check_model, entry_for, get


def models() -> Any:
    """Returns the table of registered models (name, class, parameters, runs, last loss).

    Returns:
        A ``ModelTable``, shown by ``%kmodel`` with no NAME.

    Example:
        >>> kernelkit.models()  # doctest: +SKIP
    """
    from ..views.models import ModelTable

    return ModelTable(list(_REGISTRY.values()))


def _ledger_name(model: Any) -> str | None:
    """A registered name from a name, a registered model, or None (every model)."""
    if model is None or isinstance(model, str):
        return model
    entry = entry_for(model)
    if entry is None:
        raise KernelkitError(
            "runs are kept for registered models: pass the name given to %%kmodel or "
            "kernelkit.register(NAME, model)"
        )
    return entry.name


def runs(model: Any = None, which: Any = None) -> Any:
    """The recorded runs of a model, as a table that reads without a kernel.

    Every fit of a registered model (a ``%%kmodel`` cell's included) is kept
    in the run ledger (``kernelkit.ledger``: SQLite in ``.kernelkit/`` next to
    the notebook), so the table survives a kernel restart.

    Args:
        model: a registered name or model; None for every model's runs.
        which: which runs: a run id, -1 for the latest, a state ("finished"),
            a filter on the recorded settings (``{"learning_rate": 1e-3}``), a
            function of the run, or a list of these; default all.

    Returns:
        A ``RunTable``: shown as a table, indexed as a list of ``ledger.Run``,
        with ``.sort("val_loss")``.

    Raises:
        KernelkitError: a model that is not registered.
        ValueError: a run id that is not there.

    Example:
        >>> kernelkit.runs("mnist").sort("val_loss")  # doctest: +SKIP
    """
    from ..views.ledger import runs as table

    return table(_ledger_name(model), which)


def compare(model: Any = None, which: Any = None, metrics: Any = None) -> Any:
    """Overlay the curves of chosen runs: one chart per metric, one colour per run.

    Args:
        model: a registered name or model, None for every model, or a table
            from :func:`runs`.
        which: which runs, as in :func:`runs`; default all.
        metrics: the metrics to draw; default loss, val_loss and one more.

    Example:
        >>> kernelkit.compare("mnist", which=[-2, -1])  # doctest: +SKIP
    """
    from ..views.ledger import RunTable
    from ..views.ledger import compare as overlay

    return overlay(model if isinstance(model, RunTable) else _ledger_name(model), which, metrics)


def delete_runs(model: Any, which: Any) -> int:
    """Delete chosen runs of a model from the ledger; returns how many went.

    Args:
        model: a registered name or model.
        which: which runs, as in :func:`runs` (required: nothing is deleted by default).

    Returns:
        How many runs were deleted.

    Example:
        >>> kernelkit.delete_runs("mnist", "failed")  # doctest: +SKIP
    """
    from .. import ledger

    book = ledger.Ledger()
    chosen = ledger.select(book.runs(_ledger_name(model)), which)
    return book.delete(r.id for r in chosen)


def export_runs(model: Any, log_dir: str, which: Any = None) -> list[str]:
    """Write chosen runs as TensorBoard event files under ``log_dir``; returns their folders.

    Args:
        model: a registered name or model, or None for every model.
        log_dir: the folder to write under (one subfolder per run).
        which: which runs, as in :func:`runs`; default all.

    Returns:
        The folders written, one per run.

    Example:
        >>> kernelkit.export_runs("mnist", "tb")  # then: %tensorboard --logdir tb  # doctest: +SKIP
    """
    from .. import ledger

    chosen = ledger.select(ledger.Ledger().runs(_ledger_name(model)), which)
    return ledger.export_tensorboard(chosen, log_dir)


def activation_stats(model: Any) -> Any:
    """The activation statistics of the model's last ``--watch`` fit, as heat strips.

    Args:
        model: a registered model (or its name) trained in a ``%%kmodel NAME --watch`` cell.

    Returns:
        A ``WatchResult``: one row per layer, one cell per epoch, for the mean,
        the spread and the share of dead units; ``.watch`` holds the numbers.

    Raises:
        KernelkitError: the model is not registered, or was not trained under ``--watch``.

    Example:
        >>> kernelkit.activation_stats("mlp")  # doctest: +SKIP
    """
    entry = _REGISTRY.get(model) if isinstance(model, str) else entry_for(model)
    if entry is None:
        raise KernelkitError(
            f"{model!r} is not a registered model: pass the NAME of a %%kmodel NAME --watch cell"
        )
    if entry.watch is None:
        raise KernelkitError(
            f"{entry.name} was not trained under --watch: add --watch to its %%kmodel line"
        )
    from ..views.watch import WatchResult

    return WatchResult(entry.watch)


def card(model: Any) -> Any:
    """Returns the interactive model card of ``model`` (a model or a registered name).

    A registered model's card sends its intents to the registry entry (queued
    while a fit runs); any other model's card applies them at once.

    Args:
        model: a ``keras.Model`` or a registered name.

    Returns:
        A ``ModelCard``.

    Raises:
        KeyError: a name that is not registered.
        TypeError: ``model`` is not a Keras model.

    Example:
        >>> kernelkit.card("clf")  # doctest: +SKIP
    """
    from ..views.card import ModelCard

    if isinstance(model, str):
        model = get(model)
    _check_model(model, "card")
    entry = entry_for(model)
    # An unregistered model's card applies its tabs' intents at once, as a standalone panel.
    submit = None if entry is not None else operations.submitter(model)
    return ModelCard(model, entry, submit=submit)


