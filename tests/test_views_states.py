"""The States tab: clicks become intents; the default submit resets; refresh() reads norms."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras import layers

from kernelkit import intents
from kernelkit.views.states import StatesPanel, tab


def two_layer_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input(batch_shape=(2, 4, 3))
    h = layers.LSTM(3, stateful=True, return_sequences=True, name="lstm")(inp)
    h = layers.GRU(2, stateful=True, name="gru")(h)
    return keras.Model(inp, layers.Dense(1, name="dense")(h), name="two")


def run(model):
    """Moves the state (an eager call carries state on every backend)."""
    model(np.linspace(0, 1, 24, dtype="float32").reshape(2, 4, 3))


def state_total(model, name):
    layer = model.get_layer(name)
    return float(sum(np.abs(keras.ops.convert_to_numpy(v)).sum() for v in layer.states))


def click(button):
    """What a front end sends when the button is clicked."""
    button._handle_msg(
        {"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []}
    )


def choose(selector, label):
    """What a front end sends when a ToggleButtons option is chosen (its index)."""
    index = [option[0] for option in selector.options].index(label)
    selector._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"index": index}, "buffer_paths": []}
            },
            "buffers": [],
        }
    )


class Recorder:
    def __init__(self, result=True):
        self.intents = []
        self.result = result

    def __call__(self, intent):
        self.intents.append(intent)
        return self.result


def test_tab_is_none_without_stateful_layers():
    plain = keras.Sequential([keras.Input((4, 3)), layers.LSTM(2), layers.Dense(1)])
    assert tab(plain, Recorder()) is None
    assert isinstance(tab(two_layer_model(), Recorder()), StatesPanel)


def test_clicks_and_selector_send_intents():
    model = two_layer_model()
    sink = Recorder()
    panel = tab(model, sink)
    assert list(panel.reset_buttons) == ["lstm", "gru"]

    click(panel.reset_buttons["gru"])
    click(panel.reset_all_button)
    choose(panel.auto_reset_selector, "each epoch")
    choose(panel.auto_reset_selector, "each fit")
    assert sink.intents == [
        intents.ResetStates(layers=("gru",)),
        intents.ResetStates(layers=None),
        intents.SetAutoReset(every="epoch"),
        intents.SetAutoReset(every="fit"),
    ]
    assert panel.auto_reset == "fit"
    assert panel.status.value == "Auto-reset: each fit."


def test_queued_intents_say_so():
    model = two_layer_model()
    run(model)
    panel = StatesPanel(model, Recorder(result=False))
    click(panel.reset_buttons["lstm"])
    assert "queued" in panel.status.value
    assert state_total(model, "lstm") > 0  # the session, not the panel, applies it
    choose(panel.auto_reset_selector, "each epoch")
    assert panel.status.value == "Auto-reset: each epoch, from the next fit."


def test_default_submit_resets_and_refreshes():
    model = two_layer_model()
    run(model)
    panel = StatesPanel(model)
    lstm_norms = [r.norm for r in panel.summary if r.path == "lstm"]
    assert all(n > 0 for n in lstm_norms)

    click(panel.reset_buttons["lstm"])
    assert state_total(model, "lstm") == 0.0 and state_total(model, "gru") > 0
    assert panel.status.value == "Reset lstm."
    assert [r.norm for r in panel.summary if r.path == "lstm"] == [0.0, 0.0]
    assert "norm <b>0</b>" in panel._norms["lstm"].value

    click(panel.reset_all_button)
    assert state_total(model, "gru") == 0.0
    assert all(r.norm == 0.0 for r in panel.summary)

    choose(panel.auto_reset_selector, "each epoch")
    assert "callbacks=[kernelkit.ResetStates(every='epoch')]" in panel.status.value
    assert panel.auto_reset == "epoch"


def test_refresh_updates_norms():
    model = two_layer_model()
    panel = StatesPanel(model)
    assert all(r.norm == 0.0 for r in panel.summary)
    run(model)
    assert all(r.norm == 0.0 for r in panel.summary)  # not live: read on refresh()
    panel.refresh()
    norms = {(r.path, r.state): r.norm for r in panel.summary}
    h = keras.ops.convert_to_numpy(model.get_layer("gru").states[0])
    assert norms[("gru", "h")] == pytest.approx(float(np.linalg.norm(h)), rel=1e-6)
    assert f"norm <b>{norms[('gru', 'h')]:.4g}</b>" in panel._norms["gru"].value


def test_errors_from_submit_show_in_the_status_line():
    model = two_layer_model()

    def failing(intent):
        raise ValueError("no stateful layer named 'x'")

    panel = StatesPanel(model, failing)
    click(panel.reset_all_button)
    assert "no stateful layer named &#x27;x&#x27;" in panel.status.value


def test_reprs_are_deterministic_and_static():
    model = two_layer_model()
    panel = StatesPanel(model, Recorder(), auto_reset="epoch")
    text = (
        "StatesPanel: model 'two': 2 stateful layers, batch size 2; auto-reset each epoch\n"
        "  lstm (LSTM): h (2, 3) norm 0; c (2, 3) norm 0\n"
        "  gru (GRU): h (2, 2) norm 0"
    )
    assert repr(panel) == text
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == text  # not cut at 110 characters
    assert "application/vnd.jupyter.widget-view+json" in bundle
    page = bundle["text/html"]
    assert page.count("<tr>") == 4 and "Auto-reset: each epoch" in page
    assert repr(StatesPanel(model, Recorder(), auto_reset="epoch")) == text


def test_bad_arguments():
    with pytest.raises(ValueError, match="auto_reset must be one of"):
        StatesPanel(two_layer_model(), auto_reset="batch")
    plain = keras.Sequential([keras.Input((3,)), layers.Dense(1)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no stateful recurrent layer"):
        StatesPanel(plain)
