"""A compact progress line for long kernelkit calls in a notebook.

``extract`` over many batches, a large weights load or the card of a model
with hundreds of layers take seconds; this line says what runs and how far
it is: ``extract clf · batch 12/63 · 0:03 elapsed · ETA 0:09``. It is one
small HTML widget, shown only once a call has run for :data:`DELAY` seconds
(quick calls leave no trace), redrawn at most every :data:`REFRESH` seconds
(the live progress view's rate) as one trait update, and removed when the
call ends: the widget closes and its output is emptied. Its output carries
the widget's id only, no ``text/plain``: nbval, which skips widget ids,
then compares a checked cell as if the line had never been there, and a
saved notebook keeps an output with no data.

The core reports through ``kernelkit.reporting``; ``kernelkit/__init__.py``
installs :func:`notebook_task` as its factory.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from ..history import Throttle
from ..reporting import _Quiet
from ..status import format_duration
from .progress import in_notebook_kernel

#: Seconds a call runs before its line shows.
DELAY = 1.0
#: The shortest time between two redraws (LiveProgress's default refresh).
REFRESH = 0.5


def _unit_one(unit: str) -> str:
    """'batches' -> 'batch', 'layers' -> 'layer'."""
    if unit.endswith(("ches", "shes", "xes")):
        return unit[:-2]
    return unit[:-1] if unit.endswith("s") else unit


class BusyLine:
    """The progress line of one long call (``kernelkit.reporting.Task``).

    Args:
        label: what runs, e.g. ``"extract clf"``.
        total: the number of items, None when unknown.
        unit: the items' name (plural), e.g. ``"batches"``.
        delay: seconds before the line first shows (default :data:`DELAY`).
        refresh: the shortest time between two redraws (default :data:`REFRESH`).
        clock: a monotonic clock; tests pass a fake one.
        display: shows a bundle and returns its handle (IPython's
            ``display(..., raw=True, display_id=True)`` by default).
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "",
        *,
        delay: float | None = None,
        refresh: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        display: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.delay = DELAY if delay is None else delay
        self._clock = clock
        self._start = clock()
        self._throttle = Throttle(REFRESH if refresh is None else refresh, clock)
        self._display = display or _display
        self.handle: Any = None
        self.closed = False
        self.redraws = 0
        _close_at_cell_end(self)

    def text(self, done: int) -> str:
        """'extract clf · batch 12/63 · 0:03 elapsed · ETA 0:09'."""
        elapsed = self._clock() - self._start
        one = _unit_one(self.unit) or "step"
        parts = [self.label]
        if self.total:
            parts.append(f"{one} {done}/{self.total}")
        else:
            parts.append(f"{one} {done}")
        parts.append(f"{format_duration(elapsed)} elapsed")
        if self.total and done > 0:
            parts.append(f"ETA {format_duration(elapsed / done * (self.total - done))}")
        return " · ".join(parts)

    def bundle(self, done: int) -> dict[str, Any]:
        """The line as HTML (a thin bar, the text) and as ``text/plain``."""
        text = self.text(done)
        width = f"{100 * min(done / self.total, 1.0):.0f}%" if self.total else "100%"
        bar = (
            "<span style='display:inline-block;width:120px;height:6px;background:#e8e8e8;"
            "border-radius:3px;vertical-align:middle;margin-right:6px'>"
            f"<span style='display:block;width:{width};height:6px;border-radius:3px;"
            "background:#1f77b4'></span></span>"
        )
        return {
            "text/html": (
                "<div class='kk-busy' style='font-family:sans-serif;font-size:12px;color:#444'>"
                f"{bar}{html.escape(text)}</div>"
            ),
            "text/plain": text,
        }

    def update(self, done: int) -> None:
        """Redraws, once the call ran ``delay`` seconds, at most every ``refresh`` seconds."""
        if self.closed or self._clock() - self._start < self.delay or not self._throttle.ready():
            return
        bundle = self.bundle(done)
        try:
            if self.handle is None:
                self.handle = self._display(bundle)
            else:
                self.handle.update(bundle, raw=True)
            self.redraws += 1
        except Exception as err:  # drawing must never break the user's call
            print(f"kernelkit: the progress line failed: {err!r}", file=sys.stderr)
            self.closed = True

    def close(self) -> None:
        """Removes the line (it leaves an output with no data: ``update({})``)."""
        if self.closed:
            return
        self.closed = True
        if self.handle is not None:
            try:
                self.handle.update({}, raw=True)
            except Exception as err:
                print(f"kernelkit: the progress line failed: {err!r}", file=sys.stderr)


class _LineWidget:
    """The default display of a line: an HTML widget, updated by trait, closed at the end."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.widget = w.HTML(bundle["text/html"])
        view = {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id}
        self.handle = display(
            {"application/vnd.jupyter.widget-view+json": view}, raw=True, display_id=True
        )

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        if bundle:
            self.widget.value = bundle["text/html"]
            return
        for widget in (self.widget, self.widget.layout, self.widget.style):
            widget.close()
        if self.handle is not None:
            self.handle.update({}, raw=True)


def _display(bundle: dict[str, Any]) -> Any:
    return _LineWidget(bundle)


_OPEN: list[BusyLine] = []


def _close_at_cell_end(line: BusyLine) -> None:
    """A call that raised leaves no line behind: the cell's end closes it."""
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    if shell is None:
        return
    if not _OPEN:
        shell.events.register("post_run_cell", _close_open)
    _OPEN.append(line)


def _close_open(*_args: Any) -> None:
    lines = list(_OPEN)
    _OPEN.clear()
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    if shell is not None:
        with suppress(ValueError):
            shell.events.unregister("post_run_cell", _close_open)
    for line in lines:
        line.close()


def notebook_task(label: str, total: int | None, unit: str = "") -> Any:
    """``kernelkit.reporting``'s factory: a :class:`BusyLine` in a notebook kernel, else nothing."""
    if not in_notebook_kernel():
        return _Quiet()
    return BusyLine(label, total, unit)


class _WidgetHandle:
    """A display handle that draws into an HTML widget (a tab's placeholder)."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        if "text/html" in bundle:
            self.widget.value = bundle["text/html"]


def into_widget(widget: Any, *, delay: float = 0.2) -> Callable[[str, int | None, str], BusyLine]:
    """A ``kernelkit.reporting`` factory whose lines draw into ``widget`` (an ``HTML``).

    The card installs it while it builds a tab on first view: that runs in a
    comm handler, outside any cell, so the tab's own placeholder says how
    far the build is (``layers of deep · layer 120/300 · …``).
    """

    def factory(label: str, total: int | None, unit: str = "") -> BusyLine:
        return BusyLine(label, total, unit, delay=delay, display=lambda b: _handled(widget, b))

    return factory


def _handled(widget: Any, bundle: dict[str, Any]) -> _WidgetHandle:
    handle = _WidgetHandle(widget)
    handle.update(bundle)
    return handle
