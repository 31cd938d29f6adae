"""What a panel widget shows where no widget manager runs (saved notebooks, nbval).

A notebook saves each widget output as the bundle it was displayed with:
the widget's id plus a ``text/plain`` and ``text/html`` that GitHub,
nbviewer, nbconvert and VS Code read instead (none of them keeps widget
state, microsoft/vscode-jupyter#4404). So a view displays itself through
a display handle and, when what it shows changes, sends the same bundle
again with current fallbacks (``update_display_data``); JupyterLab and
nbclient then save the new one, wherever the change came from (a later
cell, a click).

Updates are coalesced: a burst of changes (clicks) sends one update after
:data:`DELAY` seconds, the live view's refresh interval, and whatever is
still pending when a cell ends is sent before the cell's reply, so a cell
that changes a view leaves its saved fallback current. In JupyterLab each
update re-creates the widget's view, which is why updates never go out
per change.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: Seconds a change waits for more before its update goes out (the live view's refresh).
DELAY = 0.5

_PENDING: weakref.WeakSet[Fallback] = weakref.WeakSet()
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()  # views that check themselves at cell end
_HOOKED: list[Any] = []  # the shell whose post_run_cell flushes


def _bundle_data(bundle: Any) -> dict[str, Any]:
    data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata)
    return dict(data)


class Fallback:
    """The display handles of one view's outputs, kept current.

    Args:
        bundle: returns the view's display bundle, fallbacks as they are now.
        delay: seconds to wait for more changes before an update goes out.
    """

    def __init__(self, bundle: Callable[[], Any], delay: float = DELAY) -> None:
        self._bundle = bundle
        self.delay = delay
        self.handles: list[Any] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._dirty = False

    def display(self) -> Any:
        """Displays the view as a new output with a display id; returns its handle."""
        from IPython.display import display

        handle = display(_bundle_data(self._bundle()), raw=True, display_id=True)
        if handle is not None:
            self.handles.append(handle)
        _hook_cell_end()
        return handle

    def changed(self) -> None:
        """Says the view changed: its outputs get current fallbacks soon."""
        if not self.handles:
            return
        with self._lock:
            self._dirty = True
            _PENDING.add(self)
            if self._timer is None and self.delay > 0:
                # The change's context (the cell or the click it came from) is the
                # update's parent message, so the frontend routes it.
                context = contextvars.copy_context()
                self._timer = threading.Timer(self.delay, context.run, (self.flush,))
                self._timer.daemon = True
                self._timer.start()
        if self.delay <= 0:
            self.flush()

    def flush(self) -> None:
        """Sends the pending update now (nothing when there is none)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._dirty:
                return
            self._dirty = False
            _PENDING.discard(self)
        data = _bundle_data(self._bundle())
        for handle in self.handles:
            try:
                handle.update(data, raw=True)
            except Exception as err:  # a closed channel must not break the view
                print(f"kernelkit: could not update a saved view: {err!r}", file=sys.stderr)


def watch(view: Any) -> None:
    """Calls ``view.check_changed()`` when each cell ends (views that poll their model)."""
    _WATCHED.add(view)
    _hook_cell_end()


def flush_all(*_args: Any) -> None:
    """Sends every pending update (IPython's ``post_run_cell`` calls it)."""
    for view in list(_WATCHED):
        try:
            view.check_changed()
        except Exception as err:
            print(f"kernelkit: could not check a view: {err!r}", file=sys.stderr)
    for fallback in list(_PENDING):
        fallback.flush()


def _hook_cell_end() -> None:
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    if shell is None or any(s is shell for s in _HOOKED):
        return
    shell.events.register("post_run_cell", flush_all)
    _HOOKED.append(shell)


class StaticFallback:
    """Mixin for widget panels: full ``text/plain``, a static ``text/html``, kept current.

    ipywidgets cuts ``text/plain`` at 110 characters and offers no HTML; a
    saved notebook read without a kernel (GitHub, nbviewer, nbconvert) or
    compared by nbval then shows a widget id. Put this mixin before the
    widget class; the panel defines ``__repr__`` and ``static_html`` and
    calls :meth:`fallback_changed` when what it shows changes.
    """

    def static_html(self) -> str:
        """The panel as static HTML."""
        raise NotImplementedError

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata)
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
            data["text/html"] = self.static_html()
        return bundle

    @property
    def fallback(self) -> Fallback:
        """The handles of this panel's outputs (one per time it was displayed)."""
        found = self.__dict__.get("_kk_fallback")
        if found is None:
            found = self.__dict__["_kk_fallback"] = Fallback(self._repr_mimebundle_)
        return found

    def _ipython_display_(self) -> None:
        # Displayed through a handle (IPython calls this for display() and for a
        # cell's last value), so later changes can update the saved bundle.
        self.fallback.display()

    def fallback_changed(self) -> None:
        """Says what the panel shows changed: its saved fallbacks follow."""
        found = self.__dict__.get("_kk_fallback")
        if found is not None:
            found.changed()
