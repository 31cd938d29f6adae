"""kernelkit.fit and the registry: intents queued during a fit, recompiles, fit arguments."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kernelkit
from kernelkit import events as ev
from kernelkit import intents


@pytest.fixture
def registered(tiny_model):
    entry = kernelkit.register("reg", tiny_model)
    yield entry
    kernelkit.unregister("reg")


class SubmitDuringFit(keras.callbacks.Callback):
    """Plays the panel: submits a freeze while the fit runs."""

    def __init__(self, entry):
        super().__init__()
        self.entry = entry
        self.answers = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            first = self.entry.model.layers[0].name
            self.answers.append(self.entry.submit(intents.SetTrainable((first,), False)))
            self.answers.append(self.entry.model.layers[0].trainable)


def test_intent_during_fit_waits_for_the_fit_to_end(registered, tiny_data, capsys):
    x, y = tiny_data
    probe = SubmitDuringFit(registered)
    kernelkit.fit(registered.model, x, y, epochs=2, batch_size=32, callbacks=[probe])
    assert probe.answers == [False, True]  # queued, not applied mid-fit
    assert registered.pending == []
    assert registered.model.layers[0].trainable is False  # applied when the fit ended
    before = [w.numpy().copy() for w in registered.model.layers[0].weights]
    registered.model.fit(x, y, epochs=1, batch_size=32)
    after = [w.numpy() for w in registered.model.layers[0].weights]
    # The freeze took effect.
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


class StopThroughTheCard(keras.callbacks.Callback):
    """Plays the card: a stop and a freeze submitted in the same step of a running fit."""

    def __init__(self, entry):
        super().__init__()
        self.entry = entry
        self.answers = []

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1 and not self.answers:
            first = self.entry.model.layers[0].name
            self.answers.append(self.entry.submit(intents.SetTrainable((first,), False)))
            self.answers.append(self.entry.submit(intents.StopTraining("user")))


def test_a_stop_from_the_card_acts_at_once_and_a_freeze_waits(registered, tiny_data, capsys):
    x, y = tiny_data
    probe = StopThroughTheCard(registered)
    registered.model.fit(x, y, epochs=3, batch_size=16, callbacks=[probe])
    assert probe.answers == [False, True]  # the freeze queued, the stop taken
    assert "stopped by user at epoch 1, step 2 of" in registered.last_summary
    assert registered.model.layers[0].trainable is False  # the freeze, once the fit ended
    # After the fit, a stop has no fit to reach: the next fit runs to its end.
    assert registered.submit(intents.StopTraining("user")) is True
    registered.model.fit(x, y, epochs=2, batch_size=16)
    assert ": finished (2 epochs)" in registered.last_summary, registered.last_summary


def test_hand_made_trainable_change_recompiles_with_one_line(registered, tiny_data, capsys):
    x, y = tiny_data
    registered.model.fit(x, y, epochs=1, batch_size=32)
    capsys.readouterr()
    registered.model.layers[1].trainable = False
    registered.model.fit(x, y, epochs=1, batch_size=32)
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if "recompiled" in line]
    assert len(lines) == 1 and "'reg'" in lines[0], out
    assert len(registered.model.trainable_weights) == 2


def test_stop_intent_acts_at_once(registered, tiny_data):
    x, y = tiny_data

    class StopAfterFirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            registered.submit(intents.StopTraining())

    got = []
    kernelkit.fit(registered.model, x, y, epochs=5, batch_size=32,
                  callbacks=[StopAfterFirstBatch(),
                             kernelkit.LiveProgress(display="none", sink=got.append)])
    assert got[-1].state == "stopped_by_user"
    assert got[-1].reason == "stopped by user at epoch 1, step 1 of 8"
    assert registered.runs == 1


def test_fit_arguments_validation_freq_class_weight_multi_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype("float32")
    inp = keras.Input((4,))
    h = keras.layers.Dense(4)(inp)
    main = keras.layers.Dense(2, activation="softmax", name="main_output")(h)
    aux = keras.layers.Dense(1, name="aux_output")(h)
    model = keras.Model(inp, [main, aux])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"],
                  metrics=[["accuracy"], []])
    got = []
    kernelkit.fit(model, x, [rng.integers(0, 2, 120), x[:, :1]], epochs=4, batch_size=16,
                  validation_split=0.25, validation_freq=2,
                  callbacks=[kernelkit.LiveProgress(display="none", sink=got.append)])
    ends = [e for e in got if isinstance(e, ev.EpochEnd)]
    assert "main_output_loss" in ends[0].logs and "aux_output_loss" in ends[0].logs
    assert "val_loss" not in ends[0].logs and "val_loss" in ends[1].logs  # validation_freq=2
    assert got[-1].state == "finished"

    single = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    single.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    got = []
    kernelkit.fit(single, x, rng.integers(0, 2, 120), epochs=1, batch_size=16,
                  class_weight={0: 1.0, 1: 3.0},
                  callbacks=[kernelkit.LiveProgress(display="none", sink=got.append)])
    assert got[-1].state == "finished" and got[0].steps == 8


def test_failure_inside_fit_shows_failed_and_reraises(tiny_model, tiny_data):
    x, y = tiny_data

    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("disk full")

    got = []
    with pytest.raises(RuntimeError, match="disk full"):
        kernelkit.fit(tiny_model, x, y, epochs=2, batch_size=32,
                      callbacks=[Boom(), kernelkit.LiveProgress(display="none", sink=got.append)])
    assert got[-1].state == "failed" and got[-1].reason == "RuntimeError: disk full"


def test_text_view_outside_a_kernel(tiny_model, tiny_data, capsys):
    x, y = tiny_data
    kernelkit.fit(tiny_model, x, y, epochs=2, batch_size=32, validation_split=0.25)
    out = capsys.readouterr().out
    assert "Epoch 1/2 step 6/6" in out and "val_loss" in out
    assert out.strip().splitlines()[-1].startswith("kernelkit tiny: finished (2 epochs) - ")


class StopAtStep(keras.callbacks.Callback):
    """Asks the fit to stop after one step, as the Stop button does."""

    def __init__(self, live, epoch, step):
        super().__init__()
        self.live, self.at, self.epoch = live, (epoch, step), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            self.live.request_stop("user")


def test_an_epoch_cut_short_is_not_counted_as_done(tiny_model, tiny_data, capsys):
    x, y = tiny_data  # 256 samples: 16 steps of 16
    live = kernelkit.LiveProgress()
    kernelkit.fit(tiny_model, x, y, epochs=5, batch_size=16,
                  callbacks=[live, StopAtStep(live, epoch=2, step=3)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(
        "kernelkit tiny: stopped by user at epoch 3, step 3 of 16 (2 epochs complete) - loss "
    ), last
    assert int(tiny_model.optimizer.iterations.numpy()) == 2 * 16 + 3  # what really ran
    assert live.view.state.count_text() == "2 epochs complete"


def test_a_stop_at_an_epoch_end_counts_that_epoch(tiny_model, tiny_data, capsys):
    x, y = tiny_data
    live = kernelkit.LiveProgress()
    kernelkit.fit(tiny_model, x, y, epochs=5, batch_size=16,
                  callbacks=[live, StopAtStep(live, epoch=1, step=16)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(
        "kernelkit tiny: stopped by user at epoch 2, step 16 of 16 (2 epochs) - "
    ), last


def _close_tree(widget):
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def test_a_closed_card_stops_listening_and_a_failing_panel_says_so(registered, capsys):
    import gc

    first = kernelkit.card("reg")
    first.build()
    second = kernelkit.card("reg")
    second.build()
    assert len(registered.listeners) == 2
    # The first card's widgets are closed (its output cleared): it goes, and stops refreshing.
    _close_tree(first.widget)
    del first
    gc.collect()
    registered.changed()
    assert len(registered.listeners) == 1

    def broken(summary):
        raise RuntimeError("panel gone")

    second._show_summary = broken  # the live card's refresh fails: one line, nothing raised
    registered.changed()
    assert "a card of reg could not refresh and was skipped: RuntimeError('panel gone')" in (
        capsys.readouterr().err)


def test_the_last_run_is_known_without_a_view(registered, tiny_data):
    """display="none": no view, yet the card's "last run" says how the fit ended."""
    x, y = tiny_data
    live = kernelkit.LiveProgress(display="none")
    registered.model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[live])
    assert live.view is None
    assert registered.last_summary.startswith("kernelkit reg: finished (2 epochs) - loss ")
    assert registered.last_state == "finished"
    assert "Last run: kernelkit reg: finished (2 epochs)" in kernelkit.card("reg").summary_html()


def test_a_view_factory_is_used_instead_of_the_notebook_view(tiny_model, tiny_data):
    x, y = tiny_data
    seen = []

    class Recorder:
        def handle(self, event):
            seen.append(type(event).__name__)

    made = []
    live = kernelkit.LiveProgress(view_factory=lambda cb: made.append(cb) or Recorder())
    tiny_model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[live])
    assert made == [live] and seen[0] == "TrainBegin" and seen[-1] == "TrainEnd"
    with pytest.raises(ValueError, match=r"view_factory=\.\.\.\) takes a callable"):
        kernelkit.LiveProgress(view_factory="widget")


def test_the_card_the_layers_tab_and_the_model_table_count_parameters_alike(registered):
    from kernelkit import freezing

    model = registered.model
    model.layers[0].trainable = False
    card = kernelkit.card("reg")
    trainable, frozen = card.totals()
    summary = freezing.describe(model)
    (row,) = [r for r in kernelkit.models().rows if r[0] == "reg"]
    assert (trainable, frozen) == (summary.trainable_params, summary.non_trainable_params)
    assert row[2:4] == (f"{trainable + frozen:,}", f"{trainable:,}")
    assert trainable + frozen == model.count_params() and frozen > 0


def test_a_cells_fits_read_its_context_and_only_the_options_it_sets():
    from kernelkit.session import context

    defaults = context.FitDefaults(workers=2, checkpoint="best.keras", watch=True)
    # Unset options inherit nothing: they never override what the model already has.
    assert defaults.given() == {"workers": 2, "checkpoint": "best.keras", "watch": True}
    assert context.FitDefaults().given() == {}
    ns = {}
    outer = context.CellContext(name="a", namespace=ns, defaults=defaults)
    inner = context.CellContext(name="b", namespace=ns)
    assert context.current() is None
    with context.in_cell(outer):
        with context.in_cell(inner):
            assert context.current() is inner
        assert context.current() is outer
        ns["a"] = marker = object()
        assert outer.binds(marker) and not inner.binds(marker)
    assert context.current() is None
