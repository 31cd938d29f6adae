"""One path from intents to model operations, and one way a fit is stopped."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kernelkit
from kernelkit import _fitting, intents, operations
from kernelkit.callback import LiveProgress

X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")


def transfer_model() -> keras.Model:
    base = keras.Sequential(
        [keras.Input((4,)), layers.Dense(5, name="d1"), layers.BatchNormalization(name="bn"),
         layers.Dense(5, name="d2")],
        name="base",
    )
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3, name="head")(base(inputs)), name="tl")
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def stateful_model() -> keras.Model:
    inp = keras.Input(batch_shape=(4, 5, 3))
    h = layers.LSTM(4, stateful=True, return_sequences=True, name="lstm")(inp)
    h = layers.GRU(3, stateful=True, name="gru")(h)
    model = keras.Model(inp, layers.Dense(1, name="dense")(h), name="two")
    model(np.ones((4, 5, 3), "float32"))
    return model


def flags(model) -> dict[str, bool]:
    base = model.get_layer("base")
    return {"head": model.get_layer("head").trainable,
            **{f"base/{n}": base.get_layer(n).trainable for n in ("d1", "bn", "d2")}}


def test_set_trainable_freezes_and_unfreezes_by_path():
    model = transfer_model()
    assert operations.apply_intent(model, intents.SetTrainable(("head",), False)) is True
    assert flags(model)["head"] is False
    operations.apply_intent(model, intents.SetTrainable((), True))
    assert all(flags(model).values())
    operations.apply_intent(model, intents.SetTrainable((), False, up_to="base/bn"))
    assert flags(model) == {"head": True, "base/d1": False, "base/bn": False, "base/d2": True}
    # The change takes effect in training: the frozen kernel stays put.
    before = model.get_layer("base").get_layer("d1").get_weights()[0].copy()
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    after = model.get_layer("base").get_layer("d1").get_weights()[0]
    assert np.array_equal(before, after)


def test_freeze_to_freezes_through_the_named_layer():
    model = transfer_model()
    operations.apply_intent(model, intents.FreezeTo("base/d2", bn="frozen"))
    assert flags(model) == {"head": True, "base/d1": False, "base/bn": False, "base/d2": False}
    operations.apply_intent(model, intents.FreezeTo("base"))  # a nested model: all its layers
    assert flags(model) == {"head": True, "base/d1": False, "base/bn": False, "base/d2": False}
    with pytest.raises(ValueError, match="nope"):
        operations.apply_intent(model, intents.FreezeTo("nope"))


def test_reset_states_and_auto_reset_policy_checked():
    model = stateful_model()

    def zero(name):
        return all(not np.any(keras.ops.convert_to_numpy(s))
                   for s in model.get_layer(name).states)

    assert not zero("lstm") and not zero("gru")
    operations.apply_intent(model, intents.ResetStates(layers=("lstm",)))
    assert zero("lstm") and not zero("gru")
    operations.apply_intent(model, intents.ResetStates())
    assert zero("gru")
    assert operations.apply_intent(model, intents.SetAutoReset(every="epoch")) is True
    with pytest.raises(ValueError, match="every must be one of"):
        operations.apply_intent(model, intents.SetAutoReset(every="batch"))  # type: ignore[arg-type]


def test_anything_else_is_refused():
    with pytest.raises(TypeError, match="is not a kernelkit intent"):
        operations.apply_intent(transfer_model(), "freeze")


# ---------------------------------------------------------------- stopping


class SendAt(keras.callbacks.Callback):
    """Calls ``send`` once, at the end of step ``at`` of the first epoch."""

    def __init__(self, at: int, send) -> None:
        super().__init__()
        self.at, self.send, self.steps = at, send, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            self.send()


def fit_stopped_by(send_for) -> tuple[LiveProgress, SendAt]:
    model = transfer_model()
    live = LiveProgress(display="none")
    probe = SendAt(2, lambda: send_for(model, live))
    # As a %%kmodel cell or NAME.fit routes it: the session marks the fit as running.
    kernelkit.fit(model, X, Y, epochs=20, batch_size=4, callbacks=[live, probe])
    return live, probe


@pytest.mark.parametrize(
    "route",
    [
        # The card (a registered model's submit ends here too) and any panel's submit.
        lambda model, live: operations.apply_intent(model, intents.StopTraining("user")),
        # The JupyterLab command: it knows no model.
        lambda model, live: _fitting.stop_current("user"),
        # The progress view's button and the interrupt handler: the fit's own submit.
        lambda model, live: live.submit(intents.StopTraining("user")),
    ],
    ids=["card", "lab-command", "button-or-interrupt"],
)
def test_every_stop_route_is_one_intent_to_the_running_fit(route):
    live, probe = fit_stopped_by(route)
    assert "stopped by user at epoch 1, step 2 of 16" in live.status.summary(), (
        live.status.summary())
    assert probe.steps == 2  # Keras stopped after the step it was in


def test_a_stop_for_a_model_that_is_not_training_reaches_no_other_fit():
    other = transfer_model()
    live, probe = fit_stopped_by(
        lambda model, live: operations.apply_intent(other, intents.StopTraining("user")))
    assert ": finished (20 epochs)" in live.status.summary(), live.status.summary()
    assert probe.steps == 20 * 16


def test_a_running_fit_takes_only_stop():
    live = LiveProgress(display="none")
    with pytest.raises(TypeError, match="takes StopTraining only, not SetTrainable"):
        live.submit(intents.SetTrainable(("head",), False))
    assert not live.stop_requested


def test_the_stop_button_sends_stop_training():
    from kernelkit.views.progress import ProgressView

    sent: list = []
    view = ProgressView(submit=lambda intent: sent.append(intent) or True)
    view.build()
    try:
        view.stop_button.click()
        assert sent == [intents.StopTraining("user")]
        assert (view.stop_button.description, view.stop_button.disabled) == ("Stopping…", True)
    finally:
        for widget in (view.widget, view.body, view.stop_button):
            widget.close()

