"""kernelkit protocol v1, kernel side (kernelkit/transport/labcomm.py).

The examples in labextension/src/__tests__/protocol-examples.json are shared
with the TypeScript tests, so both sides are pinned to the same messages.
Each test drives its own ``LabLink`` from lists of events and reads what a
fake frontend comm received; the status it shows is a ``FitStatus``'s.
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
from kernelkit.status import FitStatus
from kernelkit.transport import labcomm

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
def clock() -> Clock:
    return Clock()


@pytest.fixture
def link(clock: Clock) -> labcomm.LabLink:
    """A link of its own, on a fake clock; no real subshell outside a kernel."""
    return labcomm.LabLink(clock=clock, route=lambda comm: False, probe=lambda: None)


def _open(link: labcomm.LabLink, comm: FakeComm) -> None:
    """Plays a frontend that opens a comm to the kernel's "kernelkit" target."""
    link._on_frontend_open(comm, {"content": {"data": {"type": "hello", "protocol": 1}}})


@pytest.fixture
def frontend(link: labcomm.LabLink) -> FakeComm:
    """A frontend that opened a comm to ``link``."""
    comm = FakeComm()
    _open(link, comm)
    comm.sent.clear()
    return comm


def _replay(link: labcomm.LabLink, raw_events: list[dict[str, Any]], clock: Clock) -> None:
    for raw in raw_events:
        clock.now += 1.0  # nothing is throttled
        link.publish(events.from_dict(raw))


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
def test_events_become_the_documented_status(example, link, frontend, clock):
    _replay(link, example["events"], clock)
    assert frontend.sent[-1] == example["message"]


def test_hello_has_the_documented_fields(link):
    documented = next(
        e["message"]
        for e in EXAMPLES["kernel_to_frontend"]["valid"]
        if e["name"].startswith("hello")
    )
    link.set_device("CPU")
    hello = link.hello_message()
    assert set(hello) == set(documented)
    assert hello["protocol"] == 1
    assert hello["device"] == "CPU"
    assert hello["stop"] in ("subshell", "interrupt")
    assert isinstance(hello["version"], str)


# ---------------------------------------------------------------- no frontend


def test_everything_is_a_no_op_without_a_kernel(link):
    assert link.start(None) is False
    assert link.start(object()) is False  # terminal IPython: no .kernel
    link.set_device("CPU")
    link.publish(events.TrainBegin(epochs=2, steps=10))
    link.publish(events.Step(epoch=0, step=1, logs={"loss": 1.0}))
    link.close()
    assert link.connected() is False


def test_the_module_functions_act_on_the_kernels_one_link(link, monkeypatch):
    assert isinstance(labcomm.link(), labcomm.LabLink)
    monkeypatch.setattr(labcomm, "_LINK", link)
    comm = FakeComm()
    _open(link, comm)
    labcomm.set_device("CPU")
    labcomm.publish(events.TrainBegin(epochs=1, steps=5, model_name="mlp"))
    assert labcomm.link() is link and labcomm.connected()
    assert labcomm.hello_message()["device"] == "CPU"
    assert [m["type"] for m in comm.sent] == ["hello", "device", "status"]
    assert link.status is not None and link.status.name == "mlp"


def test_start_registers_the_target_and_says_hello(link, monkeypatch):
    import comm as comm_module

    opened: list[FakeComm] = []

    def create_comm(target_name: str, data: Any) -> FakeComm:
        assert target_name == "kernelkit"
        opened.append(FakeComm(data))
        return opened[-1]

    monkeypatch.setattr(comm_module, "create_comm", create_comm)
    shell = FakeShell()
    assert link.start(shell) is True
    manager = shell.kernel.comm_manager
    assert manager.targets["kernelkit"] == link._on_frontend_open
    assert opened[0].opened_with["type"] == "hello"
    assert opened[0].opened_with["stop"] == "interrupt"  # no subshell here

    # %reload_ext: no second comm, the hello goes again on the open one.
    assert link.start(shell) is True
    assert len(opened) == 1
    assert opened[0].sent[-1]["type"] == "hello"

    link.close()
    assert opened[0].closed
    assert "kernelkit" not in manager.targets


def test_start_never_raises(link, monkeypatch):
    import comm as comm_module

    def broken(**_kwargs: Any) -> Any:
        raise RuntimeError("no iopub")

    monkeypatch.setattr(comm_module, "create_comm", broken)
    assert link.start(FakeShell()) is False


# ---------------------------------------------------------------- status and throttle


def test_status_is_throttled_but_begin_and_end_always_go(link, frontend, clock):
    link.publish(events.TrainBegin(epochs=3, steps=100, model_name="mlp"))
    assert [m["running"] for m in frontend.sent] == [True]
    for step in range(1, 50):  # all within the same instant
        link.publish(events.Step(epoch=0, step=step, logs={"loss": 1.0 / step}))
    assert len(frontend.sent) == 1
    clock.now += labcomm.STATUS_INTERVAL
    link.publish(events.Step(epoch=0, step=50, logs={"loss": 0.02}))
    assert len(frontend.sent) == 2
    assert frontend.sent[-1]["step"] == 50
    assert frontend.sent[-1]["logs"] == {"loss": 0.02}
    link.publish(events.TrainEnd(state="finished", reason="finished 1 epoch", epoch=0, step=50))
    assert len(frontend.sent) == 3
    assert frontend.sent[-1]["end"] == {"state": "finished", "reason": "finished 1 epoch"}
    assert frontend.sent[-1]["running"] is False


def test_at_most_two_messages_per_second(link, frontend, clock):
    link.publish(events.TrainBegin(epochs=1, steps=10_000))
    for step in range(1, 10_001):  # 10 s of 1 ms steps
        clock.now += 0.001
        link.publish(events.Step(epoch=0, step=step, logs={"loss": 0.5}))
    status = [m for m in frontend.sent if m["running"]]
    assert 19 <= len(status) <= 21  # begin + one every 0.5 s


def test_non_finite_logs_are_named_and_non_scalars_dropped(link, frontend, clock):
    link.publish(events.TrainBegin(epochs=1, steps=10))
    clock.now += 1
    link.publish(
        events.Step(epoch=0, step=1, logs={"loss": math.nan, "mae": -math.inf, "note": "x"})
    )
    assert frontend.sent[-1]["logs"] == {"loss": "nan", "mae": "-inf"}


def test_publish_never_raises_into_training(link, clock):
    broken = FakeComm(fail=True)
    link._adopt(broken)
    link.publish(events.TrainBegin(epochs=1, steps=10))
    link.set_device("GPU: test")
    link.publish(object())  # not an event at all


def test_a_late_frontend_gets_the_running_fit(link, clock):
    link.publish(events.TrainBegin(epochs=5, steps=10, model_name="late"))
    comm = FakeComm()
    _open(link, comm)
    assert [m["type"] for m in comm.sent] == ["hello", "status"]
    assert comm.sent[1]["model"] == "late"


def test_device_goes_to_every_comm(link, frontend, clock):
    link.set_device("TPU (8 cores)")
    assert frontend.sent[-1] == {"type": "device", "device": "TPU (8 cores)"}


# ---------------------------------------------------------------- read from FitStatus

#: A fit as the callback reports it, with times: the first step compiles (2 s), epoch 0
#: is validated, the user stops in epoch 1 (TrainEnd's step is past the last Step event).
TIMED_FIT = [
    events.TrainBegin(epochs=3, steps=10, batch_size=4, model_name="mlp", time=0.0),
    events.EpochBegin(epoch=0, time=0.0),
    events.Step(epoch=0, step=1, logs={"loss": 1.0}, time=2.0),
    events.Step(epoch=0, step=6, logs={"loss": 0.6}, time=2.5),
    events.Step(epoch=0, step=10, logs={"loss": 0.4}, time=2.9),
    events.EpochEnd(
        epoch=0, logs={"loss": 0.4, "val_loss": 0.5}, steps=10, time=3.4, validation_time=0.5
    ),
    events.EpochBegin(epoch=1, time=3.4),
    events.Step(epoch=1, step=4, logs={"loss": 0.3}, time=3.8),
    events.TrainEnd(
        state="stopped_by_user", reason="stopped by user at epoch 2, step 5 of 10",
        epoch=1, step=5, time=3.95,
    ),
]  # fmt: skip


def test_the_lab_status_is_read_from_fit_status(link, frontend, clock):
    """Every message is the projection of a FitStatus folded from the same events."""
    reference = FitStatus()
    for event in TIMED_FIT:
        clock.now += 1.0  # nothing is throttled
        reference.apply(event)
        link.publish(event)
        assert link.status is not None
        # The link's status is a FitStatus of its own, equal in what the readers show.
        assert (link.status.rate, link.status.eta, link.status.step_text()) == (
            reference.rate,
            reference.eta,
            reference.step_text(),
        )
        assert frontend.sent[-1] == labcomm.status_message(reference)
    assert link.status.state == reference.state == "stopped_by_user"
    assert link.status.summary() == reference.summary()
    assert link.status.compile_time == reference.compile_time
    last = frontend.sent[-1]
    assert last["end"] == {"state": reference.state, "reason": reference.reason}
    assert (last["epoch"], last["step"], last["steps"]) == (1, 5, 10)  # TrainEnd's position
    assert last["logs"] == {"loss": 0.3}


def test_the_epochs_final_logs_show_until_the_next_step(link, frontend, clock):
    _replay(link, [events.to_dict(e) for e in TIMED_FIT[:6]], clock)
    assert frontend.sent[-1]["logs"] == {"loss": 0.4, "val_loss": 0.5}
    assert frontend.sent[-1]["step"] == 10
    assert link.status is not None and link.status.latest_logs == {"loss": 0.4, "val_loss": 0.5}


def test_each_fit_gets_a_fresh_status_and_stragglers_are_ignored(link, frontend, clock):
    _replay(link, [events.to_dict(e) for e in TIMED_FIT], clock)
    first = link.status
    clock.now += 1.0
    link.publish(events.Step(epoch=1, step=9, logs={"loss": 0.1}))  # after the end
    assert len(frontend.sent) == len(TIMED_FIT)
    link.publish(events.TrainBegin(epochs=2, steps=5, model_name="again"))
    assert link.status is not first
    assert frontend.sent[-1]["running"] is True
    assert frontend.sent[-1]["model"] == "again" and frontend.sent[-1]["logs"] == {}


def test_events_before_any_begin_show_nothing(link, frontend, clock):
    link.publish(events.Step(epoch=0, step=3, logs={"loss": 1.0}))
    link.publish(events.TrainEnd(state="finished"))
    assert frontend.sent == []
    assert link.status is None


def test_the_callbacks_status_and_the_lab_status_agree(link, frontend, clock, tiny_model):
    """A LiveProgress drives the link as %load_ext connects it: the same figures."""
    from kernelkit.callback import LiveProgress

    cb = LiveProgress(display="none", sink=link.publish, clock=clock, refresh=0.25)
    cb.set_model(tiny_model)
    cb.set_params({"epochs": 3, "steps": 10, "verbose": 0})
    cb.on_train_begin()
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        for batch in range(10):
            clock.now += 0.1
            cb.on_train_batch_end(batch, {"loss": 1.0 / (batch + 1)})
            if (epoch, batch) == (1, 3):
                cb.request_stop("user")
            if tiny_model.stop_training:
                break
        cb.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.6})
        if tiny_model.stop_training:
            break
    cb.on_train_end()
    status = link.status
    assert status is not None
    assert (status.state, status.reason) == (cb.status.state, cb.status.reason)
    assert (status.rate, status.step_time, status.eta) == (
        cb.status.rate,
        cb.status.step_time,
        cb.status.eta,
    )
    assert status.summary() == cb.status.summary()
    assert frontend.sent[-1] == labcomm.status_message(cb.status)
    assert frontend.sent[-1]["end"]["state"] == "stopped_by_user"


# ---------------------------------------------------------------- stop


def test_stop_calls_the_handler_and_acknowledges(link, frontend):
    calls: list[str] = []
    remove = link.on_stop(lambda: calls.append("stop"))
    frontend.receive({"type": "stop"})
    assert calls == ["stop"]
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": True}
    remove()
    frontend.receive({"type": "stop"})
    assert calls == ["stop"]
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}


def test_stop_with_nothing_running_is_not_accepted(link, frontend):
    link.on_stop(lambda: False)
    frontend.receive({"type": "stop"})
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}


def test_a_failing_stop_handler_is_logged_not_raised(link, frontend, caplog):
    def broken() -> None:
        raise RuntimeError("boom")

    link.on_stop(broken)
    with caplog.at_level(logging.WARNING, logger="kernelkit.transport.labcomm"):
        frontend.receive({"type": "stop"})
    assert frontend.sent[-1] == {"type": "stop_ack", "accepted": False}
    assert "stop handler failed" in caplog.text


@pytest.mark.parametrize(
    "example", EXAMPLES["frontend_to_kernel"]["invalid"], ids=lambda e: e["name"]
)
def test_malformed_messages_are_ignored_and_logged(link, example, frontend, caplog):
    calls: list[int] = []
    link.on_stop(lambda: calls.append(1))
    with caplog.at_level(logging.WARNING, logger="kernelkit.transport.labcomm"):
        frontend.receive(example["message"])
    assert calls == []
    assert frontend.sent == []
    assert "ignored a malformed frontend message" in caplog.text


def test_closed_comms_are_forgotten(link, frontend):
    assert link.connected()
    frontend.close_callback({"content": {}})
    assert not link.connected()


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
        "import kernelkit.transport.labcomm as labcomm\n"
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
