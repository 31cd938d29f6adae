"""Live activation statistics: a real fit, a layer made dead on purpose, the strips that show it."""

from __future__ import annotations

import numpy as np
import pytest

from kernelkit.views.watch import WatchResult, watch_html
from kernelkit.watch import ActivationWatch


def _model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="alive"),
            # A bias far below zero: every unit's ReLU is 0 for every input, and stays so.
            keras.layers.Dense(
                6,
                activation="relu",
                name="dead",
                bias_initializer=keras.initializers.Constant(-100.0),
            ),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile("adam", "mse")
    return model


def test_each_epoch_records_every_layer_and_finds_the_dead_one(tiny_data):
    x, y = tiny_data
    watch = ActivationWatch(x, samples=16)
    _model().fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[watch])
    assert [s.epoch for s in watch.epochs] == [0, 1, 2]
    assert watch.labels == ["alive", "dead", "out"]
    dead = watch.series("dead_fraction")
    assert dead["dead"] == [1.0, 1.0, 1.0]
    assert all(v < 1.0 for v in dead["alive"])
    spread = watch.series("std")
    assert all(v > 0 for v in spread["alive"])
    # Behind a dead layer, the output is its bias alone: the same for every sample.
    assert spread["out"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert watch.seconds > 0  # what it cost is kept, to be reported
    assert "mostly dead units in dead" in repr(watch)


def test_the_strips_read_without_a_kernel(tiny_data):
    x, y = tiny_data
    watch = ActivationWatch(x, samples=8, every=2)
    _model().fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[watch])
    assert [s.epoch for s in watch.epochs] == [1, 3]
    page = watch_html(watch)
    assert page.count("<svg") == 3 * 3  # 3 layers x (mean, std, dead units)
    assert "100% dead" in page and "epoch 4: dead units 1" in page
    bundle = WatchResult(watch)._repr_mimebundle_()
    assert bundle["text/plain"].startswith("ActivationWatch: 3 layers over 2 epochs")


@pytest.mark.parametrize("bad", [{"samples": 0}, {"every": "2"}, {"samples": True}])
def test_bad_options_are_one_line(bad):
    with pytest.raises(ValueError, match=r"^ActivationWatch\(\w+=.*use a positive int$"):
        ActivationWatch(np.zeros((4, 4)), **bad)


def test_a_probe_that_is_not_arrays_is_one_line():
    with pytest.raises(ValueError, match="needs a probe of arrays"):
        ActivationWatch(object())
