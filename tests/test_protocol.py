"""kernelkit protocol v1, kernel side (kernelkit/views/labcomm.py).

The examples in labextension/src/__tests__/protocol-examples.json are shared
with the TypeScript tests, so both sides are pinned to the same messages.
The last tests run a real kernel: hello on %load_ext, a frontend opening a
comm later, and a stop request handled while a cell is busy.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernelkit import events
from kernelkit.views import labcomm

EXAMPLES = json.loads(
    (
        Path(__file__).resolve().parents[1] / "labextension/src/__tests__/protocol-examples.json"
    ).read_text()
)


class FakeComm:
    """Records what labcomm sends; plays the frontend's messages."""

    def __init__(self, data: Any = None, fail: bool = False) -> None:
        self.opened_with = data
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.fail = fail
        self.msg_callback: Any = None
        self.close_callback: Any = None

    def send(self, data: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("websocket gone")
        # What goes on the wire must be JSON (no NaN: JSON.parse rejects it).
        self.sent.append(json.loads(json.dumps(data, allow_nan=False)))

    def close(self) -> None:
        self.closed = True

    def on_msg(self, callback: Any) -> None:
        self.msg_callback = callback

    def on_close(self, callback: Any) -> None:
        self.close_callback = callback

    def receive(self, data: Any) -> None:
        self.msg_callback({"content": {"comm_id": "x", "data": data}})


class FakeCommManager:
    def __init__(self) -> None:
        self.targets: dict[str, Any] = {}

    def register_target(self, name: str, callback: Any) -> None:
        self.targets[name] = callback

    def unregister_target(self, name: str, callback: Any) -> None:
        self.targets.pop(name, None)


class FakeShell:
    def __init__(self) -> None:
        self.kernel = type("K", (), {"comm_manager": FakeCommManager()})()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    labcomm._reset_for_tests()
    monkeypatch.setattr(labcomm, "_clock", clock)
    # No real subshell outside a kernel; keep _subshell's own state untouched.
    monkeypatch.setattr(labcomm._subshell, "subshell_id", lambda timeout=5.0: None)
    monkeypatch.setattr(labcomm._subshell, "route_to_subshell", lambda comm: False)
    yield clock
    labcomm._reset_for_tests()


@pytest.fixture
def frontend(clock: Clock) -> FakeComm:
    """A frontend that opened a comm to the kernel's "kernelkit" target."""
    comm = FakeComm()
    labcomm._on_frontend_open(comm, {"content": {"data": {"type": "hello", "protocol": 1}}})
    comm.sent.clear()
    return comm


def _replay(raw_events: list[dict[str, Any]], clock: Clock) -> None:
    for raw in raw_events:
        clock.now += 1.0  # nothing is throttled
        labcomm.publish(events.from_dict(raw))


# ---------------------------------------------------------------- shared examples


def test_examples_are_protocol_v1():
    assert EXAMPLES["protocol"] == labcomm.PROTOCOL_VERSION == 1
    assert labcomm.COMM_TARGET == "kernelkit"


@pytest.mark.parametrize(
    "example", EXAMPLES["frontend_to_kernel"]["valid"], ids=lambda e: e["name"]
)
def test_valid_frontend_messages_parse(example):
    assert labcomm.parse_frontend_message(example["message"]) is not None


@pytest.mark.parametrize(
    "example", EXAMPLES["frontend_to_kernel"]["invalid"], ids=lambda e: e["name"]
)
def test_invalid_frontend_messages_are_rejected(example):
    assert labcomm.parse_frontend_message(example["message"]) is None


@pytest.mark.parametrize("example", EXAMPLES["from_events"], ids=lambda e: e["name"])
def test_events_become_the_documented_status(example, frontend, clock):
    _replay(example["events"], clock)
    assert frontend.sent[-1] == example["message"]


def test_hello_has_the_documented_fields(clock):
    documented = next(
        e["message"]
        for e in EXAMPLES["kernel_to_frontend"]["valid"]
        if e["name"].startswith("hello")
    )
    labcomm.set_device("CPU")
    hello = labcomm.hello_message()
    assert set(hello) == set(documented)
    assert hello["protocol"] == 1
    assert hello["device"] == "CPU"
    assert hello["stop"] in ("subshell", "interrupt")
    assert isinstance(hello["version"], str)


# ---------------------------------------------------------------- no frontend


def test_everything_is_a_no_op_without_a_kernel(clock):
    assert labcomm.start(None) is False
    assert labcomm.start(object()) is False  # terminal IPython: no .kernel
    labcomm.set_device("CPU")
    labcomm.publish(events.TrainBegin(epochs=2, steps=10))
    labcomm.publish(events.Step(epoch=0, step=1, logs={"loss": 1.0}))
    labcomm.close()
    assert labcomm.connected() is False


def test_start_registers_the_target_and_says_hello(clock, monkeypatch):
    import comm as comm_module

    opened: list[FakeComm] = []

    def create_comm(target_name: str, data: Any) -> FakeComm:
        assert target_name == "kernelkit"
        opened.append(FakeComm(data))
        return opened[-1]

    monkeypatch.setattr(comm_module, "create_comm", create_comm)
    shell = FakeShell()
    assert labcomm.start(shell) is True
    manager = shell.kernel.comm_manager
    assert manager.targets["kernelkit"] is labcomm._on_frontend_open
    assert opened[0].opened_with["type"] == "hello"
    assert opened[0].opened_with["stop"] == "interrupt"  # no subshell here

    # %reload_ext: no second comm, the hello goes again on the open one.
    assert labcomm.start(shell) is True
    assert len(opened) == 1
    assert opened[0].sent[-1]["type"] == "hello"

    monkeypatch.setattr(comm_module, "get_comm_manager", lambda: manager)
    labcomm.close()
    assert opened[0].closed
    assert "kernelkit" not in manager.targets


def test_start_never_raises(clock, monkeypatch):
    import comm as comm_module

    def broken(**_kwargs: Any) -> Any:
        raise RuntimeError("no iopub")

    monkeypatch.setattr(comm_module, "create_comm", broken)
    assert labcomm.start(FakeShell()) is False


# ---------------------------------------------------------------- status and throttle


def test_status_is_throttled_but_begin_and_end_always_go(frontend, clock):
    labcomm.publish(events.TrainBegin(epochs=3, steps=100, model_name="mlp"))
    assert [m["running"] for m in frontend.sent] == [True]
    for step in range(1, 50):  # all within the same instant
        labcomm.publish(events.Step(epoch=0, step=step, logs={"loss": 1.0 / step}))
    assert len(frontend.sent) == 1
    clock.now += labcomm.STATUS_INTERVAL
    labcomm.publish(events.Step(epoch=0, step=50, logs={"loss": 0.02}))
    assert len(frontend.sent) == 2
    assert frontend.sent[-1]["step"] == 50
    assert frontend.sent[-1]["logs"] == {"loss": 0.02}
    labcomm.publish(events.TrainEnd(state="finished", reason="finished 1 epoch", epoch=0, step=50))
    assert len(frontend.sent) == 3
    assert frontend.sent[-1]["end"] == {"state": "finished", "reason": "finished 1 epoch"}
    assert frontend.sent[-1]["running"] is False


def test_at_most_two_messages_per_second(frontend, clock):
    labcomm.publish(events.TrainBegin(epochs=1, steps=10_000))
    for step in range(1, 10_001):  # 10 s of 1 ms steps
        clock.now += 0.001
        labcomm.publish(events.Step(epoch=0, step=step, logs={"loss": 0.5}))
    status = [m for m in frontend.sent if m["running"]]
    assert 19 <= len(status) <= 21  # begin + one every 0.5 s


def test_non_finite_logs_are_named_and_non_scalars_dropped(frontend, clock):
    labcomm.publish(events.TrainBegin(epochs=1, steps=10))
    clock.now += 1
    labcomm.publish(
        events.Step(epoch=0, step=1, logs={"loss": math.nan, "mae": -math.inf, "note": "x"})
    )
    assert frontend.sent[-1]["logs"] == {"loss": "nan", "mae": "-inf"}


def test_publish_never_raises_into_training(clock):
    broken = FakeComm(fail=True)
    labcomm._adopt(broken)
    labcomm.publish(events.TrainBegin(epochs=1, steps=10))
    labcomm.set_device("GPU: test")
    labcomm.publish(object())  # not an event at all


def test_a_late_frontend_gets_the_running_fit(clock):
    labcomm.publish(events.TrainBegin(epochs=5, steps=10, model_name="late"))
    comm = FakeComm()
    labcomm._on_frontend_open(comm, {"content": {"data": {"type": "hello", "protocol": 1}}})
    assert [m["type"] for m in comm.sent] == ["hello", "status"]
    assert comm.sent[1]["model"] == "late"


def test_device_goes_to_every_comm(frontend, clock):
    labcomm.set_device("TPU (8 cores)")
    assert frontend.sent[-1] == {"type": "device", "device": "TPU (8 cores)"}


# ---------------------------------------------------------------- stop


def test_stop_calls_the_handler_and_acknowledges(frontend):
    calls: list[str] = []
    remove = labcomm.on_stop(lambda: calls.append("stop"))
    frontend.receive({"type": "stop"})
    assert calls == ["stop"]
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": True}
    remove()
    frontend.receive({"type": "stop"})
    assert calls == ["stop"]
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}


def test_stop_with_nothing_running_is_not_accepted(frontend):
    labcomm.on_stop(lambda: False)
    frontend.receive({"type": "stop"})
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}


def test_a_failing_stop_handler_is_logged_not_raised(frontend, caplog):
    def broken() -> None:
        raise RuntimeError("boom")

    labcomm.on_stop(broken)
    with caplog.at_level(logging.WARNING, logger="kernelkit.views.labcomm"):
        frontend.receive({"type": "stop"})
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}
    assert "stop handler failed" in caplog.text


@pytest.mark.parametrize(
    "example", EXAMPLES["frontend_to_kernel"]["invalid"], ids=lambda e: e["name"]
)
def test_malformed_messages_are_ignored_and_logged(example, frontend, caplog):
    calls: list[int] = []
    labcomm.on_stop(lambda: calls.append(1))
    with caplog.at_level(logging.WARNING, logger="kernelkit.views.labcomm"):
        frontend.receive(example["message"])
    assert calls == []
    assert frontend.sent == []
    assert "ignored a malformed frontend message" in caplog.text


def test_closed_comms_are_forgotten(frontend):
    assert labcomm.connected()
    frontend.close_callback({"content": {}})
    assert not labcomm.connected()


# ---------------------------------------------------------------- a real kernel


def _comm_messages(kc: Any, deadline: float, want: int, comm_id: str | None = None) -> list[dict]:
    """Reads iopub until ``want`` comm messages (of ``comm_id``, if given) arrived."""
    found: list[dict] = []
    while len(found) < want:
        try:
            msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {found}") from None
            continue
        if msg["msg_type"] in ("comm_open", "comm_msg", "comm_close") and (
            comm_id is None or msg["content"]["comm_id"] == comm_id
        ):
            found.append(msg)
    return found


def _open_from_frontend(kc: Any) -> str:
    comm_id = uuid.uuid4().hex
    msg = kc.session.msg(
        "comm_open",
        {"comm_id": comm_id, "target_name": "kernelkit", "data": {"type": "hello", "protocol": 1}},
    )
    kc.shell_channel.send(msg)
    return comm_id


@pytest.mark.kernel
def test_real_kernel_hello_late_frontend_and_stop_while_busy(kernel):
    kc = kernel.kc
    deadline = time.monotonic() + 60

    # Before kernelkit loads, the kernel closes a frontend's comm.
    early = _open_from_frontend(kc)
    [closed] = _comm_messages(kc, deadline, 1, early)
    assert closed["msg_type"] == "comm_close"

    reply, messages = kernel.execute(
        "import threading\n"
        "import kernelkit.views.labcomm as labcomm\n"
        "stop_requested = threading.Event()\n"
        "labcomm.on_stop(lambda: stop_requested.set())\n"
        "labcomm.start(get_ipython())"
    )
    assert reply["status"] == "ok", kernel.text(messages)
    [opened] = [m for m in messages if m["msg_type"] == "comm_open"]
    assert opened["msg_type"] == "comm_open"
    assert opened["content"]["target_name"] == "kernelkit"
    hello = opened["content"]["data"]
    assert hello["type"] == "hello" and hello["protocol"] == 1
    # ipykernel 7 can run the comm on a subshell: stop works while a cell runs.
    assert hello["stop"] == "subshell"

    # A frontend that connects later (page reload) gets its own hello.
    late = _open_from_frontend(kc)
    [answer] = _comm_messages(kc, deadline, 1, late)
    assert answer["msg_type"] == "comm_msg"
    assert answer["content"]["data"]["type"] == "hello"

    # A busy cell waits for the stop; the stop message is handled meanwhile.
    busy = kc.execute(
        "import time\nt0 = time.monotonic()\n"
        "print('stopped' if stop_requested.wait(30) else 'timed out',"
        " round(time.monotonic() - t0, 1))"
    )
    while True:  # wait until the cell is really running
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["parent_header"].get("msg_id") == busy and msg["msg_type"] == "execute_input":
            break
    kc.shell_channel.send(
        kc.session.msg(
            "comm_msg", {"comm_id": opened["content"]["comm_id"], "data": {"type": "stop"}}
        )
    )
    [ack] = _comm_messages(kc, deadline, 1, opened["content"]["comm_id"])
    assert ack["content"]["data"] == {"type": "stop_ack", "accepted": True}
    reply, messages = kernel.collect(busy, timeout=60)
    assert reply["status"] == "ok"
    # "stopped" (not "timed out"): the stop was handled while the cell waited.
    assert kernel.text(messages).startswith("stopped")
