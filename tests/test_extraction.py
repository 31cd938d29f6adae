"""kernelkit.extract: every model kind, every layer, no side effects, clear errors."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import kernelkit
from kernelkit import extraction
from kernelkit.extraction import extract, layer_names, scan

layers = keras.layers
RNG = np.random.default_rng(0)


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def dense(layer: keras.layers.Dense, a: np.ndarray) -> np.ndarray:
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return a @ kernel + bias


def cnn() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            layers.BatchNormalization(name="bn"),
            layers.MaxPooling2D(name="pool"),
            layers.Conv2D(6, 3, activation="relu", name="conv2"),
            layers.Flatten(name="flat"),
            layers.Dropout(0.5, name="drop"),
            layers.Dense(5, name="logits"),
        ],
        name="cnn",
    )


class MLP(keras.Model):
    """A subclassed model: its layers have no symbolic outputs."""

    def __init__(self) -> None:
        super().__init__(name="mlp")
        self.hidden = layers.Dense(6, activation="relu", name="hidden")
        self.drop = layers.Dropout(0.5, name="drop")
        self.out = layers.Dense(3, name="out")

    def call(self, x, training=None):
        return self.out(self.drop(self.hidden(x), training=training))


def mlp() -> MLP:
    keras.utils.set_random_seed(2)
    model = MLP()
    model(np.zeros((1, 4), "float32"))
    return model


def images(n: int = 37) -> np.ndarray:
    return RNG.random((n, 8, 8, 1), dtype=np.float32)


# ------------------------------------------------------------------ Sequential/Functional


def test_sequential_every_layer_equals_the_keras_submodel() -> None:
    model = cnn()
    x = images(37)  # batch_size 16 leaves a last batch of 5
    got = extract(model, x, batch_size=16)
    assert list(got) == ["conv1", "bn", "pool", "conv2", "flat", "drop", "logits"]
    reference = keras.Model(model.inputs, [layer.output for layer in model.layers])
    for layer, expected in zip(model.layers, reference.predict(x, verbose=0), strict=True):
        assert got[layer.name].shape == expected.shape
        np.testing.assert_allclose(got[layer.name], expected, rtol=1e-5, atol=1e-6)


def test_functional_branches_equal_the_keras_submodel() -> None:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,), name="features")
    left = layers.Dense(4, activation="relu", name="left")(inputs)
    right = layers.Dense(4, activation="tanh", name="right")(inputs)
    merged = layers.Add(name="add")([left, right])
    model = keras.Model(inputs, layers.Dense(2, name="head")(merged), name="branches")
    x = RNG.normal(size=(20, 6)).astype("float32")
    got = extract(model, x, ["right", "add"])
    assert list(got) == ["right", "add"]  # the order asked for
    reference = keras.Model(inputs, [model.get_layer("right").output, merged])
    for name, expected in zip(["right", "add"], reference.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)


def test_layer_objects_and_names_both_select() -> None:
    model = cnn()
    x = images(4)
    by_object = extract(model, x, model.get_layer("conv2"))
    by_name = extract(model, x, "conv2")
    assert list(by_object) == ["conv2"]
    np.testing.assert_array_equal(by_object["conv2"], by_name["conv2"])


# ------------------------------------------------------------------ subclassed


def test_subclassed_model_equals_activations_computed_by_hand() -> None:
    model = mlp()
    x = RNG.normal(size=(10, 4)).astype("float32")
    got = extract(model, x, batch_size=4)
    hidden = relu(dense(model.hidden, x))
    assert list(got) == ["hidden", "drop", "out"]
    np.testing.assert_allclose(got["hidden"], hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["drop"], hidden, rtol=1e-5, atol=1e-6)  # inference: identity
    np.testing.assert_allclose(got["out"], dense(model.out, hidden), rtol=1e-5, atol=1e-5)


def test_layers_inside_a_custom_block_get_paths() -> None:
    class Block(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = layers.Dense(3, activation="relu", name="inner")

        def call(self, x):
            return x[:, :3] + self.inner(x)

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.block = Block(name="block")

        def call(self, x):
            return self.block(x)

    keras.utils.set_random_seed(4)
    model = Net()
    x = RNG.normal(size=(5, 3)).astype("float32")
    model(x)
    got = extract(model, x)
    assert list(got) == ["block", "block/inner"]
    inner = relu(dense(model.block.inner, x))
    np.testing.assert_allclose(got["block/inner"], inner, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["block"], x + inner, rtol=1e-5, atol=1e-6)


def test_a_model_compiled_to_run_eagerly_is_run_eagerly() -> None:
    class Picky(keras.Model):
        """Branches on a concrete value: it cannot be traced into a graph."""

        def __init__(self):
            super().__init__(name="picky")
            self.up = layers.Dense(2, name="up")

        def call(self, x):
            scale = 2.0 if float(keras.ops.convert_to_numpy(keras.ops.sum(x))) > 0 else -1.0
            return self.up(x * scale)

    model = Picky()
    x = np.ones((3, 2), "float32")
    model(x)
    model.compile(loss="mse", run_eagerly=True)
    got = extract(model, x)["up"]
    np.testing.assert_allclose(got, dense(model.up, 2 * x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ structure


def nested() -> keras.Model:
    keras.utils.set_random_seed(5)
    base = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(5, activation="relu", name="d1"),
            layers.Dense(3, name="d2"),
        ],
        name="base",
    )
    inputs = keras.Input((4,), name="x")
    inner_in = keras.Input((3,))
    tower = keras.Model(inner_in, layers.Dense(2, name="t1")(inner_in), name="tower")
    return keras.Model(inputs, tower(base(inputs)), name="outer")


def test_nested_models_are_named_by_path_and_computed_from_the_outer_input() -> None:
    model = nested()
    x = RNG.normal(size=(9, 4)).astype("float32")
    assert layer_names(model) == ["base", "base/d1", "base/d2", "tower", "tower/t1"]
    got = extract(model, x)
    assert list(got) == ["base", "base/d1", "base/d2", "tower", "tower/t1"]
    base = model.get_layer("base")
    d1 = relu(dense(base.get_layer("d1"), x))
    d2 = dense(base.get_layer("d2"), d1)
    t1 = dense(model.get_layer("tower").get_layer("t1"), d2)
    for name, expected in [("base/d1", d1), ("base/d2", d2), ("base", d2), ("tower/t1", t1)]:
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["tower"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_multi_input_list_and_dict_by_input_name_agree() -> None:
    keras.utils.set_random_seed(6)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = layers.Concatenate(name="join")([a, b])
    model = keras.Model([a, b], layers.Dense(1, name="out")(joined), name="two_inputs")
    xa = RNG.normal(size=(7, 3)).astype("float32")
    xb = RNG.normal(size=(7, 2)).astype("float32")
    as_list = extract(model, [xa, xb])
    as_dict = extract(model, {"b": xb, "a": xa})
    np.testing.assert_allclose(as_list["join"], np.concatenate([xa, xb], axis=1), rtol=1e-6)
    for name in ("join", "out"):
        np.testing.assert_allclose(as_list[name], as_dict[name], rtol=1e-6)
    with pytest.raises(ValueError, match=r"key x by input name"):
        extract(model, {"a": xa, "c": xb})
    with pytest.raises(ValueError, match=r"takes 2"):
        extract(model, [xa])


def test_multi_output_layer_gives_a_list() -> None:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((5, 3))
    seq, h, c = layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(inputs)
    model = keras.Model(inputs, [seq, h, c])
    x = RNG.normal(size=(6, 5, 3)).astype("float32")
    got = extract(model, x)["lstm"]
    assert isinstance(got, list) and [a.shape for a in got] == [(6, 5, 4), (6, 4), (6, 4)]
    for mine, theirs in zip(got, model.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0][:, -1], got[1], rtol=1e-5, atol=1e-6)  # last step == h


def test_shared_layer_gives_every_call_in_order() -> None:
    keras.utils.set_random_seed(8)
    shared = layers.Dense(3, activation="relu", name="shared")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, shared(shared(inputs)), name="twice")
    x = RNG.normal(size=(5, 3)).astype("float32")
    got = extract(model, x)["shared"]
    first = relu(dense(shared, x))
    assert isinstance(got, list) and len(got) == 2
    np.testing.assert_allclose(got[0], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], relu(dense(shared, first)), rtol=1e-5, atol=1e-6)
    s = scan(model, x)
    assert s.labels == ["shared (call 1)", "shared (call 2)"]


# ------------------------------------------------------------------ training, samples


def test_training_false_by_default_true_on_request_and_state_is_restored() -> None:
    model = cnn()
    x = images(64)
    moving = [keras.ops.convert_to_numpy(v) for v in model.get_layer("bn").non_trainable_weights]
    inference = extract(model, x, ["flat", "drop", "bn"])
    np.testing.assert_array_equal(inference["drop"], inference["flat"])  # dropout off
    trained = extract(model, x, ["flat", "drop"], training=True)
    dropped = (trained["drop"] == 0) & (trained["flat"] != 0)
    assert 0.3 < dropped.sum() / (trained["flat"] != 0).sum() < 0.7  # rate 0.5
    kept = trained["drop"] != 0
    np.testing.assert_allclose(trained["drop"][kept], 2 * trained["flat"][kept], rtol=1e-5)
    # BatchNormalization ran on batch statistics, yet its moving statistics are untouched.
    after = [keras.ops.convert_to_numpy(v) for v in model.get_layer("bn").non_trainable_weights]
    for before_value, after_value in zip(moving, after, strict=True):
        np.testing.assert_array_equal(before_value, after_value)
    np.testing.assert_array_equal(extract(model, x, ["bn"])["bn"], inference["bn"])


def test_max_samples_keeps_the_first_samples_only() -> None:
    model = cnn()
    x = images(50)
    full = extract(model, x, "logits", batch_size=8)["logits"]
    few = extract(model, x, "logits", batch_size=8, max_samples=11)["logits"]
    assert few.shape == (11, 5)
    np.testing.assert_allclose(few, full[:11], rtol=1e-5, atol=1e-6)


def test_scan_statistics_cover_all_samples_and_keep_a_few() -> None:
    model = cnn()
    x = images(45)
    full = extract(model, x, ["conv1", "logits"])
    s = scan(model, x, ["conv1", "logits"], batch_size=10, max_samples=3)
    assert s.count == 45 and s.labels == ["conv1", "logits"]
    np.testing.assert_allclose(s.samples["conv1"], full["conv1"][:3], rtol=1e-5, atol=1e-6)
    for name in ("conv1", "logits"):
        stats, values = s.stats[name], full[name].astype(np.float64)
        assert stats.samples == 45 and stats.shape == values.shape[1:]
        assert stats.mean == pytest.approx(values.mean(), rel=1e-5)
        assert stats.std == pytest.approx(values.std(), rel=1e-4)
        assert stats.zero_fraction == pytest.approx(np.mean(values == 0))
        dead = np.all(values.reshape(-1, values.shape[-1]) == 0, axis=0).mean()
        assert stats.dead_fraction == pytest.approx(dead)
    assert s.stats["conv1"].zero_fraction > 0  # ReLU zeros are seen


def test_a_relu_unit_that_never_fires_counts_as_dead() -> None:
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((2,)), layers.Dense(4, activation="relu", name="r")])
    kernel, bias = model.layers[0].get_weights()
    kernel[:, 1], bias[1] = 0.0, -1.0  # unit 1 outputs relu(-1) = 0 for every input
    model.layers[0].set_weights([kernel, bias])
    stats = scan(model, RNG.normal(size=(30, 2)).astype("float32")).stats["r"]
    assert stats.dead_fraction >= 0.25


def test_the_cached_pass_sees_new_weights() -> None:
    model = cnn()
    x = images(6)
    before = extract(model, x, "logits")["logits"]
    dense_layer = model.get_layer("logits")
    kernel, bias = dense_layer.get_weights()
    dense_layer.set_weights([kernel * 2, bias + 1])
    after = extract(model, x, "logits")["logits"]
    np.testing.assert_allclose(after, 2 * before - bias + 1, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ no side effects


def state_of(model: keras.Model) -> tuple[list[np.ndarray], list[tuple[str, bool, bool]]]:
    weights = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    flags = [
        (layer.name, layer.trainable, "call" in vars(layer))
        for layer in model._flatten_layers(include_self=False)
    ]
    return weights, flags


def assert_usable(model: keras.Model, x: np.ndarray, y: np.ndarray, tmp_path) -> None:
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert model.predict(x, verbose=0).shape == y.shape
    model.save(tmp_path / "model.keras")
    assert (tmp_path / "model.keras").stat().st_size > 0


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_extraction_changes_nothing_even_when_the_pass_fails(kind: str, tmp_path) -> None:
    if kind == "sequential":
        model, x = cnn(), images(16)
        y = np.zeros((16, 5), "float32")
        bad = images(4)[:, :, :5]  # caught by the shape check, before any pass
    else:
        model, x = mlp(), RNG.normal(size=(16, 4)).astype("float32")
        y = np.zeros((16, 3), "float32")
        bad = np.zeros((4, 7), "float32")  # fails inside the pass: wrappers are installed
    model.get_layer("drop").trainable = False  # a flag that must survive
    weights, flags = state_of(model)
    extract(model, x)
    extract(model, x, training=True)
    with pytest.raises(ValueError):
        extract(model, bad)
    after_weights, after_flags = state_of(model)
    assert after_flags == flags
    assert not any(own_call for _, _, own_call in after_flags)  # every wrapper removed
    for a, b in zip(weights, after_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for layer in model._flatten_layers(include_self=False):
        assert layer.call.__func__ is type(layer).call
    assert_usable(model, x, y, tmp_path)


# ------------------------------------------------------------------ bad input


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_unknown_layer_names_the_closest_ones() -> None:
    with pytest.raises(ValueError) as error:
        extract(nested(), np.zeros((2, 4)), ["d1"])
    message = one_line(error)
    assert "no layer 'd1'" in message and "'base/d1'" in message
    with pytest.raises(ValueError) as error:
        extract(cnn(), images(2), "conv3")
    message = one_line(error)
    assert "'conv1'" in message and "'conv2'" in message


def test_wrong_shape_states_the_expected_shape() -> None:
    with pytest.raises(ValueError) as error:
        extract(cnn(), np.zeros((3, 8, 8, 3)))
    message = one_line(error)
    assert "(3, 8, 8, 3)" in message and "(None, 8, 8, 1)" in message
    with pytest.raises(ValueError) as error:
        extract(mlp(), np.zeros((3, 5)))  # subclassed: found by running it
    message = one_line(error)
    assert "(3, 5)" in message and "(None, 4)" in message


def test_empty_x_is_refused() -> None:
    with pytest.raises(ValueError) as error:
        extract(cnn(), np.zeros((0, 8, 8, 1)))
    assert "empty" in one_line(error)


def test_an_unbuilt_model_is_refused_without_building_it() -> None:
    unbuilt = keras.Sequential([layers.Dense(3)], name="fresh")
    with pytest.raises(ValueError) as error:
        extract(unbuilt, np.zeros((2, 4)))
    assert "not been built" in one_line(error)
    assert not unbuilt.built
    subclassed = MLP()
    with pytest.raises(ValueError, match="not been built"):
        extract(subclassed, np.zeros((2, 4)))
    assert not subclassed.built


def test_other_bad_arguments_are_one_line_each() -> None:
    model = cnn()
    for kwargs in ({"batch_size": 0}, {"max_samples": -1}, {"layers": []}):
        with pytest.raises(ValueError) as error:
            extract(model, images(2), **kwargs)
        one_line(error)
    with pytest.raises(TypeError):
        extract("not a model", images(2))


def test_the_public_names_resolve() -> None:
    assert kernelkit.extract is extraction.extract
