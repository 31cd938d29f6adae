"""Resuming in a real kernel: re-running a ``%%kmodel --resume`` cell after a crash or a stop.

What a user does: a long fit dies with the kernel (or they press interrupt),
they run the same cell again, and training goes on at the first unfinished
epoch; the progress view says "resumed at epoch k" and its curves and epoch
table hold the earlier epochs too.

The fit is held in epoch 4 by a callback that waits, bounded, until the fit
is asked to stop (or the kernel dies): the kill and the interrupt then land
at a known step, and the test waits on messages, never on the clock.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

EPOCHS = 6
HOLD_EPOCH = 4  # 1-based: the fit waits at step 2 of this epoch

SETUP = """
%load_ext kernelkit
import threading, time
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=(320, 4)).astype("float32")
y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
HOLD_AT = {hold}  # 1-based epoch whose second step waits for a stop or a kill; None: never

class Lines(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        print(f"end of epoch {{epoch + 1}}: loss {{logs['loss']:.4g}}", flush=True)

    def on_train_batch_begin(self, batch, logs=None):
        if HOLD_AT is not None and self.epoch + 1 == HOLD_AT and batch == 1:
            print(f"holding in epoch {{HOLD_AT}}", flush=True)
            # Wait (bounded) for a kernel interrupt to ask for a stop, or for the kernel's death.
            gate, deadline = threading.Event(), time.monotonic() + 120
            while not self.model.stop_training and time.monotonic() < deadline:
                gate.wait(0.02)
"""

CELL = """%%kmodel reg --resume {directory} --seed 0
reg = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="reg")
reg.compile(keras.optimizers.SGD(learning_rate=0.05), "mse")
h = reg.fit(x, y, epochs={epochs}, batch_size=32, callbacks=[Lines()])
"""

# A row of the epoch table; the best epoch's row is tinted and starred.
ROW = re.compile(
    r"<tr[^>]*><td style='padding:1px 8px'>(?:<span[^>]*>★</span>)?(\d+)</td>"
    r"(.*?)</tr>"
)
CELL_VALUE = re.compile(r"<td[^>]*>([^<]*)</td>")


# --- helpers -------------------------------------------------------------------------------


def wait_for(kernel, msg_id, predicate, timeout=120.0):
    """Reads iopub until a message of the cell satisfies ``predicate``."""
    return kernel.wait_for(msg_id, predicate, timeout)


def prints(text: str) -> Callable[[dict], bool]:
    return lambda m: m["msg_type"] == "stream" and text in m["content"]["text"]


def stdout(messages: list[dict]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def epochs_printed(messages: list[dict]) -> list[int]:
    return [int(e) for e in re.findall(r"end of epoch (\d+)", stdout(messages))]


def losses_printed(messages: list[dict]) -> dict[int, str]:
    found = re.findall(r"end of epoch (\d+): loss (\S+)", stdout(messages))
    return {int(e): loss for e, loss in found}


def live_header_html(messages: list[dict]) -> list[str]:
    """Every HTML value the live view's widgets were set to during the fit."""
    values = []
    for m in messages:
        if m["msg_type"] == "comm_msg":
            state = m["content"]["data"].get("state", {})
            if isinstance(state.get("value"), str):
                values.append(state["value"])
    return values


def final_result(messages: list[dict]) -> dict[str, str]:
    """The static result the live view left behind (its last display update)."""
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert updates, "the live view was never replaced by its static result"
    return updates[-1]["content"]["data"]


def table_rows(html: str) -> dict[int, list[str]]:
    """The epoch table of a static result: {epoch: [cell texts]}."""
    return {int(e): CELL_VALUE.findall(cells) for e, cells in ROW.findall(html)}


def run_until_held(kernel: Any, directory: str) -> tuple[str, list[dict]]:
    """Starts the resumable cell and returns once the fit waits in epoch HOLD_EPOCH."""
    reply, out = kernel.execute(SETUP.format(hold=HOLD_EPOCH))
    assert reply["status"] == "ok", kernel.text(out)
    msg_id = kernel.kc.execute(CELL.format(directory=directory, epochs=EPOCHS))
    seen = wait_for(kernel, msg_id, prints(f"holding in epoch {HOLD_EPOCH}"))
    assert epochs_printed(seen) == [1, 2, 3]
    return msg_id, seen


def check_resumed_run(kernel: Any, directory: str, first_losses: dict[int, str]) -> None:
    """Re-runs the same cell: it must continue at epoch HOLD_EPOCH and show epochs 1..EPOCHS."""
    reply, out = kernel.execute(CELL.format(directory=directory, epochs=EPOCHS), timeout=180)
    assert reply["status"] == "ok", kernel.text(out)
    resumed = f"resumed at epoch {HOLD_EPOCH}"

    # The fit ran only the unfinished epochs, from the restored weights.
    assert epochs_printed(out) == list(range(HOLD_EPOCH, EPOCHS + 1)), stdout(out)
    _, answer = kernel.execute("print(len(h.history['loss']), reg.optimizer.iterations.numpy())")
    # Keras's History covers this fit only; the restored optimizer counts every step (10 a epoch).
    assert kernel.text(answer).split() == [str(EPOCHS - HOLD_EPOCH + 1), str(EPOCHS * 10)]
    losses = losses_printed(out)
    # Weights restored: the first resumed epoch beats the last saved one (fresh ones: 100x worse).
    assert float(losses[HOLD_EPOCH]) < float(first_losses[HOLD_EPOCH - 1]), (first_losses, losses)

    # The live view says where it resumed while it runs, and so does the saved result.
    assert any(resumed in value for value in live_header_html(out)), live_header_html(out)
    result = final_result(out)
    assert resumed in result["text/html"]
    # The whole run and this kernel's part of it (issue 15: honest counts).
    assert result["text/plain"].startswith(
        f"kernelkit reg: finished ({EPOCHS} epochs, {EPOCHS - HOLD_EPOCH + 1} in this run)"
    ), result

    # The static result draws and tabulates every epoch, the earlier ones with their old values.
    rows = table_rows(result["text/html"])
    assert sorted(rows) == list(range(1, EPOCHS + 1)), rows
    for epoch, loss in first_losses.items():
        if epoch < HOLD_EPOCH:
            assert rows[epoch] == [loss], (epoch, rows[epoch], loss)
    for epoch in range(HOLD_EPOCH, EPOCHS + 1):
        assert rows[epoch] == [losses[epoch]]
    # One point per epoch on the loss chart (the legend's symbols and the best ring aside).
    # The curves are their own output after the result (a plotly figure over the SVG).
    curves = [
        m["content"]["data"]
        for m in out
        if m["msg_type"] == "display_data"
        and "application/vnd.plotly.v1+json" in m["content"]["data"]
    ][-1]
    chart = curves["text/html"].split('aria-label="loss"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<circle") - chart.count('<circle class="kk-best"') == EPOCHS


# --- tests ---------------------------------------------------------------------------------


def test_kernel_killed_mid_fit_then_same_cell_resumes_in_a_fresh_kernel(kernel, tmp_path):
    from jupyter_client.manager import start_new_kernel

    directory = str(tmp_path / "run")
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ), startup_timeout=120)
    doomed = type(kernel)(km, kc)  # the fixture's helper class, on a kernel we will kill
    try:
        _, seen = run_until_held(doomed, directory)
        first_losses = losses_printed(seen)
        # Kill the kernel hard in the middle of epoch 4: no finally, no on_train_end.
        os.kill(km.provisioner.pid, signal.SIGKILL)
        assert km.provisioner.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    assert sorted(os.listdir(directory)) == ["backup", "history.json"]

    # A fresh kernel (the fixture's), the same setup without the hold, the same cell.
    reply, out = kernel.execute(SETUP.format(hold=None))
    assert reply["status"] == "ok", kernel.text(out)
    check_resumed_run(kernel, directory, first_losses)
    # The run finished: its backup is gone, so the next run of the cell starts afresh.
    assert sorted(os.listdir(directory)) == ["history.json"]


def test_interrupt_mid_fit_then_same_cell_resumes_in_the_same_kernel(kernel, tmp_path):
    directory = str(tmp_path / "run")
    msg_id, seen = run_until_held(kernel, directory)
    first_losses = losses_printed(seen)
    kernel.km.interrupt_kernel()  # a graceful stop at the end of the current step
    reply, rest = kernel.collect(msg_id)
    assert reply["status"] == "ok", kernel.text(seen + rest)  # no traceback
    stopped = final_result(seen + rest)["text/plain"]
    assert stopped.startswith(f"kernelkit reg: stopped by user at epoch {HOLD_EPOCH}, step 2"), (
        stopped
    )

    # Same kernel: let the fit run through this time; the cell itself is unchanged.
    reply, _ = kernel.execute("HOLD_AT = None")
    assert reply["status"] == "ok"
    check_resumed_run(kernel, directory, first_losses)
