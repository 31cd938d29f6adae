"""Every public function checks its model and layer arguments: one line saying what it expected.

The lines come from one checker (``kernelkit.freezing.check_model`` and
``layer_list``), so they read the same everywhere; each case also asserts
that the model it was given is exactly as it was.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest

import kernelkit
from kernelkit import session

X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
FIX = "pass a Sequential, Functional or subclassed Keras model"


def dense_model() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.Dense(1, name="d2")],
        name="clf",
    )
    model.compile("sgd", "mse")
    return model


def stateful_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((3, 2), batch_size=4),
            keras.layers.LSTM(2, stateful=True, name="lstm"),
            keras.layers.Dense(1, name="out"),
        ],
        name="seq",
    )
    model.compile("sgd", "mse")
    return model


def state_of(model: keras.Model) -> tuple:
    """Weights, trainable flags and optimizer iterations: what a refused call must not change."""
    h = hashlib.sha256()
    for value in model.get_weights():
        h.update(np.ascontiguousarray(value).tobytes())
    flags = tuple(layer.trainable for layer in model._flatten_layers(include_self=True))
    return h.hexdigest(), flags, int(keras.ops.convert_to_numpy(model.optimizer.iterations))


# (function as the user calls it, call with the wrong model)
WRONG_MODEL = {
    "freeze": lambda m: kernelkit.freeze(m),
    "unfreeze": lambda m: kernelkit.unfreeze(m, "d1"),
    "set_trainable": lambda m: kernelkit.set_trainable(m, "d1", False),
    "recompile": lambda m: kernelkit.recompile(m),
    "freeze_to": lambda m: kernelkit.freeze_to(m, 1),
    "layer_lrs": lambda m: kernelkit.layer_lrs(m, {"d1": 1e-3}),
    "reset_states": lambda m: kernelkit.reset_states(m),
    "state_summary": lambda m: kernelkit.state_summary(m),
    "load_weights": lambda m: kernelkit.load_weights(m, "w.weights.h5"),
    "to_yaml": lambda m: kernelkit.to_yaml(m),
    "fit": lambda m: kernelkit.fit(m, X, X[:, :1], verbose=0),
    "register": lambda m: kernelkit.register("clf_arg", m),
    "card": lambda m: kernelkit.card(m),
}


@pytest.mark.parametrize("fn", sorted(WRONG_MODEL))
@pytest.mark.parametrize(
    ("value", "shown"),
    [(42, "an int (42)"), (None, "None"), ([1, 2], "a list ([1, 2])")],
)
def test_a_wrong_model_is_one_line_naming_what_was_expected(fn, value, shown):
    with pytest.raises(TypeError) as info:
        WRONG_MODEL[fn](value)
    assert str(info.value) == f"kernelkit.{fn}() expects a keras.Model; got {shown}: {FIX}"


@pytest.mark.parametrize("fn", ["freeze", "reset_states", "state_summary", "to_yaml", "recompile"])
def test_a_registered_name_instead_of_the_model_names_kernelkit_get(fn):
    with pytest.raises(TypeError) as info:
        WRONG_MODEL[fn]("clf")
    assert str(info.value) == (
        f"kernelkit.{fn}() expects a keras.Model; got a str ('clf'): pass the model itself, "
        f"e.g. kernelkit.{fn}(kernelkit.get('clf'))"
    )


def test_a_layer_instead_of_the_model_names_its_model():
    layer = dense_model().get_layer("d1")
    with pytest.raises(TypeError) as info:
        kernelkit.freeze(layer)
    assert str(info.value) == (
        "kernelkit.freeze() expects a keras.Model; got a Dense layer ('d1'): pass the model "
        "that holds this layer"
    )


def test_extract_and_feature_view_take_layers_too_and_say_so():
    for fn, call in (
        ("extract", lambda: kernelkit.extract(42, X)),
        ("FeatureView", lambda: kernelkit.FeatureView(42, X)),
    ):
        with pytest.raises(TypeError) as info:
            call()
        assert str(info.value) == (
            f"kernelkit.{fn}() expects a keras.Model or layer; got an int (42): {FIX}"
        )


RNN_TAIL = "; stateful layers: ['lstm']"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda m: kernelkit.reset_states(m, 3),
            "kernelkit.reset_states(): layers must be names or paths (str) of stateful layers, "
            "or a list of them, got an int (3)" + RNN_TAIL,
        ),
        (
            lambda m: kernelkit.reset_states(m, ["lstm", 3]),
            "kernelkit.reset_states(): layers must be names or paths (str) of stateful layers, "
            "or a list of them, got an int (3) in layers" + RNN_TAIL,
        ),
        (
            lambda m: kernelkit.reset_states(m, m.get_layer("lstm")),
            "kernelkit.reset_states(): layers must be names or paths (str) of stateful layers, "
            "or a list of them, got a LSTM layer ('lstm'); pass its name, 'lstm'" + RNN_TAIL,
        ),
        (
            lambda m: kernelkit.reset_states(m, {"lstm": True}),
            "kernelkit.reset_states(): layers must be names or paths (str) of stateful layers, "
            "or a list of them, got a dict ({'lstm': True})" + RNN_TAIL,
        ),
    ],
)
def test_reset_states_layer_arguments(call, expected):
    model = stateful_model()
    model.predict(np.ones((4, 3, 2), "float32"), batch_size=4, verbose=0)  # some state
    before = kernelkit.state_summary(model).rows
    with pytest.raises(TypeError) as info:
        call(model)
    assert str(info.value) == expected
    assert kernelkit.state_summary(model).rows == before  # nothing was reset


def test_reset_states_callback_checks_its_layers_when_made():
    with pytest.raises(TypeError) as info:
        kernelkit.ResetStates(layers=3)
    assert str(info.value) == (
        "kernelkit.ResetStates(): layers must be names or paths (str) of stateful layers, or a "
        "list of them, got an int (3)"
    )


EXTRACT = (
    "kernelkit.extract(): layers must be a layer name or path, or a layer, or a list of them, "
)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (3, EXTRACT + "got an int (3)"),
        ([3], EXTRACT + "got an int (3) in layers"),
        (2.5, EXTRACT + "got a float (2.5)"),
        ({"d1": 1}, EXTRACT + "got a dict ({'d1': 1})"),
    ],
)
def test_extract_layer_arguments(layers, expected):
    model = dense_model()
    before = state_of(model)
    with pytest.raises(TypeError) as info:
        kernelkit.extract(model, X, layers)
    assert str(info.value) == expected
    assert state_of(model) == before


def test_freeze_refuses_a_dict_instead_of_taking_its_keys():
    model = dense_model()
    before = state_of(model)
    with pytest.raises(TypeError) as info:
        kernelkit.freeze(model, {"d1": True})
    assert str(info.value) == (
        "kernelkit.freeze(): layers must be a name, an index, a glob like 'block3_*', a path "
        "like 'base/conv2' or a layer, or a list of them, got a dict ({'d1': True})"
    )
    assert state_of(model) == before  # d1 is still trainable


def test_freeze_keeps_its_own_line_for_a_spec_of_the_wrong_type():
    model = dense_model()
    before = state_of(model)
    with pytest.raises(TypeError) as info:
        kernelkit.freeze(model, ["d1", 2.5])
    assert str(info.value) == (
        "a layer is named by a name, an index, a glob like 'block3_*', a path like 'base/conv2' "
        "or the layer itself; got float."
    )
    assert state_of(model) == before


def test_load_weights_path_of_the_wrong_type():
    model = dense_model()
    before = state_of(model)
    with pytest.raises(TypeError) as info:
        kernelkit.load_weights(model, 42)
    assert str(info.value) == (
        "kernelkit.load_weights(): path is an int (42), not a file path; pass the .weights.h5, "
        ".keras or .h5 file's path as a str"
    )
    assert state_of(model) == before


def test_good_arguments_still_work():
    model = dense_model()
    assert kernelkit.freeze(model, "d1").changed == ("d1",)
    assert set(kernelkit.extract(model, X, ["d2"])) == {"d2"}
    rnn = stateful_model()
    assert kernelkit.reset_states(rnn, "lstm") == ["lstm"]
    assert kernelkit.reset_states(rnn, ["lstm"]) == ["lstm"]
    entry = kernelkit.register("clf_ok", model)
    try:
        assert kernelkit.card("clf_ok").model is model
    finally:
        session.unregister(entry.name)
