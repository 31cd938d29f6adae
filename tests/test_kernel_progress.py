"""Live progress in a real kernel, as a frontend sees it on iopub."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.kernel

SETUP = """
%load_ext kernelkit
import numpy as np, keras, kernelkit
keras.utils.set_random_seed(0)
x = np.random.rand(20000, 8).astype("float32"); y = x.sum(axis=1, keepdims=True)
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)], name="m")
m.compile("sgd", "mse")
ends = []
class End(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        ends.append(self.model.stop_training)
"""


def wait_for(kernel, msg_id, predicate, timeout=120.0):
    """Reads iopub until a message of the cell satisfies ``predicate``."""
    return kernel.wait_for(msg_id, predicate, timeout)


def is_live_view(msg):
    return msg["msg_type"] == "display_data" and (
        "application/vnd.jupyter.widget-view+json" in msg["content"]["data"])


def final_text(messages):
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    return updates[-1]["content"]["data"]["text/plain"] if updates else ""


def test_interrupt_stops_gracefully(kernel):
    reply, _ = kernel.execute(SETUP)
    assert reply["status"] == "ok"
    msg_id = kernel.kc.execute(
        "h = kernelkit.fit(m, x, y, epochs=50, batch_size=8, callbacks=[End()])"
    )
    first = wait_for(kernel, msg_id, is_live_view)
    # Wait until steps are running (a widget update arrives), then interrupt.
    first += wait_for(kernel, msg_id, lambda m: m["msg_type"] == "comm_msg")
    kernel.km.interrupt_kernel()
    reply, rest = kernel.collect(msg_id)
    messages = first + rest
    assert reply["status"] == "ok"  # no traceback
    assert not [m for m in messages if m["msg_type"] == "error"]
    text = final_text(messages)
    assert "stopped by user at epoch 1, step" in text, text
    reply, out = kernel.execute("print(len(ends), len(h.history.get('loss', [])) <= 1, "
                                "m.optimizer.iterations.numpy() < 50 * 2500)")
    assert kernel.text(out).strip() == "1 True True"


def test_stop_button_works_while_fit_runs(kernel):
    kernel.execute(SETUP)
    msg_id = kernel.kc.execute(
        "h = kernelkit.fit(m, x, y, epochs=50, batch_size=8, callbacks=[End()])"
    )
    seen = wait_for(kernel, msg_id, is_live_view)
    buttons = [m["content"]["comm_id"] for m in seen if m["msg_type"] == "comm_open"
               and m["content"]["data"]["state"].get("_model_name") == "ButtonModel"]
    assert buttons, "the live view has a Stop button"
    seen += wait_for(kernel, msg_id, lambda m: m["msg_type"] == "comm_msg")
    click = kernel.kc.session.msg("comm_msg", {
        "comm_id": buttons[0], "data": {"method": "custom", "content": {"event": "click"}}})
    kernel.kc.shell_channel.send(click)
    reply, rest = kernel.collect(msg_id, timeout=180)
    assert reply["status"] == "ok"
    text = final_text(seen + rest)
    # Stopped mid-run by the click, long before 50 epochs.
    assert "stopped by user at epoch 1, step" in text, text
    _, out = kernel.execute("print(ends)")
    assert kernel.text(out).strip() == "[True]"


def test_end_states_nan_earlystopping_and_steps_per_execution(kernel):
    kernel.execute(SETUP)
    _, out = kernel.execute("""
bad = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
bad.compile(keras.optimizers.SGD(learning_rate=1e12), "mse")
kernelkit.fit(bad, x[:2000] * 1e6, y[:2000], epochs=5, batch_size=32)
""")
    # A learning rate of 1e12 overflows the loss: inf (or NaN), named as it is.
    assert re.search(r"loss became (NaN|inf) at epoch 1, step \d+ of 63", final_text(out))

    _, out = kernel.execute("""
stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
kernelkit.fit(m, x[:2000], y[:2000], epochs=10, batch_size=32, callbacks=[stopper])
""")
    assert "EarlyStopping: loss did not improve for 1 epoch" in final_text(out)

    _, out = kernel.execute("""
spe = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
spe.compile("sgd", "mse", steps_per_execution=4)
h = kernelkit.fit(spe, x[:100], y[:100], epochs=2, batch_size=10)
""")
    last_update = [m for m in out if m["msg_type"] == "update_display_data"][-1]
    html = last_update["content"]["data"]["text/html"]
    assert "step 10/10" in html and "step 12" not in html
    assert "finished (2 epochs)" in final_text(out)


def test_kmodel_cell_and_later_fit_show_the_live_view(kernel):
    kernel.execute(SETUP)
    reply, out = kernel.execute("""%%kmodel clf --seed 1
clf = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
clf.compile("sgd", "mse")
clf.fit(x[:512], y[:512], epochs=2, batch_size=64)
""")
    assert reply["status"] == "ok"
    assert any(is_live_view(m) for m in out)
    assert "kernelkit clf: finished (2 epochs)" in final_text(out)
    # The card comes through a display handle (display_data) so its saved fallback can follow.
    card = [m for m in out if m["msg_type"] in ("execute_result", "display_data")
            and "model card" in m["content"]["data"].get("text/plain", "")]
    assert card and "kernelkit model card 'clf'" in card[-1]["content"]["data"]["text/plain"]
    # 512 samples in batches of 64 split over the 8 devices of the JAX leg too.
    reply, out = kernel.execute("h = clf.fit(x[:512], y[:512], epochs=1, batch_size=64)")
    assert any(is_live_view(m) for m in out)
    assert "kernelkit clf: finished (1 epoch)" in final_text(out)
