"""What shows the core's fits: the view factories the public layer installs (UI-free).

The core never imports a view. ``LiveProgress`` and ``lr_find`` ask this
module for a view when a fit begins; ``kernelkit/__init__.py`` installs the
notebook views here (as it installs the drawer of long calls in
:mod:`kernelkit.reporting`), and a ``LiveProgress(view_factory=...)`` uses its
own instead, as tqdm's Keras callback takes ``tqdm_class=``. With nothing
installed, fits show nothing and still send their events to every sink.
The sinks every fit reports to (the JupyterLab status item) are registered
here too, by whoever connects them (``%load_ext kernelkit``), and the words of
the device report's "auto" row, which are ``kernelkit.strategy``'s (strategy
reads devices, so devices cannot ask it).

Example:
    >>> shown = []
    >>> previous = set_progress_view(lambda callback: shown.append(callback) or None)
    >>> progress_view("a LiveProgress") is None and shown
    ['a LiveProgress']
    >>> _ = set_progress_view(previous)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Makes the view of a ``LiveProgress`` as its fit begins: ``factory(callback)``, returning
#: an object with ``handle(event)`` (and ``close()``), or None for no view.
ProgressViewFactory = Callable[[Any], Any]
#: Makes the view of a learning-rate sweep: ``factory(display, history, points, submit)``,
#: where ``submit`` takes the view's ``StopTraining`` (the sweep's ``LiveProgress.submit``).
LrFindViewFactory = Callable[[str, Any, Any, Callable[[Any], bool]], Any]

_progress: ProgressViewFactory | None = None
_lr_find: LrFindViewFactory | None = None
_fit_sinks: list[Callable[[Any], None]] = []
_auto_plan: Callable[[Any], str] | None = None


def set_progress_view(factory: ProgressViewFactory | None) -> ProgressViewFactory | None:
    """Installs what shows a ``LiveProgress`` fit (None: nothing); returns the one before."""
    global _progress
    previous, _progress = _progress, factory
    return previous


def progress_view(callback: Any) -> Any:
    """The installed view for ``callback``'s fit, or None when nothing is installed."""
    return _progress(callback) if _progress is not None else None


def set_lr_find_view(factory: LrFindViewFactory | None) -> LrFindViewFactory | None:
    """Installs what shows a learning-rate sweep (None: nothing); returns the one before."""
    global _lr_find
    previous, _lr_find = _lr_find, factory
    return previous


def lr_find_view(display: str, history: Any, points: Any, submit: Callable[[Any], bool]) -> Any:
    """The installed view of a learning-rate sweep, or None when nothing is installed."""
    if _lr_find is None:
        return None
    return _lr_find(display, history, points, submit)


def add_fit_sink(sink: Callable[[Any], None]) -> None:
    """Sends the events of every kernelkit fit from now on to ``sink`` too (the JupyterLab link)."""
    if not any(s is sink for s in _fit_sinks):
        _fit_sinks.append(sink)


def remove_fit_sink(sink: Callable[[Any], None]) -> None:
    """Stops sending fits' events to ``sink``."""
    _fit_sinks[:] = [s for s in _fit_sinks if s is not sink]


def fit_sinks() -> list[Callable[[Any], None]]:
    """The sinks every kernelkit fit sends its events to, besides its own."""
    return list(_fit_sinks)


def set_auto_plan(describe: Callable[[Any], str] | None) -> Callable[[Any], str] | None:
    """Installs what the device report's "auto" row says (``kernelkit.strategy``'s words)."""
    global _auto_plan
    previous, _auto_plan = _auto_plan, describe
    return previous


def auto_plan_text(report: Any) -> str | None:
    """What ``strategy("auto")`` would pick on ``report``, or None with nothing installed."""
    return _auto_plan(report) if _auto_plan is not None else None
