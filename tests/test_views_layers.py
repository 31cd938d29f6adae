"""The Layers tab: clicks become intents; flags, totals and pending marks follow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json

import ipywidgets
import keras
import pytest

from kernelkit.freezing import ensure_trainable_applied
from kernelkit.intents import SetTrainable
from kernelkit.operations import apply_intent
from kernelkit.views.layers import PAGE_SIZE, LayersPanel, tab


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
    panel = LayersPanel(make_model())  # it fits on a page: all listed at first
    panel.rows["base"].expand.value = False
    assert list(panel.rows) == ["base", "head"]
    assert panel.rows["base"].expand.icon == "caret-right"
    panel.rows["base"].expand.value = True
    assert list(panel.rows) == ["base", "base/d1", "base/bn", "base/d2", "head"]


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


# -- models of hundreds of layers: a page of rows, a bounded widget count ----------------


def _live() -> dict:
    # Every comm model (Layout and Style models too) is in ipywidgets 8's registry.
    return dict(ipywidgets.widgets.widget._instances)


def opened(model: keras.Model, submit=None) -> tuple[LayersPanel, list]:
    """A panel and the widget models its making opened."""
    before = set(_live())
    panel = LayersPanel(model, submit=submit or (lambda intent: True))
    return panel, [w for mid, w in _live().items() if mid not in before]


@pytest.fixture(scope="module")
def resnet() -> keras.Model:
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))  # 176 layers


def saved_kb(widgets: list, drop_defaults: bool) -> float:
    """The widget state a notebook saves: JupyterLab drops defaults, nbclient keeps them."""
    state = ipywidgets.Widget.get_manager_state(drop_defaults=drop_defaults, widgets=widgets)
    return len(json.dumps(state).encode()) / 1024


def test_widget_models_do_not_grow_with_depth(resnet):
    _, small_models = opened(make_model())
    deep, deep_models = opened(resnet)
    mobile, mobile_models = opened(
        keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    )
    assert len(deep.summary.rows) == 176 and len(mobile.summary.rows) == 155
    # A full page of rows, whatever the depth: the same models for 155 and 176 layers.
    assert len(deep.rows) == len(mobile.rows) == PAGE_SIZE
    assert len(deep_models) == len(mobile_models) < 400
    assert len(small_models) < len(deep_models)
    assert saved_kb(deep_models, drop_defaults=True) < 60  # the saved-notebook goal: 100 KB
    assert saved_kb(deep_models, drop_defaults=False) < 100
    for widget in small_models + deep_models + mobile_models:
        widget.close()


def test_pages_reuse_their_rows_and_a_click_on_page_two_names_its_layer(resnet):
    sent = []
    panel, _ = opened(resnet, submit=lambda intent: sent.append(intent) or False)
    paths = [info.path for info in panel.summary.rows]
    assert list(panel.rows) == paths[:PAGE_SIZE]
    assert f"rows 1–{PAGE_SIZE} of 176" in panel.page_label.value and panel.prev.disabled
    first_rows = list(panel.rows.values())
    before = len(_live())
    panel.next.click()
    assert list(panel.rows) == paths[PAGE_SIZE : 2 * PAGE_SIZE]
    assert f"rows {PAGE_SIZE + 1}–{2 * PAGE_SIZE} of 176" in panel.page_label.value
    assert list(panel.rows.values()) == first_rows  # the same widgets, rewritten
    assert len(_live()) == before

    target = paths[PAGE_SIZE + 3]
    click_toggle(panel, target, False)
    assert sent == [SetTrainable((target,), False)]
    assert panel.pending == {target: False} and panel.rows[target].toggle.value is False
    assert "pending: frozen" in panel.rows[target].note.value
    panel.prev.click()  # the row that showed it now shows another layer, unchanged
    assert panel.rows[paths[3]].toggle.value is True
    panel.next.click()
    assert panel.rows[target].toggle.value is False  # the pending flag comes back with its page
    for _ in range(10):
        panel.next.click()
    last = (len(paths) - 1) // PAGE_SIZE * PAGE_SIZE
    assert list(panel.rows) == paths[last:] and panel.next.disabled


def test_the_filter_narrows_the_rows_to_batch_normalization(resnet):
    panel, _ = opened(resnet)
    panel.filter.value = "bn"
    seen = []
    while True:
        seen += [row.info.type for row in panel.rows.values()]
        if panel.next.disabled:
            break
        panel.next.click()
    bn_layers = [i for i in panel.summary.rows if i.type == "BatchNormalization"]
    assert seen == ["BatchNormalization"] * len(bn_layers) == ["BatchNormalization"] * 53
    panel.filter.value = "*block1_1_*"  # a glob: whole path
    assert list(panel.rows) == [
        f"conv{stage}_block1_1_{kind}" for stage in (2, 3, 4, 5) for kind in ("conv", "bn", "relu")
    ]
    assert panel.page == 0 and "rows 1–12 of 12" in panel.page_label.value
    panel.filter.value = "no such layer"
    assert panel.rows == {} and "no rows" in panel.page_label.value
    panel.filter.value = ""
    assert len(panel.rows) == PAGE_SIZE


def transfer() -> keras.Model:
    base = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), include_top=False)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="tl")


def test_a_deep_nested_model_starts_collapsed_and_the_filter_looks_inside():
    model = transfer()
    sent = []
    panel, _ = opened(model, submit=lambda intent: sent.append(intent) or True)
    base = model.layers[1].name
    assert list(panel.rows) == [base, "pool", "head"]
    assert "rows 1–3 of 3 (153 filtered out or collapsed)" in panel.page_label.value
    panel.rows[base].expand.value = True
    inside = [info.path for info in panel.summary.rows][1:PAGE_SIZE]
    assert list(panel.rows) == [base, *inside]
    assert panel.rows[inside[0]].info.depth == 1
    panel.rows[base].expand.value = False
    assert list(panel.rows) == [base, "pool", "head"]

    panel.filter.value = "block_16_project"  # inside the collapsed model
    assert list(panel.rows) == [f"{base}/block_16_project", f"{base}/block_16_project_BN"]
    click_toggle(panel, f"{base}/block_16_project", False)
    assert sent == [SetTrainable((f"{base}/block_16_project",), False)]


def test_the_saved_table_and_text_list_every_layer(resnet):
    panel, _ = opened(resnet)
    panel.filter.value = "bn"  # what the page shows does not narrow the saved output
    html = panel.static_html()
    assert html.count("<tr>") == 1 + 176
    assert "<code>conv5_block3_out</code>" in html and "<code>conv1_pad</code>" in html
    text = repr(panel).splitlines()
    assert len(text) == 1 + 176 and text[-1].split()[1] == "predictions"
    assert any(line.split()[1] == "conv5_block3_out" for line in text[1:])
