"""Handle a widget's or comm's messages while a cell is still running.

While a cell runs, ipykernel handles no shell message, so a Stop button
clicked during ``fit`` would act only after the fit. ipykernel 7 can run
*subshells*: extra shell threads. JupyterLab 4.6 sends widget messages
without a subshell id, but ipykernel routes a comm's messages by
``BaseComm._reply_subshell_for`` (the subshell the comm last published
from). Pinning that to a subshell the kernel creates for itself makes the
comm's handlers run on that thread during a busy cell (measured in a real
JupyterLab 4.6 + Chromium: stop handled ~3 s after the click, not after the
cell; see shared/notes/feasibility.md, Q1 (e)).

This uses ipykernel internals, so it is detected at run time and every
failure means "not available": callers then tell the user to use the
kernel interrupt instead. Handlers that run on the subshell thread must
only set flags; the training thread does the work.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_lock = threading.Lock()
_subshell_id: str | None = None
_failed = False


def _kernel() -> Any:
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return None
    shell = ipython_mod.get_ipython()
    return getattr(shell, "kernel", None)


def subshell_id(timeout: float = 5.0) -> str | None:
    """Returns the id of kernelkit's own subshell, creating it once.

    Returns None when the kernel cannot make one (ipykernel < 7, a terminal
    IPython, VS Code or Colab kernels without subshell support).
    """
    global _subshell_id, _failed
    with _lock:
        if _subshell_id is not None or _failed:
            return _subshell_id
        kernel = _kernel()
        thread = getattr(kernel, "shell_channel_thread", None)
        manager = getattr(thread, "manager", None)
        io_loop = getattr(thread, "io_loop", None)
        create = getattr(manager, "_create_subshell", None)
        if create is None or io_loop is None:
            _failed = True
            return None
        done = threading.Event()
        result: dict[str, Any] = {}

        def _make() -> None:
            try:
                result["id"] = create()
            except Exception as err:
                result["error"] = err
            finally:
                done.set()

        # The subshell manager lives on the shell-channel thread's loop.
        io_loop.add_callback(_make)
        if not done.wait(timeout) or "id" not in result:
            _failed = True
            return None
        _subshell_id = str(result["id"])
        return _subshell_id


def route_to_subshell(comm: Any) -> bool:
    """Makes ``comm``'s incoming messages run on kernelkit's subshell.

    Args:
        comm: an ``ipykernel`` comm (``widget.comm`` for an ipywidget).

    Returns:
        True if the comm is now handled during busy cells, else False.
    """
    if comm is None or not hasattr(comm, "_reply_subshell_for"):
        return False
    sid = subshell_id()
    if sid is None:
        return False

    def _pinned(*_args: Any, **_kwargs: Any) -> str:
        return sid

    try:
        comm._reply_subshell_for = _pinned
    except Exception:
        return False
    return True


def route_widget(widget: Any) -> bool:
    """``route_to_subshell`` for an ipywidget (its comm)."""
    return route_to_subshell(getattr(widget, "comm", None))
