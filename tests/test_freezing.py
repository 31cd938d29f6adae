"""kernelkit.freezing: freezes take effect, compile configs survive, bad input loses nothing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from kernelkit.freezing import (
    FreezeReport,
    ensure_trainable_applied,
    freeze,
    recompile,
    set_trainable,
    track_compile,
    unfreeze,
    untrack_compile,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = RNG.normal(size=(64, 3)).astype("float32")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def make_base(name: str = "base") -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(8, activation="relu", name="d2")(x)
    return keras.Model(inputs, x, name=name)


def make_model(optimizer=None, name: str = "tl") -> tuple[keras.Model, keras.Model]:
    """A base model used as a layer, plus a Dense head; compiled."""
    base = make_base()
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="head")(base(inputs))
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss="mse")
    return model, base


def values(layer_or_model) -> list[np.ndarray]:
    return [np.array(w.numpy()) for w in layer_or_model.weights]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def all_changed(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def fit(model, epochs: int = 1):
    return model.fit(X, Y, batch_size=16, epochs=epochs, verbose=0)


def flags(model) -> list[bool]:
    return [layer.trainable for layer in model._flatten_layers()]


def slots(model) -> dict[str, np.ndarray]:
    return {v.name: np.array(v.numpy()) for v in model.optimizer.variables}


# --------------------------------------------------------------------------
# Freezes take effect
# --------------------------------------------------------------------------


def test_freeze_base_then_fit_leaves_base_bitwise_unchanged_and_unfreeze_trains_it():
    model, base = make_model()
    fit(model)  # traces the train step with everything trainable
    report = freeze(model, "base")
    assert report.recompiled and not report.needs_recompile
    assert report.changed == ("base", "base/d1", "base/bn", "base/d2")
    before_base, before_head = values(base), values(model.get_layer("head"))
    assert ensure_trainable_applied(model) is None
    fit(model)
    assert same(values(base), before_base)  # kernels, biases, BN gamma/beta and moving stats
    assert all_changed(values(model.get_layer("head")), before_head)
    assert len(model.trainable_weights) == 2

    report = unfreeze(model, "base")  # no manual compile
    assert report.recompiled
    assert ensure_trainable_applied(model) is None  # what the session does before fit
    before_base = values(base)
    fit(model)
    assert all_changed(values(base), before_base)
    assert len(model.trainable_weights) == 2 + 6


def test_report_counts_parameters_before_and_after():
    model, _ = make_model()
    report = freeze(model, "base")
    # base: d1 4*8+8, bn gamma/beta 16 (+16 moving stats, never trainable), d2 8*8+8; head 8*3+3
    assert report.trainable_params == (40 + 16 + 72 + 27, 27)
    assert report.non_trainable_params == (16, 16 + 40 + 16 + 72)
    assert isinstance(report, FreezeReport)
    assert repr(report) == (
        "FreezeReport for model 'tl'\n"
        "  froze:         base (+3 inside)\n"
        "  trainable:     155 -> 27 params\n"
        "  non-trainable:  16 -> 144 params\n"
        "  compile:       recompiled 'tl' (Adam had no state yet)"
    )


def test_frozen_batchnorm_keeps_its_moving_statistics_through_a_fit():
    model, base = make_model()
    bn = base.get_layer("bn")
    stats = [np.array(bn.moving_mean.numpy()), np.array(bn.moving_variance.numpy())]
    fit(model)
    moved = [np.array(bn.moving_mean.numpy()), np.array(bn.moving_variance.numpy())]
    assert all_changed(moved, stats)  # a trainable BN does update them

    freeze(model, "base/bn")
    weights_before = values(bn)
    fit(model)
    assert same(values(bn), weights_before)
    assert same([bn.moving_mean.numpy(), bn.moving_variance.numpy()], moved)


def test_unfreezing_a_layer_inside_a_frozen_nested_model_trains_only_that_layer():
    model, base = make_model()
    freeze(model, "base")
    report = unfreeze(model, "base/d2")
    assert base.trainable  # the nested model's own flag, so d2 really trains
    assert not base.get_layer("d1").trainable and not base.get_layer("bn").trainable
    assert report.summary == "base/d2"
    d1, d2 = values(base.get_layer("d1")), values(base.get_layer("d2"))
    fit(model)
    assert same(values(base.get_layer("d1")), d1)
    assert all_changed(values(base.get_layer("d2")), d2)


# --------------------------------------------------------------------------
# Naming layers
# --------------------------------------------------------------------------


def test_layers_by_name_index_glob_path_and_object():
    model, base = make_model()
    assert freeze(model, 2, recompile=False).changed == ("head",)  # model.layers[2]
    unfreeze(model)
    assert freeze(model, np.int64(-1), recompile=False).changed == ("head",)
    unfreeze(model)
    assert freeze(model, "base/d*", recompile=False).changed == ("base/d1", "base/d2")
    unfreeze(model)
    assert freeze(model, "bn", recompile=False).changed == ("base/bn",)  # found inside base
    unfreeze(model)
    assert freeze(model, [base.get_layer("d2"), "head"], recompile=False).changed == (
        "base/d2",
        "head",
    )
    unfreeze(model)
    assert freeze(model, "h*", recompile=False).changed == ("head",)


def test_up_to_freezes_everything_before_and_including_a_layer():
    model, base = make_model()
    report = freeze(model, up_to="base/bn")
    assert report.changed == ("base/d1", "base/bn")
    assert base.trainable and base.get_layer("d2").trainable
    assert model.get_layer("head").trainable
    report = freeze(model, up_to="base")
    assert report.changed == ("base", "base/d2")
    assert len(model.trainable_weights) == 2


# --------------------------------------------------------------------------
# Changes made by hand, and the GAN pattern
# --------------------------------------------------------------------------


def test_a_change_by_hand_recompiles_once_and_says_so():
    model, base = make_model()
    fit(model)
    assert ensure_trainable_applied(model) is None  # nothing changed
    base.trainable = False
    line = ensure_trainable_applied(model)
    assert line == "kernelkit: recompiled 'tl' because 1 layer changed trainable (base frozen)"
    assert ensure_trainable_applied(model) is None
    before = values(base)
    fit(model)
    assert same(values(base), before)


def test_a_change_by_hand_is_seen_for_a_model_compiled_before_kernelkit_saw_it():
    # Keras 3.15+ records the flags in compile(); kernelkit reads that record.
    model, base = make_model()
    base.get_layer("d1").trainable = False
    model.get_layer("head").trainable = False
    line = ensure_trainable_applied(model)
    assert line == (
        "kernelkit: recompiled 'tl' because 2 layers changed trainable (base/d1, head frozen)"
    )


def test_a_change_by_hand_applies_to_every_model_sharing_the_layer():
    model, base = make_model()
    other = keras.Model(base.inputs, keras.layers.Dense(1, name="h2")(base.output), name="other")
    other.compile("sgd", "mse")
    track_compile(model)
    track_compile(other)
    base.get_layer("d2").trainable = False
    assert "recompiled 'tl'" in ensure_trainable_applied(model)
    assert "recompiled 'other'" in ensure_trainable_applied(other)
    assert not base.get_layer("d2").trainable


@pytest.mark.parametrize("tracked_from", ["creation", "first_fit"])
def test_gan_pattern_each_model_keeps_the_trainable_state_it_was_compiled_with(tracked_from):
    discriminator = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="dd1"), keras.layers.Dense(1, name="dd2")],
        name="discriminator",
    )
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="generator")
    if tracked_from == "creation":  # registered right away (%%kmodel)
        track_compile(discriminator)
    discriminator.compile("sgd", "mse")
    discriminator.trainable = False
    gan = keras.Sequential([generator, discriminator], name="gan")
    if tracked_from == "creation":
        track_compile(gan)
    gan.compile("sgd", "mse")
    z = RNG.normal(size=(32, 2)).astype("float32")
    x = RNG.normal(size=(32, 3)).astype("float32")
    y = RNG.normal(size=(32, 1)).astype("float32")

    for _ in range(2 if tracked_from == "creation" else 1):  # alternate as a GAN loop does
        assert ensure_trainable_applied(gan) is None
        d_before, g_before = values(discriminator), values(generator)
        gan.fit(z, y, verbose=0)
        assert same(values(discriminator), d_before)
        assert all_changed(values(generator), g_before)

        assert ensure_trainable_applied(discriminator) is None
        d_before = values(discriminator)
        discriminator.fit(x, y, verbose=0)
        assert all_changed(values(discriminator), d_before)


def test_tracking_is_restorable():
    model, _ = make_model()
    track_compile(model)
    assert "compile" in vars(model)
    untrack_compile(model)
    assert "compile" not in vars(model)
    model.compile("sgd", "mse")  # the class's compile again


# --------------------------------------------------------------------------
# Optimizer state and compile configuration
# --------------------------------------------------------------------------


def test_optimizer_state_is_kept_for_layers_that_stay_trainable():
    model, _ = make_model()
    fit(model)  # 4 steps of Adam: moments and iterations hold state
    old_optimizer, old_slots = model.optimizer, slots(model)
    assert old_slots["iteration"] == 4

    report = freeze(model, "base")
    assert "Adam state kept for 2 variables" in report.note
    new_slots = slots(model)
    assert model.optimizer is not old_optimizer and type(model.optimizer) is type(old_optimizer)
    assert new_slots["iteration"] == 4  # learning-rate schedules continue
    for name in ("head_kernel_momentum", "head_kernel_velocity", "head_bias_momentum"):
        assert np.array_equal(new_slots[name], old_slots[name])
        assert np.any(new_slots[name] != 0)
    assert not any(name.startswith("d1_") for name in new_slots)  # frozen: dropped

    report = unfreeze(model, "base")
    assert "kept for 2 variables, 6 start fresh" in report.note
    new_slots = slots(model)
    assert np.array_equal(new_slots["head_kernel_velocity"], old_slots["head_kernel_velocity"])
    assert not np.any(new_slots["d1_kernel_momentum"])  # newly trainable: fresh
    fit(model)
    assert slots(model)["iteration"] == 8


def test_optimizer_state_reset_on_request():
    model, _ = make_model()
    fit(model)
    model.get_layer("head").trainable = False
    info = recompile(model, optimizer_state="reset")
    assert str(info) == "recompiled 'tl' (Adam state reset)"
    assert not model.optimizer.built  # built afresh, iterations 0, by the next fit


def test_compile_configuration_survives_a_recompile():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    outputs = {"a": keras.layers.Dense(1, name="a")(x), "b": keras.layers.Dense(1, name="b")(x)}
    model = keras.Model(inputs, outputs, name="two")
    optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)
    model.compile(
        optimizer=optimizer,
        loss={"a": "mse", "b": "mae"},
        loss_weights={"a": 0.5, "b": 2.0},
        metrics={"a": ["mae"]},
        weighted_metrics={"b": ["mse"]},
        steps_per_execution=3,
        run_eagerly=True,
    )
    y = {"a": Y[:, :1], "b": Y[:, 1:2]}
    keys = set(model.fit(X, y, batch_size=16, verbose=0).history)
    config = model.get_compile_config()
    optimizer_config = model.optimizer.get_config()

    freeze(model, "d1")
    assert model.get_compile_config() == config
    assert model.optimizer.get_config() == optimizer_config
    assert (model.run_eagerly, model.steps_per_execution, model.jit_compile) == (True, 3, False)
    assert set(model.fit(X, y, batch_size=16, verbose=0).history) == keys

    # The weighted loss is really 0.5 * mse(a) + 2 * mae(b).
    pred = model.predict(X, verbose=0)
    expected = 0.5 * np.mean((pred["a"] - y["a"]) ** 2) + 2.0 * np.mean(np.abs(pred["b"] - y["b"]))
    assert model.evaluate(X, y, batch_size=64, verbose=0, return_dict=True)["loss"] == (
        pytest.approx(expected, rel=1e-5)
    )


def test_jit_compile_survives_a_recompile():
    model, _ = make_model()
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True, steps_per_execution=2)
    freeze(model, "head")
    assert model.jit_compile is True and model.steps_per_execution == 2
    assert model.run_eagerly is False


# --------------------------------------------------------------------------
# Bad input: one clear line each, model untouched
# --------------------------------------------------------------------------


def _untouched(model):
    state = (flags(model), model.optimizer, values(model))
    return lambda: (
        flags(model) == state[0] and model.optimizer is state[1] and same(values(model), state[2])
    )


def test_unknown_name_lists_the_closest_names():
    model, _ = make_model()
    check = _untouched(model)
    with pytest.raises(ValueError, match=r"no layer 'bse' in model 'tl'; closest: 'base'") as err:
        freeze(model, ["head", "bse"])
    assert "\n" not in str(err.value)
    assert check()


def test_index_out_of_range():
    model, _ = make_model()
    check = _untouched(model)
    with pytest.raises(ValueError, match=r"layer index 7 is out of range: model 'tl' has 3 layers"):
        freeze(model, 7)
    assert check()


def test_up_to_not_found():
    model, _ = make_model()
    check = _untouched(model)
    with pytest.raises(ValueError, match=r"up_to='haed': no layer 'haed' .*closest: 'head'"):
        freeze(model, up_to="haed")
    assert check()


def test_glob_matching_nothing_and_wrong_types():
    model, _ = make_model()
    check = _untouched(model)
    with pytest.raises(ValueError, match=r"no layer of model 'tl' matches 'block9_\*'"):
        freeze(model, "block9_*")
    with pytest.raises(TypeError, match="got float"):
        freeze(model, 1.5)
    with pytest.raises(ValueError, match="is not part of model 'tl'"):
        freeze(model, keras.layers.Dense(2, name="stranger"))
    assert check()


def test_a_model_that_was_never_compiled_is_frozen_without_recompiling():
    base = make_base()
    report = freeze(base, "d1")
    assert not base.get_layer("d1").trainable
    assert (report.compiled, report.recompiled, report.needs_recompile) == (False, False, False)
    assert report.note == "model not compiled yet: the flags apply when you compile it"
    assert not base.compiled
    assert ensure_trainable_applied(base) is None
    with pytest.raises(ValueError, match="was never compiled"):
        recompile(base)


def test_not_a_keras_model_is_a_type_error():
    for thing in (keras.layers.Dense(2), "model", None):
        with pytest.raises(TypeError, match=r"expects a keras\.Model; got"):
            freeze(thing)
    with pytest.raises(TypeError, match=r"expects a keras\.Model"):
        ensure_trainable_applied(keras.layers.Dense(2))


def test_a_model_with_its_own_compile_is_not_recompiled_behind_its_back():
    class CustomCompile(keras.Model):
        def compile(self, learning_rate=0.01):
            super().compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")

    inputs = keras.Input((4,))
    model = CustomCompile(inputs, keras.layers.Dense(1, name="out")(inputs), name="custom")
    model.compile()
    check = _untouched(model)
    with pytest.raises(ValueError, match="overrides compile\\(\\); pass recompile=False"):
        freeze(model, "out")
    assert check()
    report = freeze(model, "out", recompile=False)
    assert report.needs_recompile and "recompile=False" in report.note
    assert "overrides compile()" in ensure_trainable_applied(model)


def test_set_trainable_is_a_plan_without_recompile():
    model, _ = make_model()
    optimizer = model.optimizer
    plan = set_trainable(model, "head", False)
    assert plan.needs_recompile and not plan.recompiled and model.optimizer is optimizer
    plan = set_trainable(model, "head", True)
    assert plan.changed == ("head",) and not plan.needs_recompile  # back to the compiled flags
    with pytest.raises(TypeError, match="True or False"):
        set_trainable(model, "head", "no")
