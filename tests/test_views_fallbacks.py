"""Saved fallbacks stay current: a notebook saved at any moment reads without widget state.

GitHub, nbviewer, nbconvert and VS Code keep no widget state: they read each
widget output's ``text/plain`` and ``text/html``. Every kernelkit view
(card, layers, features, states, the live progress view) sends its bundle
again when what it shows changes, so the saved one says what the live one
shows: after a freeze the saved card says ``trainable no``.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from kernelkit import events as ev
from kernelkit.views import _static
from kernelkit.views.progress import ProgressView
from tests.test_views_charts import FakeHandle

WIDGET = "application/vnd.jupyter.widget-view+json"




def test_a_burst_of_changes_sends_one_update_with_current_fallbacks() -> None:
    shown = {"text": "v0"}
    fallback = _static.Fallback(lambda: {"text/plain": shown["text"]}, delay=60.0)
    fallback.changed()  # never displayed: nothing to update
    handle = FakeHandle()
    fallback.handles.append(handle)
    for version in ("v1", "v2", "v3"):  # three clicks in a row
        shown["text"] = version
        fallback.changed()
    assert handle.updates == []  # coalesced: waiting for more
    _static.flush_all()  # what IPython's post_run_cell does when a cell ends
    assert handle.updates == [{"text/plain": "v3"}]
    _static.flush_all()
    assert len(handle.updates) == 1  # nothing pending, nothing sent


def test_the_live_view_saves_what_it_shows_at_epoch_ends() -> None:
    view = ProgressView(fallback_refresh=0.0)
    view.build()
    handle = view._handle = FakeHandle()
    view._display_more = lambda bundle: None  # type: ignore[method-assign]
    events: list[ev.Event] = [
        ev.TrainBegin(epochs=10, initial_epoch=0, steps=4, model_name="demo", time=0.0)
    ]
    for epoch in range(3):
        events.append(ev.EpochBegin(epoch=epoch, time=epoch + 0.0))
        events += [
            ev.Step(epoch=epoch, step=s, logs={"loss": 1.0 / (epoch + s)}, time=epoch + s / 8)
            for s in range(1, 5)
        ]
        events.append(
            ev.EpochEnd(epoch=epoch, logs={"loss": 0.5 / (epoch + 1)}, steps=4, time=epoch + 0.9)
        )
    for event in events:
        view.history.apply(event)
        view._apply(event)
    saved = handle.updates[-1]
    assert saved[WIDGET]["model_id"] == view.widget.model_id  # still the live widget
    assert saved["text/plain"] == "kernelkit demo: training… Epoch 3/10 - loss 0.1667"
    assert "Epoch 3/10" in saved["text/html"] and "kk-table" in saved["text/html"]
    assert saved["text/html"] == view.body.value
    assert len(handle.updates) == 3  # one per epoch end, none per step
    view.finish()
    view.finish()


NOTEBOOK = [
    """
    %load_ext kernelkit
    import numpy as np, keras, kernelkit
    from kernelkit.views.layers import LayersPanel
    from kernelkit.views.states import StatesPanel
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    """,
    """
    %%kmodel clf --seed 0
    clf = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
                            keras.layers.Dense(1, name="head")], name="clf")
    clf.compile("sgd", "mse")
    """,
    'kernelkit.freeze(clf, "hidden")',
    "panel = LayersPanel(clf)\npanel",
    'panel.rows["head"].toggle.value = False  # as a click does',
    "view = kernelkit.FeatureView(clf, x[:8])\nview",
    'view.layer.value = "head"; view.sample.value = 3',
    """
    inp = keras.Input(batch_shape=(2, 3, 2))
    rnn = keras.Model(inp, keras.layers.LSTM(2, stateful=True, name="lstm")(inp), name="rnn")
    states = StatesPanel(rnn)
    states
    """,
    'states.auto_reset_selector.value = "epoch"',
]


@pytest.mark.kernel
def test_saved_notebook_follows_each_view_without_widget_state(tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(code).strip()) for code in NOTEBOOK]
    nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    # Read back as GitHub or VS Code would: the saved bundles, no widget state.
    saved = nbformat.read(path, as_version=4)

    def shown(index: int) -> dict[str, str]:
        (output,) = [o for o in saved.cells[index].outputs if WIDGET in o.get("data", {})]
        return output["data"]

    card = shown(1)
    rows = dict(re.findall(r"<tr><td>(\w+)</td>.*?<td>(yes|no)</td></tr>", card["text/html"]))
    # Both later freezes: kernelkit.freeze in cell 2, the panel's toggle in cell 4.
    assert rows == {"hidden": "no", "head": "no"}
    assert "0 trainable / 49 non-trainable" in card["text/plain"]

    layers = shown(3)  # shown with head trainable, then untoggled
    assert "[ ] head" in layers["text/plain"] and "trainable params 0 " in layers["text/plain"]

    features = shown(5)
    assert "layer='head', sample=3" in features["text/plain"]
    assert "<b>head</b>" in features["text/html"]

    assert "auto-reset each epoch" in shown(7)["text/plain"]
    assert "Auto-reset: each epoch" in shown(7)["text/html"]
