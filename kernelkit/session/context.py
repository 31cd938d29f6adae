"""The running ``%%kmodel`` cell, as its fits see it.

``run_cell`` (``kernelkit.session.cell``) makes one :class:`CellContext` per
cell and holds it in force while the cell's code runs; every fit made
meanwhile (``kernelkit.session.fits``) reads it through :func:`current`:
the cell's NAME, strategy, seed and the magic line's per-fit options. The
fits add what they learn (each fit's ``LiveProgress``, the last
``ActivationWatch``), which the cell reads once its code is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from ..callback import LiveProgress


@dataclasses.dataclass(frozen=True)
class FitDefaults:
    """The per-fit options of a ``%%kmodel`` line, which the cell's fits inherit.

    The registered model's later fits inherit them too: ``run_cell`` keeps
    :meth:`given` as ``Entry.fit_options``. A value left unset (None, False)
    inherits nothing, so it never overrides an option the model already has.

    Attributes:
        workers: train in this many worker processes (``--workers``).
        resume: a ``BackupAndRestore`` directory (``--resume``).
        checkpoint: a best-weights checkpoint path (``--checkpoint``).
        tensorboard: write TensorBoard logs (``--tensorboard``).
        watch: record activation statistics each epoch (``--watch``).
    """

    workers: int | None = None
    resume: str | None = None
    checkpoint: str | None = None
    tensorboard: bool = False
    watch: bool = False

    def given(self) -> dict[str, Any]:
        """The options that are set, by ``kernelkit.fit``'s names (``--watch`` as ``watch``).

        Returns:
            A dict of the set options, in field order.

        Example:
            >>> FitDefaults(workers=2, tensorboard=True).given()
            {'workers': 2, 'tensorboard': True}
        """
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)
        }


@dataclasses.dataclass
class CellContext:
    """One running ``%%kmodel NAME`` cell: what it tells its fits, and what they tell it.

    Not frozen: the cell's fits append to :attr:`fits` and set :attr:`watch`
    while it runs.

    Attributes:
        name: the cell's NAME, the variable it must assign a ``keras.Model`` to.
        namespace: the shell's user namespace the cell runs in; a fit of a model
            that is not registered yet but already bound to NAME is shown as NAME.
        strategy: the strategy the cell's fits run in; None for the default one
            or one the user already put in force.
        seed: the ``--seed`` value, kept in the run ledger; None without one.
        lr_find: ``--lr-find``: each ``Model.fit`` of the cell runs the
            learning-rate finder instead of training.
        defaults: the magic line's per-fit options.
        fits: ``(model, live)`` for each fit made in the cell, in order.
        watch: the ``ActivationWatch`` of the cell's last ``--watch`` fit of a
            model that was not registered yet; None if none ran.
    """

    name: str
    namespace: dict[str, Any]
    strategy: Any = None
    seed: int | None = None
    lr_find: bool = False
    defaults: FitDefaults = dataclasses.field(default_factory=FitDefaults)
    fits: list[tuple[Any, LiveProgress]] = dataclasses.field(default_factory=list)
    watch: Any = None

    def binds(self, model: Any) -> bool:
        """True if the cell's NAME is bound to ``model`` already (before the cell ends)."""
        return self.namespace.get(self.name) is model


# The cells running now, innermost last (a cell's code can run another %%kmodel cell).
_RUNNING: list[CellContext] = []


def current() -> CellContext | None:
    """The innermost ``%%kmodel`` cell running now, or None outside every cell."""
    return _RUNNING[-1] if _RUNNING else None


@contextlib.contextmanager
def in_cell(context: CellContext) -> Iterator[CellContext]:
    """Holds ``context`` in force (for :func:`current`) while the cell's code runs.

    Args:
        context: the cell's context.

    Yields:
        The same context.
    """
    _RUNNING.append(context)
    try:
        yield context
    finally:
        _RUNNING.pop()
