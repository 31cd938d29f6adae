"""``%%kmodel NAME`` cells: scope, seed, the cell's code with routed fits, registration, card.

:func:`run_cell` checks the magic line's options before anything runs, holds a
:class:`~kernelkit.session.context.CellContext` in force while the cell's code
runs with every ``Model.fit`` routed through ``kernelkit.session.fits``, and
registers the model the cell assigned to NAME.
"""

from __future__ import annotations

import ast
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import keras

from .. import _fitting
from . import context
from .context import CellContext, FitDefaults
from .errors import KernelkitError
from .fits import _callback_list, _has_live, _record_run, routed_fit
from .records import card
from .registry import _REGISTRY, _check_name, register


class CellError(KernelkitError):
    """The cell's own code failed (its traceback was already shown)."""


@contextlib.contextmanager
def _fits_get_progress() -> Iterator[None]:
    """Routes every ``Model.fit`` made while the cell runs through ``kernelkit.fit``."""
    original = keras.Model.fit

    @functools.wraps(original)
    def fit_with_progress(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("callbacks")
        if given is None and len(args) > 5:
            given = args[5]  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
        if _has_live(_callback_list(given)[0]) is not None and _fitting.CURRENT:
            return original(self, *args, **kwargs)  # kernelkit's own fit, on its way to Keras
        # type(self).fit is this wrapper unless a subclass overrides fit: then that
        # override is running now (it called super().fit), and must not run again.
        overridden = type(self).fit is not fit_with_progress
        return routed_fit(self, args, kwargs, keras_fit=original if overridden else None)

    keras.Model.fit = fit_with_progress  # type: ignore[method-assign]
    try:
        yield
    finally:
        keras.Model.fit = original  # type: ignore[method-assign]


def run_cell(
    shell: Any,
    name: str,
    cell: str,
    *,
    strategy: str = "auto",
    seed: Any = None,
    deterministic: bool = False,
    show_card: bool = True,
    workers: int | None = None,
    resume: str | None = None,
    checkpoint: str | None = None,
    tensorboard: bool = False,
    lr_find: bool = False,
    watch: bool = False,
) -> Any:
    """Runs a ``%%kmodel NAME`` cell: scope, seed, live fits, registration, card.

    Args:
        shell: the IPython shell.
        name: the variable the cell must assign a ``keras.Model`` to.
        cell: the cell's code.
        strategy: a ``kernelkit.strategy`` spec.
        seed: an integer for ``keras.utils.set_random_seed``.
        deterministic: also enable TensorFlow op determinism.
        show_card: display the model card at the end.
        workers: train every fit of the cell in this many worker processes.
        resume: a BackupAndRestore directory for the cell's fits.
        checkpoint: a best-weights checkpoint path for the cell's fits.
        tensorboard: write TensorBoard logs for the cell's fits.
        lr_find: run ``kernelkit.lr_find`` on each ``Model.fit`` call of the cell
            instead of training (the fit returns its ``LRFindResult``).
        watch: record each layer's activation statistics once per epoch, on a
            probe of the fit's first 32 inputs (``kernelkit.watch``); the card
            shows them.

    Returns:
        The model card (displayed by IPython) or None with ``show_card=False``.

    Raises:
        KernelkitError: misuse; nothing was changed.
        CellError: the cell's own code raised (its traceback is shown).
    """
    _check_name(name)
    if not cell.strip():
        raise KernelkitError(
            f"the %%kmodel {name} cell is empty; write the code that builds (and compiles, "
            "fits) the model below the magic line"
        )
    seed_value = None
    if seed is not None:
        try:
            seed_value = int(str(seed))
        except ValueError:
            raise KernelkitError(f"--seed {seed!r} is not an integer; use e.g. --seed 42") from None
    if workers is not None and workers < 1:
        raise KernelkitError(f"--workers {workers} must be 1 or more")
    if lr_find and (workers is not None or resume or checkpoint or tensorboard):
        raise KernelkitError(
            "--lr-find trains nothing to resume, checkpoint or log, and not in workers: "
            "drop --workers, --resume, --checkpoint and --tensorboard"
        )
    if workers is not None and (resume or checkpoint or tensorboard):
        used = [
            o
            for o, v in (
                ("--resume", resume),
                ("--checkpoint", checkpoint),
                ("--tensorboard", tensorboard),
            )
            if v
        ]
        raise KernelkitError(
            f"{', '.join(used)} cannot run in workers yet; drop it or train without --workers"
        )
    # Checked before the cell runs: a bad path, a damaged backup or a missing engine
    # is a one-line usage error, not a traceback from inside the user's fit.
    if workers is not None:
        from ..workers import check_engine

        try:
            check_engine()
        except ImportError as err:
            raise KernelkitError(str(err)) from None
    if resume or checkpoint or tensorboard:
        from .. import checkpoints

        if resume:
            checkpoints.check_resume(resume)  # the folder and the backup's files
        if checkpoint:
            checkpoints.checkpoint_callback(checkpoint)
        if tensorboard:
            checkpoints.check_tensorboard(name)  # the package, and runs/NAME can be made
    from ..strategy import scope as strategy_scope

    chosen, users = _choose_strategy(strategy)
    if seed_value is not None:
        keras.utils.set_random_seed(seed_value)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    user_ns = shell.user_ns
    missing = object()
    before = user_ns.get(name, missing)
    running = CellContext(
        name=name,
        namespace=user_ns,
        strategy=None if _is_default(chosen) else chosen,
        seed=seed_value,
        lr_find=lr_find,
        defaults=FitDefaults(
            workers=workers,
            resume=resume,
            checkpoint=checkpoint,
            tensorboard=tensorboard,
            watch=watch,
        ),
    )
    refused: list[Any] = []
    # A fit refused inside the cell is a UsageError: the magic shows it as its own
    # one line, instead of IPython showing it and the magic adding a second.
    own = vars(shell).get("show_usage_error")
    shell.show_usage_error = refused.append
    try:
        with (
            contextlib.nullcontext() if users else strategy_scope(chosen),
            _fits_get_progress(),
            context.in_cell(running),
            _history_not_echoed(shell),
        ):
            result = shell.run_cell(cell, store_history=False)
    finally:
        if own is None:
            del shell.show_usage_error
        else:
            shell.show_usage_error = own
    if not result.success:
        earlier = before is not missing and _REGISTRY.get(name) is not None
        kept = ""
        if earlier and _REGISTRY[name].model is before and user_ns.get(name) is not before:
            # Lose nothing: NAME stays the registered model, as the registry says.
            user_ns[name] = before
            kept = f"; the earlier {name} was kept"
        if refused:
            raise KernelkitError(f"{refused[0]} (nothing was registered{kept})")
        raise CellError(
            f"the %%kmodel {name} cell raised (traceback above); nothing was registered{kept}"
        )
    model = user_ns.get(name, missing)
    if model is missing or model is before:
        raise KernelkitError(
            f"the cell did not assign {name}; end it with e.g. `{name} = keras.Sequential([...])`"
        )
    if not isinstance(model, keras.Model):
        if before is not missing and isinstance(before, keras.Model):
            user_ns[name] = before  # lose nothing: the earlier model stays under NAME
        raise KernelkitError(
            f"{name} is a {type(model).__name__}, not a keras.Model; assign the model itself "
            f"to {name}"
            + (
                " (the earlier model was kept)"
                if before is not missing and isinstance(before, keras.Model)
                else ""
            )
        )
    entry = register(name, model, strategy=running.strategy)
    entry.fit_options = running.defaults.given()  # the model's later fits inherit them
    entry.seed = seed_value
    if running.watch is not None:  # a --watch fit ran before the model was registered
        entry.watch = running.watch
    for fitted, live in running.fits:
        if fitted is model:
            _record_run(entry, live)
    if show_card:
        return card(model)
    return None


class _QuietHistory(ast.NodeTransformer):
    """Wraps the cell's last expression so that a ``History`` it gives is not echoed.

    The card is the cell's result: ``model.fit(...)`` as the last line would
    otherwise add ``<keras.src.callbacks.history.History at 0x...>`` between
    the live result and the card. Any other value is echoed as usual.
    """

    def visit_Module(self, node: ast.Module) -> ast.Module:
        last = node.body[-1] if node.body else None
        if isinstance(last, ast.Expr):
            call = ast.Call(
                func=ast.Attribute(
                    value=ast.Call(
                        func=ast.Name(id="__import__", ctx=ast.Load()),
                        args=[ast.Constant("kernelkit.session.cell")],
                        keywords=[ast.keyword("fromlist", ast.Constant(("_",)))],
                    ),
                    attr="_echoed",
                    ctx=ast.Load(),
                ),
                args=[last.value],
                keywords=[],
            )
            last.value = ast.copy_location(call, last.value)
            ast.fix_missing_locations(last)
        return node


def _echoed(value: Any) -> Any:
    """What the cell's last expression shows: nothing for a History, else the value."""
    return None if isinstance(value, keras.callbacks.History) else value


@contextlib.contextmanager
def _history_not_echoed(shell: Any) -> Iterator[None]:
    """Runs the cell with :class:`_QuietHistory` among the shell's AST transformers."""
    transformers = getattr(shell, "ast_transformers", None)
    if transformers is None:
        yield
        return
    quiet = _QuietHistory()
    transformers.append(quiet)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # IPython drops a transformer that failed
            transformers.remove(quiet)


def _choose_strategy(spec: str) -> tuple[Any, bool]:
    """The cell's strategy, and whether it is one the user already set.

    The user's distribution wins: ``--strategy auto`` trains in it, and an
    explicit spec that means something else is refused in one line.
    """
    from ..strategy import describe, in_force, same
    from ..strategy import strategy as resolve

    users = in_force()
    if users is None:
        return resolve(spec), False
    if str(spec).strip().lower() == "auto":
        return users, True
    planned = resolve(spec)
    if same(planned, users):
        return users, True
    import keras

    unset = (
        "call keras.distribution.set_distribution(None) first"
        if keras.backend.backend() == "jax"
        else "run the cell outside that strategy's scope"
    )
    raise KernelkitError(
        f"--strategy {spec} conflicts with the distribution already in force "
        f"({describe(users)[0]}): drop --strategy to train in yours, or {unset}"
    )


def _is_default(strategy: Any) -> bool:
    if strategy is None:
        return True
    return type(strategy).__name__.startswith("_Default")
