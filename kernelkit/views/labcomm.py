"""The kernel side of kernelkit protocol v1: talk to the JupyterLab extension.

kernelkit's JupyterLab extension (``labextension/``) shows the kernel's
device and the running fit in the status bar and offers a "Stop training"
command. Both sides talk over Jupyter comms with the target name
``"kernelkit"``; every message is written down in ``docs/protocol.md``.

``%load_ext kernelkit`` calls :func:`start`. The session then reports what
happens through :func:`publish` (training events) and :func:`set_device`,
and registers what a stop request does with :func:`on_stop`. Without a
frontend that opened a comm (terminal IPython, a plain script, nbclient,
classic Notebook) every function is a cheap no-op, and none of them ever
raises into training: a broken frontend must not break a fit.

Stop requests arrive while the training cell is still busy. ipykernel
handles no shell message then, so the comms are pinned to a kernel-created
subshell (:func:`kernelkit.views._subshell.route_to_subshell`); the hello
message tells the frontend whether that worked (``"stop": "subshell"``) or
whether it must interrupt the kernel instead (``"stop": "interrupt"``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import events as ev
from .._version import __version__
from . import _subshell

logger = logging.getLogger(__name__)

#: The protocol version (docs/protocol.md) this module speaks.
PROTOCOL_VERSION = 1

#: The comm target name both sides use.
COMM_TARGET = "kernelkit"

#: Seconds between two throttled status messages (at most 2 per second).
STATUS_INTERVAL = 0.5

StopHandler = Callable[[], "bool | None"]

_lock = threading.RLock()
_comms: list[Any] = []
_device: str | None = None
_stop_handlers: list[StopHandler] = []
_stop_mode: str | None = None  # "subshell" | "interrupt", decided once per kernel
_fit: dict[str, Any] | None = None  # the latest status snapshot (without "type")
_last_sent = -math.inf
_clock: Callable[[], float] = time.monotonic


# ---------------------------------------------------------------- messages


def hello_message() -> dict[str, Any]:
    """Returns the hello the kernel sends on every new comm."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "device": _device,
        "stop": _stop_mode or "interrupt",
    }


def _log_value(value: Any) -> float | str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def _logs(logs: Mapping[str, Any] | None) -> dict[str, float | str]:
    clean: dict[str, float | str] = {}
    for key, value in (logs or {}).items():
        scalar = _log_value(value)
        if scalar is not None:
            clean[str(key)] = scalar
    return clean


def status_message(fit: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a ``status`` message for a fit snapshot."""
    return {"type": "status", **fit, "logs": dict(fit["logs"])}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_frontend_message(data: Any) -> dict[str, Any] | None:
    """Validates a message from the frontend (docs/protocol.md).

    Args:
        data: the ``data`` of a comm_open or comm_msg.

    Returns:
        The message (only its known fields) or None when it is malformed or
        of an unknown type. None means "ignore it"; nothing in a message is
        ever executed.

    """
    if not isinstance(data, Mapping):
        return None
    kind = data.get("type")
    if kind == "hello":
        protocol = data.get("protocol")
        return {"type": "hello", "protocol": protocol} if _is_count(protocol) else None
    if kind == "stop":
        return {"type": "stop"}
    return None


# ---------------------------------------------------------------- comms


def _send_all(message: Mapping[str, Any]) -> None:
    with _lock:
        comms = list(_comms)
    for comm in comms:
        _send(comm, message)


def _send(comm: Any, message: Mapping[str, Any]) -> None:
    try:
        comm.send(dict(message))
    except Exception:  # a broken comm must not break training
        logger.debug("kernelkit: could not send %s", message.get("type"), exc_info=True)


def _forget(comm: Any) -> None:
    with _lock:
        if comm in _comms:
            _comms.remove(comm)


def _on_msg(comm: Any) -> Callable[[Mapping[str, Any]], None]:
    def handle(msg: Mapping[str, Any]) -> None:
        data = msg.get("content", {}).get("data")
        message = parse_frontend_message(data)
        if message is None:
            logger.warning("kernelkit: ignored a malformed frontend message: %.200r", data)
            return
        if message["type"] == "stop":
            _send(comm, {"type": "stop_ack", "accepted": _request_stop()})
        # A hello on an open comm changes nothing.

    return handle


def _adopt(comm: Any) -> bool:
    """Wires ``comm``'s callbacks and pins it to the subshell."""
    global _stop_mode
    comm.on_msg(_on_msg(comm))
    comm.on_close(lambda _msg: _forget(comm))
    routed = _subshell.route_to_subshell(comm)
    with _lock:
        _comms.append(comm)
        changed = _stop_mode != ("subshell" if routed else "interrupt")
        _stop_mode = "subshell" if routed else "interrupt"
    return changed


def _probe_stop_mode() -> str:
    """Guesses the stop mode before a comm exists (the hello goes out on open)."""
    global _stop_mode
    if _stop_mode is None:
        _stop_mode = "subshell" if _subshell.subshell_id() is not None else "interrupt"
    return _stop_mode


def _on_frontend_open(comm: Any, msg: Mapping[str, Any]) -> None:
    """Comm target: a frontend opened a comm to "kernelkit"."""
    data = msg.get("content", {}).get("data")
    message = parse_frontend_message(data)
    if message is None or message["type"] != "hello":
        logger.warning("kernelkit: unexpected comm_open data %.200r", data)
    elif message["protocol"] != PROTOCOL_VERSION:
        logger.warning(
            "kernelkit: the JupyterLab extension speaks protocol v%s, the kernel v%s; "
            "install the same kernelkit version for both",
            message["protocol"],
            PROTOCOL_VERSION,
        )
    _adopt(comm)
    _send(comm, hello_message())
    with _lock:
        fit = dict(_fit) if _fit is not None else None
    if fit is not None:  # e.g. the page was reloaded during a fit
        _send(comm, status_message(fit))


def start(ipython: Any = None) -> bool:
    """Connects kernelkit to the JupyterLab extension (``%load_ext kernelkit``).

    Registers the comm target "kernelkit" (for frontends that connect later,
    e.g. after a page reload) and opens a comm from the kernel that says
    hello. Calling it again re-sends the hello on the open comms.

    Args:
        ipython: the IPython shell (``get_ipython()``); None or a shell
            without a kernel (terminal IPython) makes this a no-op.

    Returns:
        True if the kernel can talk to a frontend, False otherwise. Never
        raises.

    Example:
        >>> from kernelkit.views import labcomm
        >>> labcomm.start(None)
        False

    """
    try:
        kernel = getattr(ipython, "kernel", None)
        manager = getattr(kernel, "comm_manager", None)
        if manager is None:
            return False
        manager.register_target(COMM_TARGET, _on_frontend_open)
        with _lock:
            open_comms = list(_comms)
        if open_comms:
            _send_all(hello_message())
            return True
        from comm import create_comm  # ipykernel installs its own factory here

        _probe_stop_mode()
        comm = create_comm(target_name=COMM_TARGET, data=hello_message())
        if _adopt(comm):  # the probe guessed the stop mode wrong
            _send(comm, hello_message())
        return True
    except Exception:  # loading the extension must not fail
        logger.debug("kernelkit: labcomm.start failed", exc_info=True)
        return False


def close() -> None:
    """Closes every comm and unregisters the target (``%unload_ext kernelkit``).

    The frontend then hides its status item. Stop handlers are dropped.
    """
    global _fit, _last_sent
    with _lock:
        comms = list(_comms)
        _comms.clear()
        _stop_handlers.clear()
        _fit = None
        _last_sent = -math.inf
    for comm in comms:
        try:
            comm.close()
        except Exception:  # closing is best effort
            logger.debug("kernelkit: could not close a comm", exc_info=True)
    try:
        import comm as comm_module

        manager = comm_module.get_comm_manager()
        if manager is not None and manager.targets.get(COMM_TARGET) is _on_frontend_open:
            manager.unregister_target(COMM_TARGET, _on_frontend_open)
    except Exception:  # unregistering is best effort
        logger.debug("kernelkit: could not unregister the comm target", exc_info=True)


def connected() -> bool:
    """True when at least one frontend comm is open."""
    return bool(_comms)


def stop_mode() -> str:
    """How a stop request reaches a busy cell: "subshell" or "interrupt"."""
    return _stop_mode or "interrupt"


# ---------------------------------------------------------------- device


def set_device(label: str | None) -> None:
    """Shows ``label`` ("CPU", "GPU: NVIDIA H100", "TPU (8 cores)") in the status item.

    Args:
        label: a short device description, or None if unknown.

    Example:
        >>> from kernelkit.views import labcomm
        >>> labcomm.set_device("CPU")

    """
    global _device
    try:
        _device = None if label is None else str(label)
        if _comms:
            _send_all({"type": "device", "device": _device})
    except Exception:  # a device label must not break anything
        logger.debug("kernelkit: set_device failed", exc_info=True)


# ---------------------------------------------------------------- stop


def on_stop(handler: StopHandler) -> Callable[[], None]:
    """Registers what a "Stop training" request from JupyterLab does.

    The handler runs on a kernel subshell thread while the training cell is
    busy, so it must only set a flag (e.g. request a graceful stop). It
    returns False when nothing was running, anything else when a stop was
    requested.

    Args:
        handler: a callable without arguments.

    Returns:
        A function that unregisters the handler.

    Example:
        >>> from kernelkit.views import labcomm
        >>> remove = labcomm.on_stop(lambda: None)
        >>> remove()

    """
    with _lock:
        if handler not in _stop_handlers:
            _stop_handlers.append(handler)

    def remove() -> None:
        with _lock:
            if handler in _stop_handlers:
                _stop_handlers.remove(handler)

    return remove


def _request_stop() -> bool:
    with _lock:
        handlers = list(_stop_handlers)
    accepted = False
    for handler in handlers:
        try:
            accepted = handler() is not False or accepted
        except Exception:  # a failing handler must not kill the subshell
            logger.warning("kernelkit: a stop handler failed", exc_info=True)
    return accepted


# ---------------------------------------------------------------- events


def _snapshot(event: ev.Event) -> bool | None:
    """Folds ``event`` into the fit snapshot.

    Returns True if the message must go out now, False if it may be
    throttled, None if there is nothing to send.
    """
    global _fit
    if isinstance(event, ev.TrainBegin):
        _fit = {
            "running": True,
            "model": event.model_name or "",
            "epoch": max(0, int(event.initial_epoch)),
            "epochs": max(0, int(event.epochs)),
            "step": 0,
            "steps": None if event.steps is None else max(0, int(event.steps)),
            "logs": {},
            "end": None,
        }
        return True
    fit = _fit
    if fit is None or (not fit["running"] and not isinstance(event, ev.TrainEnd)):
        return None  # events outside a fit kernelkit saw begin
    steps = fit["steps"]
    if isinstance(event, ev.EpochBegin):
        fit.update(epoch=max(0, int(event.epoch)), step=0)
    elif isinstance(event, ev.Step):
        step = max(0, int(event.step))
        fit.update(epoch=max(0, int(event.epoch)), step=min(step, steps) if steps else step)
        fit["logs"] = _logs(event.logs)
    elif isinstance(event, ev.EpochEnd):
        if event.steps is not None and steps is None:
            fit["steps"] = steps = max(0, int(event.steps))
        fit.update(epoch=max(0, int(event.epoch)), step=steps if steps else fit["step"])
        fit["logs"] = {**fit["logs"], **_logs(event.logs)}
    elif isinstance(event, ev.TrainEnd):
        if event.epoch is not None:
            fit["epoch"] = max(0, int(event.epoch))
        if event.step is not None:
            fit["step"] = max(0, int(event.step))
        fit.update(running=False, end={"state": event.state, "reason": event.reason or ""})
        return True
    else:
        return None
    if fit["epochs"] <= fit["epoch"]:
        fit["epochs"] = fit["epoch"] + 1
    return False


def publish(event: ev.Event) -> None:
    """Reports a training event to the status item.

    TrainBegin and TrainEnd go out at once; the events in between are
    throttled to at most one message every ``STATUS_INTERVAL`` seconds
    (the latest state wins). Costs a few microseconds per call and never
    raises.

    Args:
        event: a ``kernelkit.events`` event.

    Example:
        >>> from kernelkit import events
        >>> from kernelkit.views import labcomm
        >>> labcomm.publish(events.TrainBegin(epochs=5, model_name="mlp"))

    """
    global _last_sent
    try:
        with _lock:
            urgent = _snapshot(event)
            if urgent is None or not _comms:
                return
            now = _clock()
            if not urgent and now - _last_sent < STATUS_INTERVAL:
                return
            _last_sent = now
            message = status_message(_fit or {})
        _send_all(message)
    except Exception:  # never raise into training
        logger.debug("kernelkit: publish failed", exc_info=True)


def _reset_for_tests() -> None:
    """Forgets all module state (tests only)."""
    global _device, _stop_mode, _fit, _last_sent
    with _lock:
        _comms.clear()
        _stop_handlers.clear()
        _device = None
        _stop_mode = None
        _fit = None
        _last_sent = -math.inf
