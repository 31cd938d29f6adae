"""The Layers tab: clicks become intents; flags, totals and pending marks follow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import pytest

from kernelkit.freezing import ensure_trainable_applied
from kernelkit.intents import SetTrainable
from kernelkit.operations import apply_intent
from kernelkit.views.layers import LayersPanel, tab


def make_model() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(8, name="d2")(x)
    base = keras.Model(inputs, x, name="base")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(base(inputs)), name="tl")
    model.compile("adam", "mse")
    return model


def click_toggle(panel: LayersPanel, path: str, value: bool) -> None:
    # What a click in the browser does: a comm message that sets the synced trait.
    panel.rows[path].toggle.set_state({"value": value})


def test_rows_show_every_layer_with_nested_paths():
    panel = LayersPanel(make_model())
    assert list(panel.rows) == ["base", "base/d1", "base/bn", "base/d2", "head"]
    assert repr(panel) == (
        "LayersPanel('tl'): trainable params 155 · non-trainable params 16\n"
        "  [x] base       Functional          (None, 8)        144\n"
        "  [x]   base/d1  Dense               (None, 8)         40\n"
        "  [x]   base/bn  BatchNormalization  (None, 8)         32\n"
        "  [x]   base/d2  Dense               (None, 8)         72\n"
        "  [x] head       Dense               (None, 3)         27"
    )


def test_a_toggle_click_freezes_the_layer_and_updates_the_totals():
    model = make_model()
    panel = LayersPanel(model)
    click_toggle(panel, "base", False)
    assert not model.get_layer("base").trainable
    assert len(model.trainable_weights) == 2
    assert ensure_trainable_applied(model) is None  # already recompiled
    assert "trainable params <b>27</b>" in panel.totals.value
    assert "non-trainable params <b>144</b>" in panel.totals.value
    assert [panel.rows[p].toggle.value for p in panel.rows] == [False, False, False, False, True]

    click_toggle(panel, "base/d2", True)
    assert model.get_layer("base").get_layer("d2").trainable
    assert not model.get_layer("base").get_layer("d1").trainable
    assert "trainable params <b>99</b>" in panel.totals.value
    assert "2 of 3 layers inside frozen" in panel.rows["base"].note.value


def test_frozen_batchnorm_row_says_it_runs_in_inference_mode():
    model = make_model()
    panel = LayersPanel(model)
    assert "inference mode" not in repr(panel)
    click_toggle(panel, "base/bn", False)
    assert "inference mode" in panel.rows["base/bn"].note.value
    assert "inference mode" not in panel.rows["base/d1"].note.value


def test_freeze_up_to_here_and_freeze_all_buttons():
    model = make_model()
    panel = LayersPanel(model)
    panel.rows["base/bn"].up_to.click()
    base = model.get_layer("base")
    assert [layer.trainable for layer in base.layers[1:]] == [False, False, True]
    assert model.get_layer("head").trainable
    panel.freeze_all.click()
    assert len(model.trainable_weights) == 0
    assert "trainable params <b>0</b>" in panel.totals.value
    panel.unfreeze_all.click()
    assert len(model.trainable_weights) == 8
    assert all(row.toggle.value for row in panel.rows.values())


def test_changes_are_pending_while_a_fit_runs():
    model = make_model()
    queued = []

    def busy_submit(intent):
        queued.append(intent)
        return False  # a fit is running: the session queues it

    panel = LayersPanel(model, submit=busy_submit)
    click_toggle(panel, "head", False)
    assert queued == [SetTrainable(("head",), False)]
    assert model.get_layer("head").trainable  # untouched until the fit ends
    assert panel.rows["head"].toggle.value is False
    assert panel.pending == {"head": False}
    assert "pending: frozen when the running fit ends" in panel.rows["head"].note.value
    assert "changes pending" in repr(panel)

    apply_intent(model, queued[0])  # the session, after the fit
    panel.refresh()
    assert panel.pending == {}
    assert "pending" not in repr(panel)
    assert panel.rows["head"].toggle.value is False
    assert not model.get_layer("head").trainable


def test_refresh_after_a_change_by_hand_does_not_send_intents():
    model = make_model()
    sent = []
    panel = LayersPanel(model, submit=lambda intent: sent.append(intent) or True)
    model.get_layer("head").trainable = False
    panel.refresh()
    assert panel.rows["head"].toggle.value is False
    assert sent == []


def test_a_failed_submit_is_shown_and_the_row_goes_back():
    model = make_model()

    def failing(intent):
        raise ValueError("the model overrides compile()")

    panel = LayersPanel(model, submit=failing)
    click_toggle(panel, "head", False)
    assert "not applied: the model overrides compile()" in panel.status.value
    assert panel.rows["head"].toggle.value is True
    assert model.get_layer("head").trainable


def test_nested_models_collapse():
    panel = LayersPanel(make_model())
    panel.rows["base"].expand.value = False
    assert panel.rows["base/d1"].layout.display == "none"
    assert panel.rows["head"].layout.display is None
    panel.rows["base"].expand.value = True
    assert panel.rows["base/d1"].layout.display is None


def test_static_output_survives_without_a_kernel():
    panel = LayersPanel(make_model())
    data = panel._repr_mimebundle_()
    if isinstance(data, tuple):
        data = data[0]
    assert data["text/plain"] == repr(panel)
    html = data["text/html"]
    assert html == panel.static_html()
    assert "<table" in html and html.count("<tr>") == 1 + 5
    assert "<code>base/bn</code>" in html and "BatchNormalization" in html


def test_tab_applies_to_keras_models_only():
    assert isinstance(tab(make_model(), None), LayersPanel)
    assert tab(keras.layers.Dense(2), None) is None
    assert tab("not a model", None) is None


@pytest.mark.parametrize("value", [False, True])
def test_toggle_to_the_current_value_sends_nothing(value):
    model = make_model()
    model.get_layer("head").trainable = value
    sent = []
    panel = LayersPanel(model, submit=lambda intent: sent.append(intent) or True)
    click_toggle(panel, "head", value)
    assert sent == []
