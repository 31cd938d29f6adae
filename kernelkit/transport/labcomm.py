"""The kernel side of kernelkit protocol v1: talk to the JupyterLab extension.

kernelkit's JupyterLab extension (``labextension/``) shows the kernel's
device and the running fit in the status bar and offers a "Stop training"
command. Both sides talk over Jupyter comms with the target name
``"kernelkit"``; every message is written down in ``docs/protocol.md``.

One :class:`LabLink` holds the kernel's end: the open comms, the device
label, the stop handlers and the status of the current (or last) fit, a
``kernelkit.status.FitStatus`` folded from the fit's events, the reducer the
progress view and the run ledger read too. A ``status`` message is a
projection of that status (:func:`status_message`), never a second fold.

``%load_ext kernelkit`` calls :func:`start` and connects :func:`publish` as
a sink of every fit; the magic also reports :func:`set_device` and
registers what a stop request does with :func:`on_stop`. These functions
act on the kernel's one link. Without a frontend that opened a comm
(terminal IPython, a plain script, nbclient, classic Notebook) each is a
cheap no-op, and none ever raises into training: a broken frontend must
not break a fit.

Stop requests arrive while the training cell is still busy. ipykernel
handles no shell message then, so the comms are pinned to a kernel-created
subshell (:func:`kernelkit.transport.subshell.route_to_subshell`); the hello
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
from ..history import Throttle
from ..status import FitStatus
from . import subshell

logger = logging.getLogger(__name__)

#: The protocol version (docs/protocol.md) this module speaks.
PROTOCOL_VERSION = 1

#: The comm target name both sides use.
COMM_TARGET = "kernelkit"

#: Seconds between two throttled status messages (at most 2 per second).
STATUS_INTERVAL = 0.5

StopHandler = Callable[[], "bool | None"]

#: The events that move a running fit on; they are throttled, TrainBegin and TrainEnd are not.
_PROGRESS = (ev.EpochBegin, ev.Step, ev.EpochEnd)


# ---------------------------------------------------------------- messages


def _log_value(value: Any) -> float | str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    # JSON has no NaN or infinity (JSON.parse rejects them): name them.
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


def _count(value: Any) -> int:
    return max(0, int(value))


def status_message(status: FitStatus) -> dict[str, Any]:
    """Returns the ``status`` message that shows ``status`` (docs/protocol.md).

    A projection, not a fold: every field is read from the status, clamped
    to what protocol v1 promises (counts >= 0, ``step`` <= ``steps``,
    ``epochs`` > ``epoch``, logs that JSON can carry).

    Args:
        status: the fit's status, folded from its events.

    Returns:
        The message, ``type`` included.

    Example:
        >>> from kernelkit import events as ev
        >>> status = FitStatus()
        >>> for event in [ev.TrainBegin(epochs=5, steps=10, model_name="mlp"),
        ...               ev.Step(epoch=0, step=12, logs={"loss": float("nan")})]:
        ...     status.apply(event)
        >>> message = status_message(status)
        >>> message["running"], message["step"], message["logs"], message["end"]
        (True, 10, {'loss': 'nan'}, None)

    """
    steps = None if status.steps is None else _count(status.steps)
    # Before the first epoch begins the status says -1: the fit starts at initial_epoch.
    epoch = _count(status.epoch if status.epoch >= 0 else status.initial_epoch)
    step = _count(status.step)
    running = status.state == "running"
    return {
        "type": "status",
        "running": running,
        "model": status.name or "",
        "epoch": epoch,
        "epochs": max(_count(status.epochs), epoch + 1),
        # Under steps_per_execution the step can run past the last one.
        "step": min(step, steps) if steps else step,
        "steps": steps,
        "logs": _logs(status.latest_logs),
        "end": None if running else {"state": status.state, "reason": status.reason or ""},
    }


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

    Example:
        >>> parse_frontend_message({"type": "stop", "extra": 1})
        {'type': 'stop'}
        >>> parse_frontend_message({"type": "hello", "protocol": "1"}) is None
        True

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


def _send(comm: Any, message: Mapping[str, Any]) -> None:
    try:
        comm.send(dict(message))
    except Exception:  # a broken comm must not break training
        logger.debug("kernelkit: could not send %s", message.get("type"), exc_info=True)


# ---------------------------------------------------------------- the link


class LabLink:
    """The kernel's end of the "kernelkit" comm: its comms, what they show, what Stop does.

    Every method may be called from the training thread (``publish``) or a
    subshell thread (a stop request), so the state sits behind one lock and
    nothing is sent while it is held. No method raises.

    Args:
        clock: monotonic seconds, for the status throttle (tests pass a fake).
        route: pins a comm to kernelkit's subshell; True when that worked.
        probe: kernelkit's subshell id, or None when the kernel cannot make one.

    Example:
        >>> from kernelkit import events as ev
        >>> link = LabLink()
        >>> link.publish(ev.TrainBegin(epochs=3, steps=10, model_name="mlp"))
        >>> link.publish(ev.Step(epoch=0, step=4, logs={"loss": 0.5}))
        >>> link.status.step, link.connected()
        (4, False)

    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        route: Callable[[Any], bool] = subshell.route_to_subshell,
        probe: Callable[[], str | None] = subshell.subshell_id,
    ) -> None:
        self._route = route
        self._probe = probe
        self._lock = threading.RLock()
        self._comms: list[Any] = []
        self._manager: Any = None  # the comm manager the target is registered on
        self._stop_handlers: list[StopHandler] = []
        self._stop_mode: str | None = None  # "subshell" | "interrupt", decided once per kernel
        self._device: str | None = None
        #: The current (or last) fit's status; None until a fit began.
        self.status: FitStatus | None = None
        # TrainBegin and TrainEnd go out at once; the events between, at most this often.
        self._throttle = Throttle(STATUS_INTERVAL, clock)

    # ------------------------------------------------------------ connection

    def hello_message(self) -> dict[str, Any]:
        """Returns the hello the kernel sends on every new comm."""
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "device": self._device,
            "stop": self.stop_mode(),
        }

    def start(self, ipython: Any = None) -> bool:
        """Connects to the JupyterLab extension (``%load_ext kernelkit``).

        Registers the comm target "kernelkit" (for frontends that connect
        later, e.g. after a page reload) and opens a comm from the kernel that
        says hello. Calling it again re-sends the hello on the open comms.

        Args:
            ipython: the IPython shell (``get_ipython()``); None or a shell
                without a kernel (terminal IPython) makes this a no-op.

        Returns:
            True if the kernel can talk to a frontend, False otherwise.
        """
        try:
            manager = getattr(getattr(ipython, "kernel", None), "comm_manager", None)
            if manager is None:
                return False
            manager.register_target(COMM_TARGET, self._on_frontend_open)
            with self._lock:
                self._manager = manager
                open_comms = bool(self._comms)
            if open_comms:  # %reload_ext: no second comm
                self._send_all(self.hello_message())
                return True
            from comm import create_comm  # ipykernel installs its own factory here

            self._probe_stop_mode()
            comm = create_comm(target_name=COMM_TARGET, data=self.hello_message())
            if self._adopt(comm):  # the probe guessed the stop mode wrong
                _send(comm, self.hello_message())
            return True
        except Exception:  # loading the extension must not fail
            logger.debug("kernelkit: labcomm start failed", exc_info=True)
            return False

    def close(self) -> None:
        """Closes every comm and unregisters the target (``%unload_ext kernelkit``).

        The frontend then hides its status item. Stop handlers and the last
        fit's status are dropped.
        """
        with self._lock:
            comms = list(self._comms)
            manager, self._manager = self._manager, None
            self._comms.clear()
            self._stop_handlers.clear()
            self.status = None
            self._throttle.reset()
        for comm in comms:
            try:
                comm.close()
            except Exception:  # closing is best effort
                logger.debug("kernelkit: could not close a comm", exc_info=True)
        try:
            # Only our own target: another kernelkit link may have registered since.
            if manager is not None and manager.targets.get(COMM_TARGET) == self._on_frontend_open:
                manager.unregister_target(COMM_TARGET, self._on_frontend_open)
        except Exception:  # unregistering is best effort
            logger.debug("kernelkit: could not unregister the comm target", exc_info=True)

    def connected(self) -> bool:
        """True when at least one frontend comm is open."""
        return bool(self._comms)

    def stop_mode(self) -> str:
        """How a stop request reaches a busy cell: "subshell" or "interrupt"."""
        return self._stop_mode or "interrupt"

    def _on_frontend_open(self, comm: Any, msg: Mapping[str, Any]) -> None:
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
        self._adopt(comm)
        _send(comm, self.hello_message())
        with self._lock:
            status = None if self.status is None else status_message(self.status)
        if status is not None:  # e.g. the page was reloaded during a fit
            _send(comm, status)

    def _adopt(self, comm: Any) -> bool:
        """Wires ``comm``'s callbacks and pins it to the subshell; True if the stop mode changed."""
        comm.on_msg(self._on_msg(comm))
        comm.on_close(lambda _msg: self._forget(comm))
        mode = "subshell" if self._route(comm) else "interrupt"
        with self._lock:
            self._comms.append(comm)
            changed, self._stop_mode = self._stop_mode != mode, mode
        return changed

    def _probe_stop_mode(self) -> str:
        """Guesses the stop mode before a comm exists (the hello goes out on open)."""
        with self._lock:
            if self._stop_mode is None:
                self._stop_mode = "subshell" if self._probe() is not None else "interrupt"
            return self._stop_mode

    def _forget(self, comm: Any) -> None:
        with self._lock:
            if comm in self._comms:
                self._comms.remove(comm)

    def _send_all(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            comms = list(self._comms)
        for comm in comms:
            _send(comm, message)

    # ------------------------------------------------------------ device

    def set_device(self, label: str | None) -> None:
        """Shows ``label`` ("CPU", "GPU: NVIDIA H100", "TPU (8 cores)") in the status item.

        Args:
            label: a short device description, or None if unknown.
        """
        try:
            self._device = None if label is None else str(label)
            if self._comms:
                self._send_all({"type": "device", "device": self._device})
        except Exception:  # a device label must not break anything
            logger.debug("kernelkit: set_device failed", exc_info=True)

    # ------------------------------------------------------------ stop

    def on_stop(self, handler: StopHandler) -> Callable[[], None]:
        """Registers what a "Stop training" request from JupyterLab does.

        The handler runs on a kernel subshell thread while the training cell
        is busy, so it must only set a flag (e.g. request a graceful stop). It
        returns False when nothing was running, anything else when a stop was
        requested.

        Args:
            handler: a callable without arguments.

        Returns:
            A function that unregisters the handler.
        """
        with self._lock:
            if handler not in self._stop_handlers:
                self._stop_handlers.append(handler)

        def remove() -> None:
            with self._lock:
                if handler in self._stop_handlers:
                    self._stop_handlers.remove(handler)

        return remove

    def _on_msg(self, comm: Any) -> Callable[[Mapping[str, Any]], None]:
        def handle(msg: Mapping[str, Any]) -> None:
            data = msg.get("content", {}).get("data")
            message = parse_frontend_message(data)
            if message is None:
                logger.warning("kernelkit: ignored a malformed frontend message: %.200r", data)
                return
            if message["type"] == "stop":
                _send(comm, {"type": "stop_ack", "accepted": self._request_stop()})
            # A hello on an open comm changes nothing.

        return handle

    def _request_stop(self) -> bool:
        with self._lock:
            handlers = list(self._stop_handlers)
        accepted = False
        for handler in handlers:
            try:
                accepted = handler() is not False or accepted
            except Exception:  # a failing handler must not kill the subshell
                logger.warning("kernelkit: a stop handler failed", exc_info=True)
        return accepted

    # ------------------------------------------------------------ events

    def _fold(self, event: Any) -> bool | None:
        """Applies ``event`` to the fit's status.

        Returns True if the status must go out now, False if it may be
        throttled, None if the event changed nothing.
        """
        if isinstance(event, ev.TrainBegin):
            self.status = FitStatus()  # each fit its own status, as LiveProgress keeps it
            self.status.apply(event)
            return True
        status = self.status
        if status is None or not isinstance(event, (*_PROGRESS, ev.TrainEnd)):
            return None  # not an event, or one of a fit this link did not see begin
        if status.state != "running" and not isinstance(event, ev.TrainEnd):
            return None  # a straggler after the end must not reopen the fit
        status.apply(event)
        return isinstance(event, ev.TrainEnd)

    def publish(self, event: Any) -> None:
        """Reports a training event to the status item.

        The event goes into the fit's ``FitStatus``. TrainBegin and TrainEnd
        go out at once; the events in between at most once every
        ``STATUS_INTERVAL`` seconds (every message carries the whole status,
        so the latest wins). Costs a few microseconds per call.

        Args:
            event: a ``kernelkit.events`` event; anything else is ignored.
        """
        try:
            with self._lock:
                urgent = self._fold(event)
                if urgent is None or not self._comms or self.status is None:
                    return
                if urgent:
                    self._throttle.reset()  # sent now; the next status waits its interval
                if not self._throttle.ready():
                    return
                message = status_message(self.status)
            self._send_all(message)
        except Exception:  # never raise into training
            logger.debug("kernelkit: publish failed", exc_info=True)


# ---------------------------------------------------------------- the kernel's link

# One link per kernel: the comm target, the open comms and the Stop command are the
# kernel's, whichever code loads the extension. It opens nothing until start().
_LINK = LabLink()


def link() -> LabLink:
    """Returns the kernel's link, which the functions below act on."""
    return _LINK


def hello_message() -> dict[str, Any]:
    """Returns the hello the kernel sends on every new comm."""
    return _LINK.hello_message()


def start(ipython: Any = None) -> bool:
    """Connects kernelkit to the JupyterLab extension (``%load_ext kernelkit``).

    See :meth:`LabLink.start`.

    Args:
        ipython: the IPython shell (``get_ipython()``); None or a shell
            without a kernel (terminal IPython) makes this a no-op.

    Returns:
        True if the kernel can talk to a frontend, False otherwise. Never
        raises.

    Example:
        >>> from kernelkit.transport import labcomm
        >>> labcomm.start(None)
        False

    """
    return _LINK.start(ipython)


def close() -> None:
    """Closes every comm and unregisters the target (``%unload_ext kernelkit``)."""
    _LINK.close()


def connected() -> bool:
    """True when at least one frontend comm is open."""
    return _LINK.connected()


def stop_mode() -> str:
    """How a stop request reaches a busy cell: "subshell" or "interrupt"."""
    return _LINK.stop_mode()


def set_device(label: str | None) -> None:
    """Shows ``label`` ("CPU", "GPU: NVIDIA H100", "TPU (8 cores)") in the status item.

    Args:
        label: a short device description, or None if unknown.

    Example:
        >>> from kernelkit.transport import labcomm
        >>> labcomm.set_device("CPU")

    """
    _LINK.set_device(label)


def on_stop(handler: StopHandler) -> Callable[[], None]:
    """Registers what a "Stop training" request from JupyterLab does (:meth:`LabLink.on_stop`).

    Args:
        handler: a callable without arguments; it runs on a subshell thread,
            so it only sets flags, and returns False when nothing was running.

    Returns:
        A function that unregisters the handler.

    Example:
        >>> from kernelkit.transport import labcomm
        >>> remove = labcomm.on_stop(lambda: None)
        >>> remove()

    """
    return _LINK.on_stop(handler)


def publish(event: Any) -> None:
    """Reports a training event to the status item (:meth:`LabLink.publish`); never raises.

    Args:
        event: a ``kernelkit.events`` event.

    Example:
        >>> from kernelkit import events
        >>> from kernelkit.transport import labcomm
        >>> labcomm.publish(events.TrainBegin(epochs=5, model_name="mlp"))

    """
    _LINK.publish(event)
