"""kernelkit.weights: by-name/by-position loading with reports, and YAML configs."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import h5py
import keras
import numpy as np
import pytest
import yaml

from kernelkit.weights import LayerMismatch, LoadReport, load_weights, model_from_yaml, to_yaml

FORMATS = ["weights.h5", "keras", "legacy.h5"]


# ----------------------------------------------------------------------------
# helpers


def dense_model(*layers: tuple[str, int], input_dim: int = 3, seed: int = 0) -> keras.Model:
    """Sequential(Input(input_dim), Dense(units, name=name)...), seeded init."""
    return keras.Sequential(
        [keras.Input((input_dim,))]
        + [
            keras.layers.Dense(
                units,
                name=name,
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
                bias_initializer=keras.initializers.RandomNormal(seed=seed + 100 + i),
            )
            for i, (name, units) in enumerate(layers)
        ]
    )


def save(model: keras.Model, tmp_path, fmt: str) -> str:
    """Saves ``model`` in one of FORMATS and returns the path."""
    if fmt == "weights.h5":
        path = str(tmp_path / "src.weights.h5")
        model.save_weights(path)
    elif fmt == "keras":
        path = str(tmp_path / "src.keras")
        model.save(path)
    else:  # Keras 3 still writes the legacy HDF5 layout for model.save("x.h5")
        path = str(tmp_path / "src.h5")
        model.save(path)
    return path


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in model.weights]


def assert_untouched(model: keras.Model, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bitwise equal


def weights_of(model: keras.Model, name: str) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer(name).weights]


def assert_same_weights(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def write_keras2_h5(path: str, layers: dict[str, list[np.ndarray]], *, full_model: bool) -> None:
    """Writes the documented Keras 2 layout with h5py (Keras 2 cannot be installed here).

    Root (or ``model_weights`` for a full-model save) has the attribute
    ``layer_names``; each layer's group has ``weight_names`` and the datasets
    ``<layer>/<layer>/kernel:0`` and ``<layer>/<layer>/bias:0``.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Sequential"}'
        root.attrs["layer_names"] = np.array([n.encode() for n in layers], dtype="S")
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.15.0"
        for name, values in layers.items():
            group = root.create_group(name)
            suffixes = ["kernel:0", "bias:0"][: len(values)]
            names = [f"{name}/{s}".encode() for s in suffixes]
            group.attrs["weight_names"] = np.array(names, dtype="S")
            for weight_name, value in zip(names, values, strict=True):
                group.create_dataset(weight_name.decode(), data=value)


# ----------------------------------------------------------------------------
# the classic transfer case, in every format


@pytest.mark.parametrize("fmt", FORMATS)
def test_transfer_by_name_loads_shared_layer_and_keeps_new_one(tmp_path, fmt):
    old = dense_model(("dense_1", 2), ("dense_2", 3), seed=1)
    path = save(old, tmp_path, fmt)
    new = dense_model(("dense_1", 2), ("new_dense", 10), seed=50)
    new_dense_before = weights_of(new, "new_dense")

    report = load_weights(new, path, by_name=True)

    assert_same_weights(weights_of(new, "dense_1"), weights_of(old, "dense_1"))
    assert_same_weights(weights_of(new, "new_dense"), new_dense_before)
    assert report.loaded == ("dense_1",)
    assert report.not_in_file == ("new_dense",)
    assert report.not_in_model == ("dense_2",)
    assert report.mismatched == ()
    assert (
        report.by_name
        and report.format == {"weights.h5": "keras", "keras": "archive", "legacy.h5": "legacy"}[fmt]
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_by_position_round_trip_restores_every_weight(tmp_path, fmt):
    old = dense_model(("a", 4), ("b", 2), seed=2)
    path = save(old, tmp_path, fmt)
    new = dense_model(("x", 4), ("y", 2), seed=70)  # other names: position decides

    report = load_weights(new, path)

    assert_same_weights(snapshot(new), snapshot(old))
    assert report.loaded == ("x", "y") and not report.by_name
    assert report.skipped == ()


@pytest.mark.parametrize("full_model", [False, True], ids=["save_weights", "model.save"])
def test_keras2_legacy_layout_by_position_and_by_name(tmp_path, full_model):
    rng = np.random.default_rng(0)
    saved = {
        "dense_1": [
            rng.normal(size=(3, 2)).astype("float32"),
            rng.normal(size=2).astype("float32"),
        ],
        "dropout_1": [],
        "dense_2": [
            rng.normal(size=(2, 3)).astype("float32"),
            rng.normal(size=3).astype("float32"),
        ],
    }
    path = str(tmp_path / "keras2.h5")
    write_keras2_h5(path, saved, full_model=full_model)

    same = dense_model(("first", 2), ("second", 3))
    report = load_weights(same, path)
    assert report.loaded == ("first", "second")
    assert_same_weights(weights_of(same, "first"), saved["dense_1"])
    assert_same_weights(weights_of(same, "second"), saved["dense_2"])

    new = dense_model(("dense_1", 2), ("new_dense", 10))
    kept = weights_of(new, "new_dense")
    report = load_weights(new, path, by_name=True)
    assert report.format == "legacy"
    assert (report.loaded, report.not_in_file, report.not_in_model) == (
        ("dense_1",),
        ("new_dense",),
        ("dense_2",),
    )
    assert_same_weights(weights_of(new, "dense_1"), saved["dense_1"])
    assert_same_weights(weights_of(new, "new_dense"), kept)


def test_format_is_read_from_content_not_suffix(tmp_path):
    # tf.keras 2 users often named legacy files "*.weights.h5"; Keras 3 then
    # mistakes them for its own format (keras-team/keras#21676).
    value = [np.ones((3, 2), "float32"), np.full(2, 0.5, "float32")]
    path = str(tmp_path / "old.weights.h5")
    write_keras2_h5(path, {"dense_1": value}, full_model=False)
    model = dense_model(("dense_1", 2))
    assert load_weights(model, path, by_name=True).format == "legacy"
    assert_same_weights(weights_of(model, "dense_1"), value)


# ----------------------------------------------------------------------------
# nested models, subclassed models, layers with sublayers


def nested_model(head: str, head_units: int, seed: int) -> keras.Model:
    base = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                5, name="feat", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="base",
    )
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(
        head_units, name=head, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
    )(base(inputs))
    return keras.Model(inputs, outputs, name="outer")


def randomize(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for v in model.weights:  # moving statistics too, so the test sees them move
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))


@pytest.mark.parametrize("fmt", ["weights.h5", "keras"])
def test_nested_model_by_name_matches_layers_inside(tmp_path, fmt):
    old = nested_model("head", 2, seed=0)
    randomize(old, 1)
    path = save(old, tmp_path, fmt)

    # Same nesting, new head: matched by qualified name base/feat, base/bn.
    same_nesting = nested_model("new_head", 7, seed=10)
    kept = weights_of(same_nesting, "new_head")
    report = load_weights(same_nesting, path, by_name=True)
    assert report.loaded == ("base/feat", "base/bn")
    assert report.not_in_file == ("new_head",)
    assert report.not_in_model == ("head",)
    base_old, base_new = old.get_layer("base"), same_nesting.get_layer("base")
    assert_same_weights(snapshot(base_new), snapshot(base_old))  # BN moving stats included
    assert_same_weights(weights_of(same_nesting, "new_head"), kept)

    # Flat model with the same layer names: matched by the unique names.
    flat = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, name="feat"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="other"),
        ]
    )
    report = load_weights(flat, path, by_name=True)
    assert report.loaded == ("feat", "bn")
    assert_same_weights(weights_of(flat, "feat"), weights_of(base_old, "feat"))
    assert_same_weights(weights_of(flat, "bn"), weights_of(base_old, "bn"))


def test_nested_model_from_legacy_h5_by_name(tmp_path):
    old = nested_model("head", 2, seed=0)
    randomize(old, 2)
    path = save(old, tmp_path, "legacy.h5")
    new = nested_model("new_head", 7, seed=10)
    report = load_weights(new, path, by_name=True)
    assert report.loaded == ("base",)  # Keras 2 stored a nested model as one layer
    assert_same_weights(snapshot(new.get_layer("base")), snapshot(old.get_layer("base")))


@keras.saving.register_keras_serializable(package="kk_test_weights")
class Block(keras.layers.Layer):
    """A layer with a sublayer and its own weight."""

    def __init__(self, units: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(units, name="inner")

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x):
        return self.inner(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Subclassed(keras.Model):
    def __init__(self, units: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = Block(3, name="block")
        self.head = keras.layers.Dense(units, name="head")

    def call(self, x):
        return self.head(self.block(x))


@pytest.mark.parametrize("by_name", [False, True])
def test_subclassed_model_and_composite_layer(tmp_path, by_name):
    old = Subclassed(name="sub")
    old(np.zeros((1, 4), "float32"))
    randomize(old, 3)
    path = str(tmp_path / "sub.weights.h5")
    old.save_weights(path)

    new = Subclassed(name="sub")
    new(np.zeros((1, 4), "float32"))
    report = load_weights(new, path, by_name=by_name)
    assert set(report.loaded) == {"block", "head"}
    assert_same_weights(snapshot(new), snapshot(old))


# ----------------------------------------------------------------------------
# mismatches: one error listing every layer, or skip them


@pytest.mark.parametrize("fmt", FORMATS)
def test_mismatch_raises_one_error_listing_every_layer_and_loads_nothing(tmp_path, fmt):
    old = dense_model(("dense_1", 2), ("dense_2", 3), ("dense_3", 4), seed=3)
    path = save(old, tmp_path, fmt)
    new = dense_model(("dense_1", 2), ("dense_2", 10), ("dense_3", 5), seed=80)
    before = snapshot(new)

    for by_name in (True, False):
        with pytest.raises(ValueError) as excinfo:
            load_weights(new, path, by_name=by_name)
        message = one_line_error(excinfo)
        assert "2 layers" in message and "skip_mismatch=True" in message
        assert "dense_2 (file [(2, 3), (3,)], model [(2, 10), (10,)])" in message
        assert "dense_3 (file [(3, 4), (4,)], model [(10, 5), (5,)])" in message
        assert_untouched(new, before)  # dense_1 matched, yet was not loaded either


@pytest.mark.parametrize("fmt", FORMATS)
def test_skip_mismatch_loads_the_rest_and_reports_shapes(tmp_path, fmt):
    old = dense_model(("dense_1", 2), ("dense_2", 3), seed=4)
    path = save(old, tmp_path, fmt)
    new = dense_model(("dense_1", 2), ("dense_2", 10), seed=90)
    kept = weights_of(new, "dense_2")

    report = load_weights(new, path, by_name=True, skip_mismatch=True)

    assert report.loaded == ("dense_1",)
    assert report.mismatched == (LayerMismatch("dense_2", ((2, 3), (3,)), ((2, 10), (10,))),)
    assert_same_weights(weights_of(new, "dense_1"), weights_of(old, "dense_1"))
    assert_same_weights(weights_of(new, "dense_2"), kept)
    assert "Shape mismatch (kept their weights): dense_2" in str(report)


# ----------------------------------------------------------------------------
# bad input: one clear line, model untouched


def truncated(path: str, tmp_path) -> str:
    with open(path, "rb") as f:
        data = f.read()
    cut = str(tmp_path / ("cut-" + os.path.basename(path)))
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    return cut


BAD_INPUTS = [
    "missing file",
    "directory",
    "not HDF5",
    "truncated weights.h5",
    "truncated keras",
    "truncated legacy.h5",
    "zip without weights",
    "HDF5 without weights",
    "wrong architecture by position (weights.h5)",
    "wrong architecture by position (keras)",
    "wrong architecture by position (legacy.h5)",
    "no layer in common by name (weights.h5)",
    "no layer in common by name (legacy.h5)",
    "shape mismatch",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_one_clear_line_and_leaves_model_untouched(tmp_path, case):
    source = dense_model(("dense_1", 2), ("dense_2", 3), seed=5)
    model = dense_model(("dense_1", 2), ("dense_2", 3), seed=99)
    kwargs: dict = {}
    expected: tuple[type[BaseException], str]
    if case == "missing file":
        path, expected = str(tmp_path / "nope.weights.h5"), (FileNotFoundError, "No weights file")
    elif case == "directory":
        path, expected = str(tmp_path), (IsADirectoryError, "is a directory")
    elif case == "not HDF5":
        path = str(tmp_path / "notes.weights.h5")
        with open(path, "w") as f:
            f.write("these are not weights\n")
        expected = (ValueError, "neither an HDF5 file nor a .keras archive")
    elif case.startswith("truncated"):
        path = truncated(save(source, tmp_path, case.split()[1]), tmp_path)
        expected = (ValueError, "truncated")
    elif case == "zip without weights":
        path = str(tmp_path / "other.keras")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{}")
        expected = (ValueError, "without model.weights.h5")
    elif case == "HDF5 without weights":
        path = str(tmp_path / "data.h5")
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
        expected = (ValueError, "holds no Keras weights")
    elif case.startswith("wrong architecture"):
        fmt = case[case.index("(") + 1 : -1]
        path = save(dense_model(("dense_1", 2), ("dense_2", 3), ("dense_3", 1)), tmp_path, fmt)
        expected = (ValueError, "by position")
    elif case.startswith("no layer in common"):
        fmt = case[case.index("(") + 1 : -1]
        path = save(dense_model(("a", 2), ("b", 3)), tmp_path, fmt)
        kwargs = {"by_name": True}
        expected = (ValueError, "No layer name is shared")
    else:
        path = save(dense_model(("dense_1", 2), ("dense_2", 4)), tmp_path, "weights.h5")
        expected = (ValueError, "does not match the model's shapes")
    before = snapshot(model)

    with pytest.raises(expected[0]) as excinfo:
        load_weights(model, path, **kwargs)

    assert expected[1] in one_line_error(excinfo)
    assert_untouched(model, before)


def test_failure_inside_keras_puts_every_weight_back(tmp_path, monkeypatch):
    old = dense_model(("dense_1", 2), ("dense_2", 3), seed=6)
    path = save(old, tmp_path, "weights.h5")
    model = dense_model(("dense_1", 2), ("dense_2", 3), seed=7)
    before = snapshot(model)

    def half_load(filepath, *args, **kwargs):
        model.get_layer("dense_1").kernel.assign(np.zeros((3, 2), "float32"))
        raise OSError("disk went away")

    monkeypatch.setattr(model, "load_weights", half_load)
    with pytest.raises(OSError, match="disk went away"):
        load_weights(model, path)
    assert_untouched(model, before)


def test_unbuilt_model_is_refused_clearly(tmp_path):
    path = save(dense_model(("dense_1", 2)), tmp_path, "weights.h5")
    unbuilt = keras.Sequential([keras.layers.Dense(2, name="dense_1")])
    with pytest.raises(ValueError) as excinfo:
        load_weights(unbuilt, path)
    assert "not built" in one_line_error(excinfo)


def test_keras3_file_without_layer_names_loads_by_position_only(tmp_path):
    old = dense_model(("dense_1", 2), ("dense_2", 3), seed=8)
    path = save(old, tmp_path, "weights.h5")
    with h5py.File(path, "r+") as f:  # as written by Keras 3 releases before the name metadata
        f.visititems(
            lambda name, item: item.attrs.pop("name", None) if name.endswith("vars") else None
        )
    model = dense_model(("dense_1", 2), ("dense_2", 3), seed=9)
    before = snapshot(model)
    with pytest.raises(ValueError) as excinfo:
        load_weights(model, path, by_name=True)
    assert "by_name=False" in one_line_error(excinfo)
    assert_untouched(model, before)
    load_weights(model, path)
    assert_same_weights(snapshot(model), snapshot(old))


def test_keras_archive_config_is_never_deserialized(tmp_path):
    # A Lambda holds Python bytecode; Keras refuses to load its config in
    # safe_mode. load_weights reads only model.weights.h5 from the archive.
    def build():
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(2, name="dense_1"),
                keras.layers.Lambda(lambda t: t * 2.0, name="double"),
            ]
        )

    old = build()
    path = str(tmp_path / "lambda.keras")
    old.save(path)
    with pytest.raises(ValueError):
        keras.saving.load_model(path)  # Keras's own safe_mode refusal
    new = build()
    load_weights(new, path, by_name=True)
    assert_same_weights(snapshot(new), snapshot(old))


def test_report_reads_well():
    report = LoadReport(
        path="old.weights.h5",
        format="keras",
        by_name=True,
        loaded=("dense_1",),
        not_in_file=("new_dense",),
        not_in_model=("dense_2",),
    )
    assert str(report) == (
        "Loaded 1 layer by name from old.weights.h5 (Keras 3 weights): dense_1\n"
        "Not in the file (kept their weights): new_dense\n"
        "In the file but not in the model: dense_2"
    )
    assert report.skipped == ("new_dense", "dense_2")


# ----------------------------------------------------------------------------
# YAML configs


def sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation="relu", name="d"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(2, name="out"),
        ],
        name="seq",
    )


def functional_nested() -> keras.Model:
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_d")(inner_in), name="inner")
    inputs = keras.Input((6,), name="x")
    a = inner(inputs)
    b = keras.layers.Dense(3, name="side")(inputs)
    outputs = keras.layers.Dense(1, name="y")(keras.layers.Concatenate()([a, b]))
    return keras.Model(inputs, outputs, name="func")


def with_custom_layer() -> keras.Model:
    return keras.Sequential([keras.Input((6,)), Block(4, name="blk"), keras.layers.Dense(1)])


@pytest.mark.parametrize("build", [sequential, functional_nested, with_custom_layer])
def test_yaml_round_trip(build):
    model = build()
    text = to_yaml(model)
    assert "!!" not in text  # plain YAML: no Python tags
    assert yaml.safe_load(text)["class_name"] == model.__class__.__name__

    clone = model_from_yaml(text)

    assert type(clone) is type(model)
    # Compare as JSON: get_config() mixes tuples and lists, JSON does not.
    assert json.loads(clone.to_json()) == json.loads(model.to_json())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6
    )


def test_yaml_python_tag_is_refused_and_nothing_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd) or 0)
    text = "class_name: !!python/object/apply:os.system ['echo pwned']\nconfig: {}\n"
    with pytest.raises(ValueError) as excinfo:
        model_from_yaml(text)
    assert "Python tag" in one_line_error(excinfo)
    assert calls == []


def test_yaml_lambda_needs_explicit_opt_out_of_safe_mode():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")]
    )
    text = to_yaml(model)
    with pytest.raises(ValueError) as excinfo:
        model_from_yaml(text)
    assert "safe_mode=False" in one_line_error(excinfo)
    trusted = model_from_yaml(text, safe_mode=False)
    out = keras.ops.convert_to_numpy(trusted(np.zeros((1, 2), "float32")))
    np.testing.assert_array_equal(out, np.ones((1, 2), "float32"))


def test_yaml_unknown_class_and_custom_objects():
    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x

    model = keras.Sequential([keras.Input((2,)), Unregistered(name="u")])
    text = to_yaml(model)
    with pytest.raises(TypeError) as excinfo:
        model_from_yaml(text)
    assert "custom_objects" in one_line_error(excinfo)
    clone = model_from_yaml(text, custom_objects={"Unregistered": Unregistered})
    assert isinstance(clone.get_layer("u"), Unregistered)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [1, 2", "Not valid YAML"),
        ("- 1\n- 2\n", "not a Keras model config"),
        ("class_name: Dense\nmodule: keras.layers\nconfig: {units: 2}\n", "not a model"),
    ],
)
def test_yaml_bad_text(text, message):
    with pytest.raises(ValueError) as excinfo:
        model_from_yaml(text)
    assert message in one_line_error(excinfo)


TF_KERAS_2_YAML = """\
backend: tensorflow
class_name: Sequential
config:
  layers:
  - class_name: InputLayer
    config:
      batch_input_shape: !!python/tuple [null, 3]
      dtype: float32
      name: dense_input
  - class_name: Dense
    config:
      activation: relu
      dtype: float32
      kernel_initializer:
        class_name: GlorotUniform
        config: {seed: null}
      name: dense_1
      trainable: true
      units: 2
      use_bias: true
  name: sequential
keras_version: 2.4.0
"""


def test_yaml_from_tf_keras_2():
    # tf.keras 2's to_yaml used yaml.dump, so its files can hold !!python/tuple:
    # refused like any Python tag; without the tags (lists) they load.
    with pytest.raises(ValueError, match="Python tag"):
        model_from_yaml(TF_KERAS_2_YAML)
    plain = TF_KERAS_2_YAML.replace("!!python/tuple [null, 3]", "[null, 3]")
    model = model_from_yaml(plain)
    assert model.get_layer("dense_1").units == 2
    assert model.get_layer("dense_1").activation is keras.activations.relu
    assert model.built and model.compute_output_shape((None, 3)) == (None, 2)


def test_json_stays_keras_own():
    model = sequential()
    clone = keras.models.model_from_json(model.to_json())
    assert json.loads(clone.to_json()) == json.loads(model.to_json())


def test_nothing_is_left_in_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    old = dense_model(("dense_1", 2), seed=1)
    path = save(old, tmp_path, "weights.h5")
    load_weights(dense_model(("dense_1", 2)), path, by_name=True)
    assert os.listdir(tmp_path / "tmp") == []
    shutil.rmtree(tmp_path / "tmp")


# ----------------------------------------------------------------------------
# damaged files name the fix; YAML class errors carry the hint (issue 15)


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "h5"])
def test_a_truncated_file_names_the_fix_and_leaves_the_model_as_it_was(tmp_path, fmt):
    source = dense_model(("a", 4), ("b", 2))
    path = truncated(save(source, tmp_path, fmt), tmp_path)
    model = dense_model(("a", 4), ("b", 2), seed=5)
    before = snapshot(model)
    with pytest.raises(ValueError) as excinfo:
        load_weights(model, path)
    message = one_line_error(excinfo)
    assert message.startswith(f"Cannot read {path!r} (truncated or damaged "), message
    assert message.endswith(
        "); the model is unchanged: save the weights again (model.save_weights(...), or "
        "model.save(...) for a .keras file) or use another copy of the file."
    ), message
    assert_untouched(model, before)


def _yaml_with_last_layer(module: str, class_name: str) -> str:
    config = yaml.safe_load(to_yaml(dense_model(("a", 4), ("b", 2))))
    layer = config["config"]["layers"][-1]
    layer["module"], layer["class_name"] = module, class_name
    layer.pop("registered_name", None)
    return yaml.safe_dump(config)


def _legacy_yaml(replace: str) -> str:
    """A tf.keras 2 config (no module keys) whose first Dense is renamed ``replace``."""

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("module", "registered_name")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    config = strip(json.loads(dense_model(("a", 4)).to_json()))
    return yaml.safe_dump(config).replace("class_name: Dense", f"class_name: {replace}", 1)


HINT = "decorate it with @keras.saving.register_keras_serializable() or pass custom_objects="


@pytest.mark.parametrize(
    ("text", "error", "expected"),
    [
        (
            lambda: _yaml_with_last_layer("keras.layers", "Dnese"),
            TypeError,
            "Unknown class 'Dnese' in the YAML (module keras.layers; did you mean 'Dense'?): "
            f"fix its class_name, or for your own class {HINT}{{'Dnese': Dnese}}.",
        ),
        (
            lambda: _legacy_yaml("Dnese"),
            TypeError,
            "Unknown layer 'Dnese' in the YAML (did you mean 'Dense'?): fix its class_name, or "
            f"for your own class {HINT}{{'Dnese': Dnese}}.",
        ),
        (
            lambda: _yaml_with_last_layer("mylib.layers", "MyBlock"),
            TypeError,
            "Unknown class 'MyBlock' in the YAML (module mylib.layers): for your own class, "
            f"{HINT}{{'MyBlock': MyBlock}}.",
        ),
        (
            lambda: to_yaml(dense_model(("a", 4))).replace(
                "activation: linear", "activation: relux"
            ),
            ValueError,
            "Unknown activation 'relux' in the YAML (did you mean 'relu'?): fix the name, or pass "
            "your own function as custom_objects={'relux': relux}.",
        ),
        (
            lambda: to_yaml(dense_model(("a", 4))).replace(
                "module: keras.layers", "module: keras.layerz", 1
            ),
            TypeError,
            "Unknown module 'keras.layerz' for class 'InputLayer' in the YAML: fix its module "
            "(Keras's own layers are in keras.layers), or import the module that defines it.",
        ),
        (
            lambda: to_yaml(dense_model(("a", 4))).replace("units: 4", "units: many"),
            ValueError,
            "Cannot build a model from this YAML: Received an invalid value for `units`, expected "
            "a positive integer. Received: units=many (fix that entry, or write the YAML again "
            "with kernelkit.to_yaml(model)).",
        ),
    ],
    ids=["misspelled", "misspelled-tf-keras-2", "own-class", "activation", "module", "value"],
)
def test_yaml_class_errors_are_kernelkits_one_line_hint(text, error, expected):
    with pytest.raises(error) as excinfo:
        model_from_yaml(text())
    assert one_line_error(excinfo) == expected


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("subprocess", "Popen"), ("builtins", "eval")]
)
def test_yaml_never_proposes_a_function_of_os_subprocess_or_builtins(module, name):
    with pytest.raises(ValueError) as excinfo:
        model_from_yaml(_yaml_with_last_layer(module, name))
    assert one_line_error(excinfo) == (
        f"Refused: the YAML names {module}.{name}; kernelkit never builds anything of os, "
        "subprocess, builtins and the like from a config: remove that entry from the YAML."
    )


def test_yaml_function_entry_of_os_is_refused_too():
    text = to_yaml(dense_model(("a", 4))).replace(
        "activation: linear",
        "activation:\n        module: os\n        class_name: function\n        config: system\n"
        "        registered_name: system",
        1,
    )
    with pytest.raises(ValueError) as excinfo:
        model_from_yaml(text)
    assert "os.system" in one_line_error(excinfo) and "custom_objects" not in str(excinfo.value)


@pytest.mark.parametrize(("name", "module"), [("system", "os"), ("eval", "builtins")])
def test_an_unknown_class_named_like_a_system_function_gets_no_custom_objects_hint(name, module):
    for text in (_yaml_with_last_layer("mylib.layers", name), _legacy_yaml(name)):
        with pytest.raises(TypeError) as excinfo:
            model_from_yaml(text)
        message = one_line_error(excinfo)
        assert "custom_objects" not in message
        assert message.endswith(
            f"{name!r} is also a function of {module}, which kernelkit never passes to Keras; "
            "if it is your own class, decorate it with "
            "@keras.saving.register_keras_serializable() and import it first."
        ), message
