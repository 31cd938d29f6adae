"""Stateful RNN controls: reset, summaries, the ResetStates callback, fit guards."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras import layers

from kernelkit.rnn_state import (
    ResetStates,
    check_stateful_fit,
    fixed_batch_size,
    reset_states,
    state_summary,
    stateful_layers,
)

JAX = keras.backend.backend() == "jax"
# Keras 3 drops RNN state updates in the JAX trainer's compiled steps (see
# kernelkit.rnn_state._check_backend): tests of Keras carrying state through
# fit / predict run on TensorFlow only (the TensorFlow leg). Eager calls carry state on both.
_carry_skip = pytest.mark.skipif(JAX, reason="Keras 3's JAX trainer drops RNN state updates")


def needs_carry(test):
    return pytest.mark.tensorflow(_carry_skip(test))


def states_of(layer):
    """The layer's state tensors as numpy arrays (both directions for Bidirectional)."""
    if isinstance(layer, layers.Bidirectional):
        return states_of(layer.forward_layer) + states_of(layer.backward_layer)
    return [keras.ops.convert_to_numpy(v).copy() for v in keras.tree.flatten(layer.states)]


def all_zero(layer):
    return all(np.all(s == 0) for s in states_of(layer))


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def classic_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((32, 21, 16), dtype=np.float32)


def classic_model(batch=32, units=32):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 16), batch_size=batch),
            layers.LSTM(units, stateful=True, name="lstm"),
            layers.Dense(16, activation="softmax"),
        ],
        name="classic",
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def two_layer_model(batch=4):
    keras.utils.set_random_seed(1)
    inp = keras.Input(batch_shape=(batch, 5, 3))
    h = layers.LSTM(4, stateful=True, return_sequences=True, name="lstm")(inp)
    h = layers.GRU(3, stateful=True, name="gru")(h)
    return keras.Model(inp, layers.Dense(1, name="dense")(h), name="two")


# ---------------------------------------------------------------- the classic example


@needs_carry
def test_classic_example_state_carries_over_and_resets_to_zero():
    x = classic_data()
    model = classic_model()
    lstm = model.get_layer("lstm")
    assert all_zero(lstm)  # a fresh state is zero

    model.train_on_batch(x[:, :10], x[:, 10])
    first = states_of(lstm)
    assert all(np.abs(s).sum() > 0 for s in first)

    model.train_on_batch(x[:, 10:20], x[:, 20])
    second = states_of(lstm)
    assert all(np.abs(s).sum() > 0 for s in second)
    assert not any(np.allclose(a, b) for a, b in zip(first, second, strict=True))

    assert reset_states(model) == ["lstm"]
    assert all_zero(lstm)  # exactly zero, both h and c

    # predict also advances the state
    model.predict(x[:, :10], batch_size=32, verbose=0)
    assert not all_zero(lstm)


@needs_carry
def test_state_carries_over_exactly_between_batches():
    """Two chunks through the stateful model end in the state of one 20-step pass."""
    x = classic_data()
    model = classic_model()
    model.predict_on_batch(x[:, :10])
    carried = model.predict_on_batch(x[:, 10:20])
    h, c = states_of(model.get_layer("lstm"))

    # A stateless twin with the same weights, fed all 20 steps at once.
    inp = keras.Input((20, 16))
    _, h_full, c_full = layers.LSTM(32, return_state=True, name="twin")(inp)
    twin = keras.Model(inp, [h_full, c_full])
    twin.get_layer("twin").set_weights(model.get_layer("lstm").get_weights())
    h_ref, c_ref = (keras.ops.convert_to_numpy(t) for t in twin.predict_on_batch(x[:, :20]))
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_allclose(c, c_ref, atol=1e-5)

    # Without the carried state the second chunk's predictions differ.
    reset_states(model)
    fresh = model.predict_on_batch(x[:, 10:20])
    assert not np.allclose(keras.ops.convert_to_numpy(carried), keras.ops.convert_to_numpy(fresh))


# ---------------------------------------------------------------- which layers


def test_reset_one_named_layer_leaves_the_other_untouched():
    model = two_layer_model()
    model(np.ones((4, 5, 3), "float32"))
    lstm_before = states_of(model.get_layer("lstm"))
    assert not all_zero(model.get_layer("gru"))

    assert reset_states(model, "gru") == ["gru"]
    assert all_zero(model.get_layer("gru"))
    for before, after in zip(lstm_before, states_of(model.get_layer("lstm")), strict=True):
        np.testing.assert_array_equal(before, after)
    assert np.abs(lstm_before[0]).sum() > 0


def test_bidirectional_resets_both_directions():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input(batch_shape=(2, 4, 3)), layers.Bidirectional(layers.GRU(3, stateful=True))]
    )
    bidi = model.layers[0]
    model(np.ones((2, 4, 3), "float32"))
    assert not all_zero(bidi.forward_layer) and not all_zero(bidi.backward_layer)

    assert list(stateful_layers(model)) == [bidi.name]
    assert [row.state for row in state_summary(model)] == ["forward.h", "backward.h"]
    reset_states(model)
    assert all_zero(bidi.forward_layer) and all_zero(bidi.backward_layer)


def test_nested_model_layers_are_found_by_path_and_by_name():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential(
        [keras.Input(batch_shape=(2, 4, 3)), layers.LSTM(3, stateful=True, name="lstm")],
        name="inner",
    )
    inp = keras.Input(batch_shape=(2, 4, 3))
    outer = keras.Model(inp, layers.Dense(1, name="head")(inner(inp)), name="outer")
    assert list(stateful_layers(outer)) == ["inner/lstm"]

    outer(np.ones((2, 4, 3), "float32"))
    lstm = inner.get_layer("lstm")
    assert not all_zero(lstm)
    assert reset_states(outer, ["inner/lstm"]) == ["inner/lstm"]
    assert all_zero(lstm)

    outer(np.ones((2, 4, 3), "float32"))
    assert reset_states(outer, "lstm") == ["inner/lstm"]
    assert all_zero(lstm)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: layers.ConvLSTM1D(2, 3, padding="same", stateful=True, name="conv"), (3, 5, 2)),
        (lambda: layers.ConvLSTM2D(2, 3, padding="same", stateful=True, name="conv"), (3, 4, 4, 1)),
    ],
    ids=["ConvLSTM1D", "ConvLSTM2D"],
)
def test_convlstm_reset(layer, shape):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input(batch_shape=(2, *shape)), layer()])
    model(np.ones((2, *shape), "float32"))
    conv = model.get_layer("conv")
    assert not all_zero(conv)
    assert [row.state for row in state_summary(model)] == ["h", "c"]
    reset_states(model)
    assert all_zero(conv)


def test_bad_names_raise_one_line_and_reset_nothing():
    model = two_layer_model()
    model(np.ones((4, 5, 3), "float32"))
    before = [states_of(model.get_layer(n)) for n in ("lstm", "gru")]

    closest = r"no stateful layer named 'lstn'.*closest names: \['lstm'"
    with pytest.raises(ValueError, match=closest):
        reset_states(model, ["gru", "lstn"])  # 'gru' must not be reset either
    with pytest.raises(ValueError, match="'dense' is not a stateful recurrent layer"):
        reset_states(model, "dense")
    with pytest.raises(TypeError, match="names or paths"):
        reset_states(model, [model.layers[1]])
    for name, saved in zip(("lstm", "gru"), before, strict=True):
        for a, b in zip(saved, states_of(model.get_layer(name)), strict=True):
            np.testing.assert_array_equal(a, b)

    plain = keras.Sequential([keras.Input((3,)), layers.Dense(1)], name="plain")
    with pytest.raises(ValueError, match=r"'plain' has no stateful recurrent layer.*stateful=True"):
        reset_states(plain)


def test_state_summary_rows_and_reprs():
    model = classic_model(batch=4, units=3)
    x = np.linspace(0, 1, 4 * 10 * 16, dtype="float32").reshape(4, 10, 16)
    model(x)
    summary = state_summary(model)
    h, c = states_of(model.get_layer("lstm"))

    assert [(r.path, r.layer, r.state, r.shape) for r in summary] == [
        ("lstm", "LSTM", "h", (4, 3)),
        ("lstm", "LSTM", "c", (4, 3)),
    ]
    assert summary[0].norm == pytest.approx(float(np.linalg.norm(h)), rel=1e-6)
    assert summary[1].norm == pytest.approx(float(np.linalg.norm(c)), rel=1e-6)
    assert summary.batch_size == 4 and summary.layers == ["lstm"]

    reset_states(model)
    text = repr(state_summary(model))
    assert text == (
        "States of model 'classic': 1 stateful layer, batch size 4\n"
        "layer  class  state  shape   norm\n"
        "lstm   LSTM   h      (4, 3)  0\n"
        "lstm   LSTM   c      (4, 3)  0"
    )
    page = state_summary(model)._repr_html_()
    assert page.count("<tr>") == 3
    assert "<td style='text-align:left;padding:0 8px'>(4, 3)</td>" in page

    plain = keras.Sequential([keras.Input((3,)), layers.Dense(1)], name="plain")
    assert len(state_summary(plain)) == 0
    assert repr(state_summary(plain)) == "States of model 'plain': no stateful layer"


def test_unbuilt_stateful_layer_is_listed_without_state():
    model = keras.Sequential([layers.LSTM(3, stateful=True, name="lstm")], name="deferred")
    (row,) = state_summary(model)
    assert (row.path, row.shape, row.norm) == ("lstm", None, None)
    assert fixed_batch_size(model) is None
    assert reset_states(model) == ["lstm"]  # nothing to zero yet, and no error


# ---------------------------------------------------------------- the callback


class Probe(keras.callbacks.Callback):
    """Records the sum of |state| where a step is about to run."""

    def __init__(self, layer_name):
        super().__init__()
        self.layer_name = layer_name
        self.at_epoch_start: list[float] = []
        self.at_validation_start: list[float] = []

    def _total(self):
        layer = self.model.get_layer(self.layer_name)
        return float(sum(np.abs(s).sum() for s in states_of(layer)))

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.at_epoch_start.append(self._total())

    def on_test_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.at_validation_start.append(self._total())


def seq_data(n=16):
    rng = np.random.default_rng(5)
    x = rng.random((n, 10, 16), dtype=np.float32)
    y = np.eye(16, dtype="float32")[rng.integers(0, 16, n)]
    return x, y


@needs_carry
def test_reset_states_callback_each_epoch():
    x, y = seq_data()
    model = classic_model(batch=4, units=4)
    model(x[:4])  # leave a non-zero state behind
    probe = Probe("lstm")
    reset = ResetStates(every="epoch")
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(x[:8], y[:8]),
        callbacks=[reset, probe],
    )
    assert probe.at_epoch_start == [0.0, 0.0]
    assert probe.at_validation_start == [0.0, 0.0]
    assert reset.resets == 4  # 2 epochs + 2 validations
    assert not all_zero(model.get_layer("lstm"))

    # Control: without the callback the next epoch starts from the last state.
    probe = Probe("lstm")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[probe])
    assert probe.at_epoch_start[0] > 0 and probe.at_epoch_start[1] > 0


@needs_carry
def test_reset_states_callback_once_per_fit():
    x, y = seq_data()
    model = classic_model(batch=4, units=4)
    model(x[:4])
    probe = Probe("lstm")
    reset = ResetStates(every="fit")
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[reset, probe])
    assert reset.resets == 1
    assert probe.at_epoch_start[0] == 0.0
    assert probe.at_epoch_start[1] > 0 and probe.at_epoch_start[2] > 0


def test_reset_states_callback_arguments():
    assert repr(ResetStates("fit", layers=["lstm"])) == "ResetStates(every='fit', layers=['lstm'])"
    with pytest.raises(ValueError, match=r"every must be one of \['never', 'epoch', 'fit'\]"):
        ResetStates(every="batch")
    x, y = seq_data(8)
    model = classic_model(batch=4, units=4)
    model(x[:4])
    never = ResetStates(every="never")
    never.set_model(model)
    for hook in (never.on_train_begin, never.on_test_begin, lambda: never.on_epoch_begin(0)):
        hook()
    assert never.resets == 0 and not all_zero(model.get_layer("lstm"))
    weights = weights_of(model)
    with pytest.raises(ValueError, match="closest names"):
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[ResetStates(layers="lstn")],
        )
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # it failed before the first step


# ---------------------------------------------------------------- guards


@pytest.fixture
def guarded():
    """A trained-a-little stateful model (batch 8) and a snapshot of it."""
    x, y = seq_data(32)
    model = classic_model(batch=8, units=4)
    model(x[:8])
    snapshot = (weights_of(model), states_of(model.get_layer("lstm")))
    yield model, x, y
    weights, states = snapshot
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(states, states_of(model.get_layer("lstm")), strict=True):
        np.testing.assert_array_equal(a, b)


def guard_message(model, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        check_stateful_fit(model, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@needs_carry
def test_guard_accepts_a_correct_fit(guarded):
    model, x, y = guarded
    check_stateful_fit(model, x, batch_size=8, shuffle=False, epochs=2, verbose=0)
    check_stateful_fit(model, x[:30], batch_size=8, shuffle=False, steps_per_epoch=3)
    check_stateful_fit(model, x, batch_size=8, shuffle=False, validation_data=(x[:16], y[:16]))
    check_stateful_fit(model, x, batch_size=8, shuffle=False, validation_split=0.25)


def test_guard_default_shuffle(guarded):
    model, x, _ = guarded
    message = guard_message(model, x, batch_size=8)
    assert "shuffle=True is Keras's default" in message
    assert "'lstm'" in message and message.endswith("pass shuffle=False.")
    assert "shuffle='batch'" in guard_message(model, x, batch_size=8, shuffle="batch")


def test_guard_batch_size(guarded):
    model, x, _ = guarded
    assert guard_message(model, x, batch_size=16, shuffle=False) == (
        "batch_size=16 differs from the fixed batch size 8 of stateful layer 'lstm'; "
        "pass batch_size=8."
    )
    message = guard_message(model, x, shuffle=False)
    assert "Keras uses 32" in message and message.endswith("pass batch_size=8.")


def test_guard_uneven_sample_count(guarded):
    model, x, y = guarded
    assert guard_message(model, x[:30], batch_size=8, shuffle=False) == (
        "x has 30 samples, not a multiple of the fixed batch size 8: the last batch would hold 6; "
        "trim 6 samples (x[:24]) or pad to 32."
    )
    # steps_per_epoch that reaches the partial batch is still a violation
    assert "trim 6" in guard_message(model, x[:30], batch_size=8, shuffle=False, steps_per_epoch=4)
    assert "validation_data has 12 samples" in guard_message(
        model, x, batch_size=8, shuffle=False, validation_data=(x[:12], y[:12])
    )
    assert guard_message(model, x[:20], batch_size=8, shuffle=False, validation_split=0.2) == (
        "the validation part of x (validation_split) has 4 samples, not a multiple of the fixed "
        "batch size 8: the last batch would hold 4; change validation_split or the number of "
        "samples."
    )
    assert "training part of x (validation_split) has 20" in guard_message(
        model, x[:25], batch_size=8, shuffle=False, validation_split=0.2
    )


@needs_carry
def test_guard_real_fit_would_have_failed(guarded):
    """What the guard prevents: Keras fails mid-epoch on the partial batch."""
    model, x, y = guarded
    guard_message(model, x[:30], batch_size=8, shuffle=False)
    clone = classic_model(batch=8, units=4)
    with pytest.raises(Exception, match=r"(?i)shape|batch size"):  # type depends on the backend
        clone.fit(x[:30], y[:30], batch_size=8, shuffle=False, epochs=1, verbose=0)


def test_guard_without_fixed_batch_size():
    model = keras.Sequential([layers.LSTM(3, stateful=True, name="lstm"), layers.Dense(1)])
    x = np.zeros((32, 10, 16), "float32")
    assert guard_message(model, x, batch_size=8, shuffle=False) == (
        "stateful layer 'lstm' has no fixed batch size: start the model with "
        "keras.Input(batch_shape=(8, 10, 16)) (Keras 3 dropped batch_input_shape)."
    )
    assert not model.built


@pytest.mark.tensorflow  # a tf.data.Dataset
def test_guard_dataset_batch():
    tf = pytest.importorskip("tensorflow")
    x, y = seq_data(32)
    model = classic_model(batch=8, units=4)
    good = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)
    if not JAX:
        check_stateful_fit(model, good)  # Keras ignores shuffle for datasets
    bad = tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)
    assert ".batch(8, drop_remainder=True)" in guard_message(model, bad)


def test_guard_is_a_fast_no_op_without_stateful_layers():
    model = keras.Sequential(
        [keras.Input((10, 16))]
        + [layers.Dense(4) for _ in range(40)]
        + [layers.LSTM(4)]  # a recurrent layer that is not stateful
    )
    x = np.zeros((30, 10, 16), "float32")
    check_stateful_fit(model, x)  # default shuffle, odd count: fine, nothing is stateful
    start = time.perf_counter()
    for _ in range(100):
        check_stateful_fit(model, x, batch_size=7)
    per_call = (time.perf_counter() - start) / 100
    assert per_call < 0.005, per_call


@pytest.mark.skipif(not JAX, reason="the JAX backend's limitation")
def test_guard_refuses_stateful_fits_on_jax(guarded):
    model, x, _ = guarded
    assert guard_message(model, x, batch_size=8, shuffle=False) == (
        "stateful layer 'lstm' would not keep its state between batches: Keras 3's JAX backend "
        "drops RNN state updates in fit, predict and train_on_batch; use KERAS_BACKEND=tensorflow "
        "for stateful training."
    )


@pytest.mark.skipif(not JAX, reason="the JAX backend's limitation")
def test_jax_predict_still_drops_the_state():
    """Canary: when Keras carries RNN state on JAX, lift the guard above."""
    model = classic_model(batch=4, units=3)
    model.predict_on_batch(np.ones((4, 10, 16), "float32"))
    assert all_zero(model.get_layer("lstm"))
