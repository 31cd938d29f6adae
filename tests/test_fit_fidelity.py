"""A fit routed through kernelkit is Keras's Model.fit, and a non-finite loss loses nothing."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
from IPython.core.error import UsageError

import kernelkit
from kernelkit import session


def make(seed=0, bn=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="relu")]
    if bn:
        layers.append(keras.layers.BatchNormalization())
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")


@pytest.fixture
def routed():
    """Model.fit routed through kernelkit, exactly as while a %%kmodel cell runs."""
    with session.cell._fits_get_progress():
        yield


def quiet():
    return kernelkit.LiveProgress(display="none")


# --- fit is Model.fit ----------------------------------------------------------------------


def test_routed_fit_carries_keras_signature(routed):
    assert inspect.signature(keras.Model.fit) == session.fits._FIT_SIGNATURE
    assert keras.Model.fit.__doc__ == session.fits._KERAS_FIT.__doc__


def test_registered_fit_reads_as_the_bound_method(data):
    model = make()
    session.register("sig", model)
    try:
        assert "self" not in inspect.signature(model.fit).parameters
        assert list(inspect.signature(model.fit).parameters)[:3] == ["x", "y", "batch_size"]
    finally:
        session.unregister("sig")


def test_positional_arguments_after_y_bind_as_keras_binds_them(data, routed):
    x, y = data
    history = make().fit(x, y, 16, 2, 0)  # batch_size=16, epochs=2, verbose=0
    assert history.epoch == [0, 1]
    assert history.params["steps"] == 4


@pytest.mark.parametrize("form", ["single", "list", "tuple", "callbacklist"])
def test_every_form_of_callbacks_keras_accepts(data, routed, form):
    x, y = data
    model = make()
    seen = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))
    given = {
        "single": cb,
        "list": [cb],
        "tuple": (cb,),
        "callbacklist": keras.callbacks.CallbackList([cb], add_history=True, model=model),
    }[form]
    model.fit(x, y, epochs=2, verbose=0, callbacks=given)
    assert seen == [0, 1]
    if form == "callbacklist":  # kernelkit's own joined for that fit only
        assert [type(c).__name__ for c in given.callbacks] == ["LambdaCallback", "History"]


def test_a_stop_asked_in_another_callbacks_train_begin_holds(data, routed):
    x, y = data

    class StopAtOnce(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.stop_training = True

    plain = make()
    expected = session.fits._KERAS_FIT(plain, x, y, epochs=3, verbose=0, callbacks=[StopAtOnce()])
    got = make().fit(x, y, epochs=3, verbose=0, callbacks=[StopAtOnce()])
    assert got.epoch == expected.epoch == [0]


def test_a_subclass_fit_override_runs_once(data, routed):
    x, y = data
    calls = []

    class Own(keras.Sequential):
        def fit(self, *args, **kwargs):
            calls.append(1)
            return super().fit(*args, **kwargs)

    keras.utils.set_random_seed(0)
    model = Own([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    events = []
    model.fit(x, y, epochs=1, verbose=0)
    assert calls == [1]
    # ...and it still got kernelkit's live progress (one LiveProgress, not two).
    live = kernelkit.LiveProgress(display="none", sink=events.append)
    model.fit(x, y, epochs=1, callbacks=[live])
    assert calls == [1, 1] and sum(type(e).__name__ == "TrainBegin" for e in events) == 1


@pytest.mark.parametrize(
    ("option", "value", "line"),
    [
        (
            "workers",
            4,
            "workers= is not a Model.fit argument (Keras 3 has none such): for kernelkit's "
            "workers, use the %%kmodel option --workers 4 or kernelkit.fit(model, ..., workers=4)",
        ),
        (
            "tensorboard",
            True,
            "tensorboard= is not a Model.fit argument (Keras 3 has none such): for kernelkit's "
            "tensorboard, use the %%kmodel option --tensorboard or "
            "kernelkit.fit(model, ..., tensorboard=True)",
        ),
    ],
)
def test_kernelkit_only_keywords_through_model_fit_are_one_line(
    ip, data, routed, option, value, line
):
    x, y = data
    model = make()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(UsageError) as err:
        model.fit(x, y, epochs=1, **{option: value})
    assert str(err.value) == line
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_keras2_arguments_fail_as_keras_fails(data, routed):
    x, y = data
    with pytest.raises(TypeError) as routed_error:
        make().fit(x, y, epochs=1, use_multiprocessing=True)
    with pytest.raises(TypeError) as keras_error:
        session.fits._KERAS_FIT(make(), x, y, epochs=1, use_multiprocessing=True)
    assert "use_multiprocessing" in str(routed_error.value) and "use_multiprocessing" in str(
        keras_error.value
    )


def test_explicit_verbose_0_is_silent_outside_notebooks(data, routed, capsys):
    x, y = data
    make().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    make().fit(x, y, epochs=2)  # the default: kernelkit's one text line
    assert "finished (2 epochs)" in capsys.readouterr().out


def test_early_stopping_on_an_array_metric_keeps_the_history(data, routed):
    x, y = data
    model = make()

    class ArrayMetric(keras.callbacks.Callback):
        # As F1Score on one output: a shape-(1,) array in the logs.
        def on_epoch_end(self, epoch, logs=None):
            logs["f1"] = np.array([0.5])

    stop = keras.callbacks.EarlyStopping(monitor="f1", mode="max", patience=1)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[ArrayMetric(), stop])
    assert history.epoch == [0, 1]


# --- the last good state --------------------------------------------------------------------


class Blowup(keras.callbacks.Callback):
    """A finite first epoch, then a learning rate that takes the loss to inf/NaN."""

    def __init__(self):
        super().__init__()
        self.after_first = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.learning_rate.assign(1e30)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.after_first = (
                [w.copy() for w in self.model.get_weights()],
                [np.array(v) for v in self.model.optimizer.variables],
            )


def test_a_non_finite_loss_restores_the_last_finite_epoch(data):
    x, y = data
    model = make(bn=True)
    events = []
    blowup = Blowup()
    live = kernelkit.LiveProgress(display="none", sink=events.append)
    kernelkit.fit(model, x * 1e3, y * 1e3, epochs=4, batch_size=8, callbacks=[blowup, live])
    end = events[-1]
    assert end.state == "failed"
    assert end.reason.startswith("loss became ") and end.reason.endswith(
        "; weights restored to the end of epoch 1"
    )
    assert end.reason.split()[2] in ("NaN", "inf")
    weights, slots = blowup.after_first
    # BatchNormalization's moving statistics are among the weights.
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert all(
        np.array_equal(a, np.array(b))
        for a, b in zip(slots, model.optimizer.variables, strict=True)
    )
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_inf_and_nan_are_named_apart_and_restore_can_be_switched_off(data):
    x, y = data

    class Poison(keras.callbacks.Callback):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def on_train_batch_end(self, batch, logs=None):
            if self.params and batch == 2:
                logs["loss"] = float(self.value)  # what the next callbacks see, as Keras would

    for value, word in ((np.inf, "inf"), (np.nan, "NaN")):
        for restore in (True, False):
            model = make()
            events = []
            live = kernelkit.LiveProgress(
                display="none", sink=events.append, restore_on_nan=restore
            )
            kernelkit.fit(model, x, y, epochs=2, batch_size=8, callbacks=[Poison(value), live])
            reason = events[-1].reason
            assert reason.startswith(f"loss became {word} at epoch 1, step 3 of 8")
            assert reason.endswith("; weights restored to the start of the fit") is restore


# --- freezing always takes effect -----------------------------------------------------------


def test_a_flag_set_by_hand_takes_effect_in_kernelkit_fit_of_an_unregistered_model(data, capsys):
    x, y = data
    model = make()
    model.fit(x, y, epochs=1, verbose=0)  # Keras's own: its train function now exists
    hidden = model.layers[0]
    hidden.trainable = False  # by hand, after compile: Keras alone would still train it
    frozen = [w.copy() for w in hidden.get_weights()]
    kernelkit.fit(model, x, y, epochs=2, callbacks=[quiet()])
    assert all(np.array_equal(a, b) for a, b in zip(frozen, hidden.get_weights(), strict=True))
    out = capsys.readouterr().out
    assert "kernelkit: recompiled" in out and "changed trainable" in out


# --- model operations during a fit never break it --------------------------------------------


def test_freeze_from_a_callback_mid_fit_is_queued_and_applied_when_the_fit_ends(data, capsys):
    x, y = data
    model = make()

    class FreezeMidFit(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.returned = "not called"

        def on_train_batch_end(self, batch, logs=None):
            if batch == 1 and self.returned == "not called":
                self.returned = kernelkit.freeze(model, 0)  # Keras would crash on a recompile

    cb = FreezeMidFit()
    history = kernelkit.fit(model, x, y, epochs=2, batch_size=8, callbacks=[cb, quiet()])
    assert history.epoch == [0, 1]  # the fit ran to its end
    assert cb.returned is None
    assert model.layers[0].trainable is False  # applied afterwards
    out = capsys.readouterr().out
    assert "kernelkit: freeze(0) queued until the running fit of 'sequential" in out
    assert "kernelkit: applied freeze(0), queued while the fit ran" in out
    frozen = [w.copy() for w in model.layers[0].get_weights()]
    kernelkit.fit(model, x, y, epochs=1, callbacks=[quiet()])  # it really took effect
    assert all(
        np.array_equal(a, b) for a, b in zip(frozen, model.layers[0].get_weights(), strict=True)
    )


def test_outside_a_fit_operations_run_at_once(data):
    model = make()
    report = kernelkit.freeze(model, 0)
    assert report is not None and model.layers[0].trainable is False
