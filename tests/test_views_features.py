"""FeatureView: widgets pick layer/sample/page, pictures follow, statistics, static output."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import base64
import io
import re

import keras
import numpy as np
import pytest
from PIL import Image

import kernelkit
from kernelkit.extraction import extract
from kernelkit.views import features
from kernelkit.views.features import FeatureView, tab

layers = keras.layers


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    maps = layers.Conv2D(20, 3, padding="same", activation="relu", name="conv")(inputs)
    seq = layers.Reshape((8, 160), name="rows")(maps)  # a sequence: 8 steps x 160 units
    pooled = layers.GlobalAveragePooling2D(name="gap")(maps)
    logits = layers.Dense(10, name="logits")(pooled)
    return keras.Model(inputs, [logits, seq], name="cnn")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)


def images_in(fragment: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', fragment)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


def front_end_sets(widget, **state) -> None:
    """What an ipywidgets front end does on a user change: an update message's state."""
    widget.set_state(state)


def test_layer_sample_and_page_widgets_drive_the_picture(model, x) -> None:
    view = FeatureView(model, x, max_samples=6)
    assert sorted(view.layer.options) == ["conv", "gap", "logits", "rows"]  # in running order
    assert view.layer.value == "conv" and view.sample.max == 5

    # Feature maps: 20 channels, 16 per page -> 2 pages, one heatmap per channel.
    first = view.figure.value
    assert "channels 0-15 of 20" in first and len(images_in(first)) == 16 + 1  # + colour scale
    assert view.page.max == 1 and view.page.layout.display is None

    front_end_sets(view.sample, value=4)
    assert view.sample.value == 4
    assert "sample 4" in view.figure.value and view.figure.value != first

    front_end_sets(view.page, value=1)
    assert "channels 16-19 of 20" in view.figure.value
    assert len(images_in(view.figure.value)) == 4 + 1

    # Dropdowns sync their index, not their value.
    front_end_sets(view.layer, index=view.layer.options.index("logits"))
    assert view.layer.value == "logits"
    assert view.page.value == 0 and view.page.layout.display == "none"
    assert view.vector_style.layout.display is None
    assert "<svg" in view.figure.value and view.figure.value.count("<rect") == 10

    front_end_sets(view.vector_style, index=1)  # "heatmap"
    assert view.vector_style.value == "heatmap"
    (heatmap, _) = images_in(view.figure.value)
    assert heatmap.size[1] % 6 == 0  # 6 kept samples as rows

    front_end_sets(view.layer, index=view.layer.options.index("rows"))
    assert "time &rarr; across" in view.figure.value
    assert view.vector_style.layout.display == "none"


def test_heatmap_pixels_follow_the_activations(model, x) -> None:
    view = FeatureView(model, x, layers=["conv"], max_samples=2)
    front_end_sets(view.sample, value=1)
    conv = extract(model, x[:2], "conv")["conv"][1]
    channel = int(np.argmax(conv.max(axis=(0, 1))))  # the channel with the largest value
    picture = images_in(view.figure.value)[channel].convert("RGB")
    row, col = np.unravel_index(np.argmax(conv[..., channel]), conv.shape[:2])
    factor = picture.size[0] // 8
    hottest = picture.getpixel((int(col) * factor, int(row) * factor))
    assert hottest == (253, 231, 37)  # the top of viridis


def test_statistics_are_right_and_shown(model, x) -> None:
    view = FeatureView(model, x, max_samples=3)
    acts = extract(model, x)
    for label in ("conv", "gap", "logits"):
        values = acts[label].astype(np.float64)
        stats = view.scan.stats[label]
        assert stats.samples == 40  # over all of x, not the 3 kept
        assert stats.mean == pytest.approx(values.mean(), rel=1e-5)
        assert stats.std == pytest.approx(values.std(), rel=1e-4)
        assert stats.zero_fraction == pytest.approx(np.mean(values == 0))
        assert f">{features._num(stats.mean)}<" in view.table.value
    assert view.scan.stats["conv"].zero_fraction > 0.05  # ReLU zeros
    assert f">{100 * view.scan.stats['conv'].zero_fraction:.1f}%<" in view.table.value
    assert "statistics over all 40 samples" in view.table.value


def test_static_html_and_a_deterministic_text_repr(model, x) -> None:
    one, two = FeatureView(model, x, max_samples=4), FeatureView(model, x, max_samples=4)
    bundle = one._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert (
        bundle["text/plain"]
        == repr(two)
        == ("FeatureView(model='cnn', layer='conv', sample=0, 4 layers, 4 of 40 samples kept)")
    )
    assert bundle["text/html"] == two.to_html()  # same input, same bytes
    assert "data:image/png;base64," in bundle["text/html"] and "<table" in bundle["text/html"]
    assert "<script" not in bundle["text/html"]  # readable without a kernel or JavaScript
    front_end_sets(one.layer, index=one.layer.options.index("logits"))
    snapshot = one.snapshot()
    assert repr(snapshot) == repr(one) and "logits" in repr(one)
    assert snapshot._repr_html_() == one.to_html() != two.to_html()


def test_without_data_the_view_explains_and_accepts_data_later(model, x) -> None:
    view = FeatureView(model)
    assert "kernelkit.FeatureView(model, x)" in view.figure.value
    assert view.layer.disabled and view.scan is None
    assert repr(view) == "FeatureView(model='cnn', no data: call set_data(x))"
    assert "no data" in view._repr_mimebundle_()["text/html"]
    view.set_data(x[:5])
    assert not view.layer.disabled and view.scan.count == 5
    assert "channels 0-15" in view.figure.value


def test_refresh_keeps_the_choice_and_sees_new_weights(x) -> None:
    keras.utils.set_random_seed(1)
    small = keras.Sequential(
        [keras.Input((8, 8, 1)), layers.Flatten(name="flat"), layers.Dense(3, name="d")],
        name="small",
    )
    view = FeatureView(small, x)
    front_end_sets(view.layer, index=1)
    before = view.scan.stats["d"].mean
    dense = small.get_layer("d")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + 10.0])
    view.refresh()
    assert view.layer.value == "d"
    assert view.scan.stats["d"].mean == pytest.approx(before + 10.0, rel=1e-4)


def test_bad_input_raises_like_extract(model) -> None:
    with pytest.raises(ValueError, match=r"expects \(None, 8, 8, 1\)"):
        FeatureView(model, np.zeros((3, 4, 4, 1), "float32"))
    view = FeatureView(model)
    with pytest.raises(ValueError, match="empty"):
        view.set_data(np.zeros((0, 8, 8, 1), "float32"))
    assert view.scan is None  # still the hint, nothing half-done


def test_card_tab(model, x) -> None:
    widget = tab(model, lambda intent: True)
    assert isinstance(widget, FeatureView) and widget.scan is None
    assert "FeatureView(model, x)" in widget.figure.value
    with_data = tab(model, lambda intent: True, x=x[:3])
    assert with_data.scan.count == 3
    assert tab(keras.Sequential([], name="empty"), lambda intent: True) is None


def test_png_encoder_round_trips() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13
    decoded = np.asarray(Image.open(io.BytesIO(features._png(rgb))).convert("RGB"))
    np.testing.assert_array_equal(decoded, rgb)


def test_signed_values_use_a_diverging_scale_with_white_zero() -> None:
    scale = features._Scale(np.array([-2.0, 0.0, 1.0]))
    assert scale.signed and (scale.low, scale.high) == (-2.0, 2.0)
    assert tuple(scale.rgb(np.array([0.0]))[0]) == (247, 247, 247)
    constant = features._Scale(np.zeros(4))
    assert tuple(constant.rgb(np.zeros(1))[0]) == (68, 1, 84)  # no division by zero


def test_public_name() -> None:
    assert kernelkit.FeatureView is FeatureView
