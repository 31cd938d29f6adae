"""One layer walk: a path names the same layer in freeze, extract, reset_states and the card."""

from __future__ import annotations

import keras
import numpy as np

from kernelkit import extraction, freezing, paths, rnn_state


class Block(keras.layers.Layer):
    """A custom layer that holds layers (a residual block)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(4, name="inner")

    def call(self, x):
        return x + self.inner(x)


def model():
    base = keras.Sequential(
        [keras.Input(batch_shape=(2, 5, 4)), keras.layers.Dense(4, name="d"), Block(name="block")],
        name="base",
    )
    return keras.Sequential(
        [
            keras.Input(batch_shape=(2, 5, 4)),
            base,
            keras.layers.Bidirectional(keras.layers.GRU(3, stateful=True), name="bidi"),
            keras.layers.Dense(1, name="out"),
        ]
    )


def test_one_path_is_one_layer_everywhere():
    m = model()
    m(np.zeros((2, 5, 4), "float32"))
    by_walk = {p.path: p.layer for p in paths.walk(m, enter=paths.into_sublayers)}
    assert list(by_walk) == ["base", "base/d", "base/block", "base/block/inner", "bidi", "out"]
    # extract's names are the deep walk; freeze's rows stop at custom layers; reset_states
    # finds the stateful layer under the same path.
    assert extraction.layer_names(m) == list(by_walk)
    frozen_rows = {r.path: r.name for r in freezing.describe(m).rows}
    assert list(frozen_rows) == ["base", "base/d", "base/block", "bidi", "out"]
    assert all(by_walk[path].name == name for path, name in frozen_rows.items())
    assert rnn_state.stateful_layers(m) == {"bidi": by_walk["bidi"]}
    # freeze takes a path of the walk and changes that very layer.
    freezing.freeze(m, "base/d")
    assert by_walk["base/d"].trainable is False and by_walk["base/block"].trainable is True


def test_shared_layers_once_and_same_names_numbered():
    shared = keras.layers.Dense(2, name="shared")
    inputs = keras.Input((2,))
    twice = keras.Model(inputs, shared(shared(inputs)), name="twice")
    walked = [p.path for p in paths.walk(twice)]
    assert walked == ["shared"]  # reachable twice, listed once (its input layer left out)
    assert next(p.path for p in paths.walk(twice, inputs=True)).startswith("input_layer")
