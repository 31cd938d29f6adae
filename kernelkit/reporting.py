"""Progress of long calls (extract, scan, a weights load), UI-free.

The core opens a task before a long loop, updates it once per item and
closes it after; what draws it is injected, as tqdm's Keras callback takes
``tqdm_class=``: ``kernelkit/__init__.py`` installs the notebook line
(``kernelkit.views._busy``) and nothing is drawn elsewhere. Each update costs
a call and a comparison; the drawing side throttles.

Example:
    >>> seen = []
    >>> class Recorder:
    ...     def __init__(self, label, total, unit): seen.append((label, total, unit))
    ...     def update(self, done): seen.append(done)
    ...     def close(self): seen.append("closed")
    >>> previous = set_factory(Recorder)
    >>> with task("extract", 2, "batches") as t:
    ...     t.update(1); t.update(2)
    >>> _ = set_factory(previous); seen
    [('extract', 2, 'batches'), 1, 2, 'closed']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Task(Protocol):
    """One long call's progress, as the core reports it."""

    def update(self, done: int) -> None:
        """``done`` items of the total are finished."""

    def close(self) -> None:
        """The call ended (finished or failed): the drawing goes away."""


#: Makes the task of a call: ``factory(label, total, unit)``; total None when unknown.
Factory = Callable[[str, "int | None", str], Task]


class _Quiet:
    """The task when nothing draws: every call does nothing."""

    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Scoped:
    """A task that is also a context manager (closed on the way out, errors included)."""

    __slots__ = ("_task", "update")

    def __init__(self, inner: Task) -> None:
        self._task = inner
        self.update = inner.update

    def close(self) -> None:
        self._task.close()

    def __enter__(self) -> _Scoped:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._task.close()


_factory: Factory | None = None


def set_factory(factory: Factory | None) -> Factory | None:
    """Installs what draws long calls (None: nothing); returns the one before."""
    global _factory
    previous, _factory = _factory, factory
    return previous


def task(label: str, total: int | None, unit: str = "") -> _Scoped:
    """Opens the progress of one long call; use it as a context manager.

    Args:
        label: what runs, e.g. ``"extract clf"``.
        total: how many items (batches, layers) it has, None if unknown.
        unit: the items' name, e.g. ``"batches"``.

    Returns:
        A task with ``update(done)`` and ``close()``. A failing factory never
        breaks the call: the task then does nothing.
    """
    inner: Task = _Quiet()
    if _factory is not None:
        try:
            inner = _factory(label, total, unit)
        except Exception:  # drawing is never worth failing the user's call
            inner = _Quiet()
    return _Scoped(inner)
