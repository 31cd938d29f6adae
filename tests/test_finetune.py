"""kernelkit.finetune: freeze_to and its BatchNormalization policy, layer_lrs, the Layers tab.

MobileNetV2 is built the way Keras's transfer-learning guide builds it
(``base(inputs, training=False)``), small (32x32, alpha=0.35, weights=None), and trained
on a few random images: what is asserted is which variables a real fit moves.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

import kernelkit
from kernelkit.finetune import FineTuneReport, bn_notes, freeze_to, layer_lrs, lr_groups
from kernelkit.intents import FreezeTo
from kernelkit.views.layers import LayersPanel

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
IMAGES = (RNG.normal(size=(16, 32, 32, 3)) * 2 + 1).astype("float32")
LABELS = RNG.integers(0, 3, size=16)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = RNG.normal(size=(64, 3)).astype("float32")
# TensorFlow: eager skips a trace of MobileNetV2 per policy (seconds each on 2 cores); which
# mode a BatchNormalization runs in is decided by the same Python calls either way. JAX runs
# op by op far slower than it compiles, so it compiles.
FAST = {"run_eagerly": BACKEND == "tensorflow"}


def values(variables) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def changed(before: list[np.ndarray], variables) -> list[bool]:
    return [a.tobytes() != b.tobytes() for a, b in zip(before, values(variables), strict=True)]


def mobilenet(**compile_kwargs):
    """The guide's recipe: a frozen pretrained-style base called with training=False, a head."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, name="base"
    )
    base.trainable = False
    inputs = keras.Input((32, 32, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs, name="transfer")
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return model, base


def batch_norms(layers) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def statistics(layers) -> list:
    return [v for layer in batch_norms(layers) for v in (layer.moving_mean, layer.moving_variance)]


def fit_images(model):
    model.fit(IMAGES, LABELS, batch_size=8, epochs=1, verbose=0)


# --------------------------------------------------------------------------
# The measurement: training=False does not keep BN in inference mode in Keras 3.15
# --------------------------------------------------------------------------


def test_plain_keras_fine_tuning_updates_bn_statistics_despite_training_false():
    model, base = mobilenet()
    (node,) = [n for n in base._inbound_nodes if n.arguments.kwargs.get("training") is False]
    # Unfreeze the top 20 layers of the base, as the guide's fine-tuning step does.
    base.trainable = True
    for layer in base.layers[:-20]:
        layer.trainable = False
    model.compile(
        keras.optimizers.Adam(1e-5), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    top = batch_norms(base.layers[-20:])
    assert len(top) == 7 and all(layer.trainable for layer in top)
    moving = statistics(base.layers[-20:])
    frozen = statistics(base.layers[:-20])
    assert len(moving) == 14
    before, before_frozen = values(moving), values(frozen)
    fit_images(model)
    # All 14 moving statistics moved: the recorded training=False did not protect them.
    assert all(changed(before, moving))
    assert not any(changed(before_frozen, frozen))  # frozen BN: inference mode, as documented
    assert node.arguments.kwargs["training"] is False  # still recorded, and still ignored


# --------------------------------------------------------------------------
# freeze_to and its BatchNormalization policy, on MobileNetV2
# --------------------------------------------------------------------------


def test_the_bn_policy_decides_which_statistics_a_fit_moves():
    model, base = mobilenet(**FAST)
    cut = base.layers[-20]
    in_frozen, in_top = base.layers[:-20], base.layers[-20:]

    report = freeze_to(model, cut)  # bn="frozen", the default
    assert isinstance(report, FineTuneReport)
    assert report.cut == f"base/{cut.name}" and report.trainable_layers == 20 + 2
    assert report.trainable_params[1] == sum(
        int(np.prod(v.shape)) for v in model.trainable_weights
    )
    assert len(report.bn_inference) == len(batch_norms(in_frozen)) and len(report.bn_training) == 7
    text = repr(report)
    assert 'bn="frozen" (Keras 3: a frozen BatchNormalization runs in inference mode)' in text
    assert "7 of those are in 'base', called with training=False" in text
    assert "keras-team/keras#20285" in text and 'optimizer_state="keep"' in text
    assert f"trainable:       3,843 -> {report.trainable_params[1]:,} params" in text
    frozen_stats, top_stats = statistics(in_frozen), statistics(in_top)
    before_frozen, before_top = values(frozen_stats), values(top_stats)
    fit_images(model)
    assert not any(changed(before_frozen, frozen_stats))  # frozen blocks: inference mode
    assert all(changed(before_top, top_stats))  # the trainable part's BN trains (Keras 3)

    report = freeze_to(model, cut, bn="train")
    assert all(layer.trainable for layer in batch_norms(base.layers))
    convs = [layer.kernel for layer in in_frozen if isinstance(layer, keras.layers.Conv2D)]
    before_frozen, before_convs = values(frozen_stats), values(convs)
    fit_images(model)
    assert all(changed(before_frozen, frozen_stats))  # fastai's train_bn: they adapt
    assert not any(changed(before_convs, convs))  # the rest of the frozen blocks stays

    report = freeze_to(model, cut, bn="inference")
    assert report.bn_training == () and "every BatchNormalization frozen" in report.bn_note
    every = statistics(base.layers)
    top_convs = [layer.kernel for layer in in_top if isinstance(layer, keras.layers.Conv2D)]
    before_every, before_top_convs = values(every), values(top_convs)
    fit_images(model)
    assert not any(changed(before_every, every))  # what training=False meant to do
    assert all(changed(before_top_convs, top_convs))  # and the top still fine-tunes


# --------------------------------------------------------------------------
# freeze_to on a small model: cuts, reports, refusals
# --------------------------------------------------------------------------


def small(compile_model: bool = True, optimizer=None, call_training=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(8, activation="relu", name="d2")(x)
    base = keras.Model(inputs, x, name="base")
    inputs = keras.Input((4,))
    kwargs = {} if call_training is None else {"training": call_training}
    outputs = keras.layers.Dense(3, name="head")(base(inputs, **kwargs))
    model = keras.Model(inputs, outputs, name="tl")
    if compile_model:
        model.compile(optimizer or keras.optimizers.Adam(0.01), "mse")
    return model, base


def flags(model) -> dict[str, bool]:
    out = {}
    for layer in model.get_layer("base").layers[1:]:
        out[f"base/{layer.name}"] = layer.trainable
    out["head"] = model.get_layer("head").trainable
    return out


@pytest.mark.parametrize(
    "spec, frozen",
    [
        (2, ["base/d1", "base/bn"]),
        (-1, ["base/d1", "base/bn", "base/d2"]),
        ("base/d2", ["base/d1", "base/bn"]),
        ("d2", ["base/d1", "base/bn"]),
        ("head", ["base/d1", "base/bn", "base/d2"]),
        ("base", []),
        (0, []),
        (4, ["base/d1", "base/bn", "base/d2", "head"]),
    ],
)
def test_freeze_to_freezes_before_the_cut_and_leaves_the_rest_trainable(spec, frozen):
    model, _ = small()
    model.get_layer("head").trainable = False  # freeze_to also unfreezes what follows the cut
    report = freeze_to(model, spec)
    assert [path for path, flag in flags(model).items() if not flag] == frozen
    assert report.frozen_layers == len(frozen)
    assert len(model.trainable_weights) == {0: 8, 2: 4, 3: 2, 4: 0}[len(frozen)]
    assert kernelkit.freezing.ensure_trainable_applied(model) is None  # recompiled already


def test_freeze_to_reports_trainable_params_and_the_optimizer_state():
    model, _ = small()
    model.fit(X, Y, batch_size=16, verbose=0)
    head_slots = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables
                  if "head" in v.path}
    report = freeze_to(model, "head")
    assert report.trainable_params == (155, 27) and report.non_trainable_params == (16, 144)
    text = repr(report)
    assert text.splitlines()[0] == "FineTuneReport for model 'tl'"
    assert "frozen:        the first 3 layers" in text
    assert "trainable:     1 from head" in text
    assert "trainable:     155 -> 27 params" in text
    assert "non-trainable:  16 -> 144 params" in text
    assert 'optimizer_state="keep": recompiled \'tl\' (Adam state kept for 2 variables)' in text
    kept = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables
            if "head" in v.path}
    assert head_slots.keys() == kept.keys()
    assert all(head_slots[k].tobytes() == kept[k].tobytes() for k in kept)

    report = freeze_to(model, "head", optimizer_state="reset")
    assert report.recompiled and "Adam state reset" in report.compile_note
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_freeze_to_on_a_model_not_compiled_sets_the_flags():
    model, _ = small(compile_model=False)
    report = freeze_to(model, "d2")
    assert not report.recompiled and "not compiled yet" in report.compile_note
    assert flags(model) == {"base/d1": False, "base/bn": False, "base/d2": True, "head": True}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_or_layer": "d3"}, ValueError, "no layer 'd3' in model 'tl'; closest: 'd2', 'd1'"),
        ({"n_or_layer": 9}, ValueError, r"has 4 layers .*use -4\.\.4"),
        ({"n_or_layer": True}, TypeError, "a layer count or a layer"),
        ({"n_or_layer": 1, "bn": "none"}, ValueError, "bn='none' is not a policy"),
        ({"n_or_layer": 1, "optimizer_state": "drop"}, ValueError, "'keep' or 'reset'"),
    ],
)
def test_freeze_to_refuses_bad_input_and_changes_nothing(kwargs, error, match):
    model, _ = small()
    before = flags(model)
    with pytest.raises(error, match=match):
        freeze_to(model, **kwargs)
    assert flags(model) == before


def test_bn_notes_name_trainable_bn_under_training_false():
    model, _ = small(call_training=False)
    assert bn_notes(model) == {
        "base/bn": "trainable BatchNormalization: fit updates its moving statistics although "
        "its model is called with training=False (keras-team/keras#20285)"
    }
    assert bn_notes(small()[0]) == {}  # no training=False recorded: nothing to warn about
    freeze_to(model, "d2")
    assert bn_notes(model) == {}  # frozen now: inference mode


# --------------------------------------------------------------------------
# layer_lrs: discriminative learning rates on Keras's MultiOptimizer
# --------------------------------------------------------------------------


def test_layer_lrs_gives_each_group_its_own_rate():
    # One SGD step from the same weights on the same batch: each group moves by its own rate.
    model, _ = small(optimizer=keras.optimizers.SGD(0.1))
    slow, _ = small(optimizer=keras.optimizers.SGD(1e-3))
    fast, _ = small(optimizer=keras.optimizers.SGD(0.1))
    report = layer_lrs(model, {"base": 1e-3, "head": 0.1})
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    for m in (model, slow, fast):
        m.fit(X[:16], Y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)

    def group(m, name):
        layer = m.get_layer(name)
        return values(layer.trainable_weights)

    np.testing.assert_allclose(
        np.concatenate([a.ravel() for a in group(model, "base")]),
        np.concatenate([a.ravel() for a in group(slow, "base")]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(group(model, "head")[0], group(fast, "head")[0], rtol=1e-6)
    assert not np.allclose(group(model, "head")[0], group(slow, "head")[0])
    text = repr(report)
    assert "base:          lr 1e-03 · 3 layers · 128 trainable params" in text
    assert "head:          lr 1e-01 · 1 layer · 27 trainable params" in text
    assert "trainable:     155 -> 155 params" in text
    assert "MultiOptimizer of 3 SGDs" in text
    assert lr_groups(model) == {
        "base": "base · 1e-03",
        "base/d1": "base · 1e-03",
        "base/bn": "base · 1e-03",
        "base/d2": "base · 1e-03",
        "head": "head · 1e-01",
    }


def test_layer_lrs_keep_their_state_through_save_and_load(tmp_path):
    model, _ = small()
    model.fit(X, Y, batch_size=16, verbose=0)
    layer_lrs(model, {"base": 1e-4, "head": 1e-2})
    model.fit(X, Y, batch_size=16, verbose=0)
    path = tmp_path / "tl.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)
    rates = [
        float(keras.ops.convert_to_numpy(o.learning_rate)) for o in loaded.optimizer.optimizers
    ]
    assert rates == pytest.approx([1e-4, 1e-2, 0.01])
    assert [o.name for o in loaded.optimizer.optimizers] == ["lr_base", "lr_head", "lr_rest"]
    saved, restored = values(model.optimizer.variables), values(loaded.optimizer.variables)
    assert len(saved) == len(restored) and all(
        a.tobytes() == b.tobytes() for a, b in zip(saved, restored, strict=True)
    )
    for m in (model, loaded):
        m.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(values(model.weights), values(loaded.weights), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_freezing_after_layer_lrs_keeps_the_groups_and_their_state():
    model, _ = small()
    layer_lrs(model, {"base": 1e-4, "head": 1e-2})
    model.fit(X, Y, batch_size=16, verbose=0)
    head = {v.path: np.array(keras.ops.convert_to_numpy(v)) for o in model.optimizer.optimizers
            for v in o.variables}
    report = kernelkit.freeze(model, "base/d1")
    assert "recompiled" in report.note
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert lr_groups(model)["head"] == "head · 1e-02"
    now = {v.path: np.array(keras.ops.convert_to_numpy(v)) for o in model.optimizer.optimizers
           for v in o.variables}
    kept = [k for k in now if "head" in k or "iteration" in k]
    assert kept and all(now[k].tobytes() == head[k].tobytes() for k in kept)
    model.fit(X, Y, batch_size=16, verbose=0)  # and it still trains


def test_layer_lrs_refuses_overlaps_and_unknown_groups_and_changes_nothing():
    model, _ = small()
    optimizer = model.optimizer
    with pytest.raises(ValueError, match="is in groups 'base' and 'base/d1'"):
        layer_lrs(model, {"base": 1e-4, "base/d1": 1e-3})
    with pytest.raises(ValueError, match="no layer 'neck'"):
        layer_lrs(model, {"neck": 1e-4})
    with pytest.raises(ValueError, match="is not compiled"):
        layer_lrs(small(compile_model=False)[0], {"head": 1e-3})
    assert model.optimizer is optimizer


def test_layer_lrs_with_no_groups_goes_back_to_one_optimizer():
    model, _ = small()
    layer_lrs(model, {"head": 1e-2}, default=1e-4)
    assert lr_groups(model)["base/d1"] == "rest · 1e-04"
    report = layer_lrs(model, {})
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert lr_groups(model) == {} and "Adam (one learning rate)" in repr(report)


def test_lr_find_sweeps_the_groups_at_their_ratios_and_puts_them_back(monkeypatch):
    import kernelkit.lr_find as finder

    model, _ = small()
    # base: a schedule (its rate now is what the ratio is taken from); head the highest rate;
    # the default group ("rest", no layers left in it) a tenth of the head's.
    schedule = keras.optimizers.schedules.ExponentialDecay(2e-4, 10, 0.5)
    layer_lrs(model, {"base": schedule, "head": 1e-2}, default=1e-3)
    model.fit(X, Y, batch_size=16, verbose=0)
    groups = model.optimizer.optimizers
    assert [o.name for o in groups] == ["lr_base", "lr_head", "lr_rest"]
    base_now = float(keras.ops.convert_to_numpy(groups[0].learning_rate))
    before = values([*model.weights, *model.optimizer.variables])
    rates = [o.__dict__["_learning_rate"] for o in groups]
    iterations = [int(keras.ops.convert_to_numpy(o.iterations)) for o in groups]

    seen = []

    class Watching(finder._Sweep):
        """The finder's own callback, also reading every group's rate after each step."""

        def on_train_batch_end(self, batch, logs=None):
            # self.model syncs the JAX trainer's state into the variables first.
            seen.append([float(keras.ops.convert_to_numpy(o.learning_rate))
                         for o in self.model.optimizer.optimizers])
            super().on_train_batch_end(batch, logs)

    monkeypatch.setattr(finder, "_Sweep", Watching)
    found = finder.lr_find(model, np.tile(X, (8, 1)), np.tile(Y, (8, 1)), batch_size=16,
                           display="none")

    assert found.ran >= 10 and len(seen) >= 10
    base, head, rest = (np.array(column) for column in zip(*seen, strict=True))
    assert head[-1] > 100 * head[0]  # the head's rate was swept...
    np.testing.assert_allclose(base / head, base_now / 1e-2, rtol=1e-4)  # ...with base at its ratio
    assert np.all(rest == rest[0])  # the empty default group takes no steps: its rate stays
    assert found.group == "head"
    assert dict(found.ratios) == pytest.approx({"base": base_now / 1e-2, "head": 1.0, "rest": 0.1})
    assert found.rates == pytest.approx(
        {"base": found.suggestion * base_now / 1e-2, "head": found.suggestion}
    )
    assert found.default == pytest.approx(found.suggestion / 10)
    line = repr(found)
    assert f"suggested learning rate {found.suggestion:.2e} for group 'head'" in line
    assert "every group swept at its ratio to 'head' (base x" in line and "rest x0.1" in line
    assert f"'head': {found.suggestion:.2e}" in line and "default=" in line

    # Every group's optimizer is put back bit for bit: slots, iterations, rates and schedules.
    after = values([*model.weights, *model.optimizer.variables])
    assert len(after) == len(before)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after, strict=True))
    assert [o.__dict__["_learning_rate"] for o in groups] == rates
    assert groups[0].__dict__["_learning_rate"] is schedule
    assert [int(keras.ops.convert_to_numpy(o.iterations)) for o in groups] == iterations

    # The suggestion goes straight back into layer_lrs, ratios kept.
    layer_lrs(model, found.rates, default=found.default)
    now = [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in model.optimizer.optimizers]
    assert now == pytest.approx([found.rates["base"], found.rates["head"], found.default],
                                rel=1e-6)


def test_freeze_to_and_layer_lrs_keep_a_registered_models_distribution(ip):
    # The JAX leg's 8 devices: a %%kmodel cell builds the model in DataParallel; the
    # optimizers that freeze_to and layer_lrs build must lie on the same devices, or the next
    # fit fails inside jit ("incompatible devices for jitted computation").
    from kernelkit import session
    from kernelkit.lr_find import lr_find

    x, y = np.tile(X, (8, 1)), np.tile(Y, (8, 1))  # 512 samples, batches of 16: 2 per device
    ip.user_ns.update(x=x, y=y, small=small)
    ip.run_cell_magic("kmodel", "tl --no-card", "tl, _ = small()\ntl.fit(x, y, batch_size=16)\n")
    model = ip.user_ns["tl"]
    try:
        freeze_to(model, "base/d2")
        model.fit(x, y, batch_size=16, verbose=0)
        layer_lrs(model, {"base": 1e-4, "head": 1e-2})
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert len(history.history["loss"]) == 2
        assert lr_find(model, x, y, batch_size=16, display="none").group == "head"
    finally:
        session.unregister("tl")


def test_lr_find_with_one_optimizer_names_no_group():
    from kernelkit.lr_find import lr_find

    model, _ = small()
    found = lr_find(model, np.tile(X, (8, 1)), np.tile(Y, (8, 1)), batch_size=16, display="none")
    assert found.group is None and found.ratios == () and found.rates == {}
    assert found.default is None and "group" not in repr(found)


# --------------------------------------------------------------------------
# The Layers tab: freeze up to here with the BN policy, the lr column, the notes
# --------------------------------------------------------------------------


def recording(model):
    from kernelkit.operations import submitter

    sent = []
    apply = submitter(model)

    def submit(intent):
        sent.append(intent)
        return apply(intent)

    return submit, sent


def test_freeze_up_to_here_sends_freeze_to_with_the_bn_policy():
    model, _ = small(call_training=False)
    submit, sent = recording(model)
    panel = LayersPanel(model, submit=submit)
    assert "called with training=False" in panel.rows["base/bn"].note.value
    panel.bn_policy.value = "train"
    panel.rows["base/d2"].up_to.click()
    assert sent == [FreezeTo("base/d2", bn="train")]
    assert flags(model) == {"base/d1": False, "base/bn": True, "base/d2": False, "head": True}
    assert [panel.rows[p].toggle.value for p in ("base/d1", "base/bn", "base/d2", "head")] == [
        False,
        True,
        False,
        True,
    ]
    panel.bn_policy.value = "frozen"
    panel.rows["base/bn"].up_to.click()
    assert flags(model) == {"base/d1": False, "base/bn": False, "base/d2": True, "head": True}
    assert "inference mode" in panel.rows["base/bn"].note.value


def test_freeze_up_to_here_is_pending_while_a_fit_runs():
    model, _ = small()
    queued = []
    panel = LayersPanel(model, submit=lambda intent: queued.append(intent) or False)
    panel.bn_policy.value = "inference"
    panel.rows["base/d1"].up_to.click()
    assert queued == [FreezeTo("base/d1", bn="inference")]
    assert panel.pending == {
        "base/d1": False,
        "base/bn": False,  # inference: every BN frozen
        "base/d2": True,
        "head": True,
        "base": True,
    }
    assert all(model.get_layer("base").get_layer(n).trainable for n in ("d1", "bn", "d2"))
    kernelkit.operations.apply_intent(model, queued[0])  # the session, after the fit
    panel.refresh()
    assert [panel.rows[p].toggle.value for p in ("base/d1", "base/bn", "base/d2", "head")] == [
        False,
        False,
        True,
        True,
    ]


def test_the_lr_column_appears_with_layer_groups():
    model, _ = small()
    panel = LayersPanel(model)
    assert "lr group" not in panel.static_html()
    assert panel.rows["head"].lr.layout.display == "none"
    layer_lrs(model, {"base": 1e-4, "head": 1e-2})
    panel.refresh()
    assert panel.rows["head"].lr.layout.display is None
    assert "head · 1e-02" in panel.rows["head"].lr.value
    assert "<th style='text-align:left'>lr group</th>" in panel.static_html()
    line = next(line for line in repr(panel).splitlines() if line.strip().startswith("[x] head"))
    assert "head · 1e-02" in line


def test_the_card_applies_freeze_up_to_here_through_the_session():
    from kernelkit import session

    model, _ = small()
    entry = session.register("ft_card", model)
    try:
        card = kernelkit.card("ft_card")
        panel = dict(card.tabs())["Layers"]
        panel.rows["base/bn"].up_to.click()
        assert flags(model) == {"base/d1": False, "base/bn": False, "base/d2": True, "head": True}
        assert entry.submit(FreezeTo("base/d2")) is True  # up to and including base/d2
        assert flags(model) == {"base/d1": False, "base/bn": False, "base/d2": False, "head": True}
    finally:
        session.unregister("ft_card")
