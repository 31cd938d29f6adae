"""The model card driven directly: a real tiny model, a recording ``submit``, no session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from kernelkit import intents, operations
from kernelkit.views.card import ModelCard


def small_model() -> keras.Model:
    inputs = keras.Input((4,))
    h = layers.Dense(5, name="hidden")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(h), name="small")
    model.compile("adam", "mse")
    return model


def stateful_model() -> keras.Model:
    inp = keras.Input(batch_shape=(2, 3, 1))
    out = layers.Dense(1, name="out")(layers.LSTM(2, stateful=True, name="lstm")(inp))
    return keras.Model(inp, out, name="rnn")


@dataclass
class Record:
    """What the card reads of a session entry, and nothing else."""

    name: str
    runs: int = 0
    last_summary: str = ""
    strategy_text: str = "default"
    sample: Any = None
    watch: Any = None
    sent: list = field(default_factory=list)
    refreshers: list = field(default_factory=list)

    def submit(self, intent):
        self.sent.append(intent)
        return False  # as the session answers during a fit: queued

    def listen(self, refresh):
        self.refreshers.append(refresh)


def titles(card: ModelCard) -> list[str]:
    return [title for title, _ in card.tab_builders()]


def test_an_unregistered_card_reads_the_model():
    card = ModelCard(small_model())
    assert repr(card) == (
        "<kernelkit model card 'small': Functional, 3 layers, 37 trainable / 0 non-trainable "
        "parameters, strategy default, 0 runs>"
    )
    html = card.summary_html()
    assert "<b>small</b> · Functional · strategy default" in html
    assert "<td>hidden</td><td>Dense</td><td>(None, 5)</td><td style='text-align:right'>25</td>" \
        "<td>yes</td>" in html
    assert "Trainable parameters: 37 · non-trainable: 0 · total: 37" in html
    assert titles(card) == ["Summary", "Layers", "Features"]


def test_tabs_follow_the_model_and_the_record():
    assert "States" in titles(ModelCard(stateful_model()))
    record = Record("small", runs=2, last_summary="kernelkit small: finished (3 epochs)")
    card = ModelCard(small_model(), record)
    assert titles(card) == ["Summary", "Layers", "Features", "Runs"]
    assert repr(card).endswith("2 runs; last run: kernelkit small: finished (3 epochs)>")
    assert "Last run: kernelkit small: finished (3 epochs)" in card.summary_html()


def test_tabs_are_built_when_first_opened_and_send_intents_to_the_record():
    model = small_model()
    record = Record("small")
    card = ModelCard(model, record)
    tab = card.build()
    assert card._built == [True, False, False]
    assert "Select this tab to load it." in tab.children[1].value
    assert record.refreshers == [card.refresh]

    tab.selected_index = 1  # as a click on "Layers" does
    assert card._built == [True, True, False]
    layers_panel = tab.children[1]
    layers_panel.rows["head"].toggle.value = False  # a click on the toggle
    assert record.sent == [intents.SetTrainable(("head",), False)]
    assert model.get_layer("head").trainable  # the card changed nothing itself


def test_a_card_without_session_applies_through_the_given_submit_and_refreshes():
    model = small_model()
    card = ModelCard(model, submit=operations.submitter(model))
    tab = card.build()
    tab.selected_index = 1
    tab.children[1].rows["head"].toggle.value = False
    assert not model.get_layer("head").trainable
    card.check_changed()  # what the end of the cell does
    assert "Trainable parameters: 25 · non-trainable: 12" in tab.children[0].value


def test_a_card_built_with_nothing_to_send_to_changes_nothing():
    model = small_model()
    submit = ModelCard(model).submit()
    assert submit(intents.SetTrainable(("head",), False)) is False
    assert model.get_layer("head").trainable


def test_the_saved_outputs_read_without_a_kernel():
    card = ModelCard(small_model())
    bundle = card._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == card.widget.model_id
    assert bundle["text/html"] == card.summary_html()
    assert bundle["text/plain"] == repr(card)


@pytest.fixture(autouse=True)
def _quiet_random():
    keras.utils.set_random_seed(0)
    np.random.seed(0)


def test_the_summary_of_a_deep_model_shows_its_first_and_last_layers():
    inputs = keras.Input((4,))
    h = inputs
    for i in range(80):
        h = layers.Dense(2, name=f"d{i}")(h)
    card = ModelCard(keras.Model(inputs, h, name="deep"))
    html = card.summary_html()
    shown = [f"<td>d{i}</td>" in html for i in range(80)]
    # 81 top-level layers (the input too): the first 20 and the last 10 are listed.
    assert shown == [i < 19 or i >= 70 for i in range(80)]
    assert "… 51 more layers (the Layers tab lists every one)" in html
    assert "Trainable parameters: 484 · non-trainable: 0 · total: 484" in html  # all counted
