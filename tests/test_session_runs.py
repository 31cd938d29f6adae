"""Resume, checkpoint and TensorBoard through ``kernelkit.fit`` and ``%%kmodel``.

``tests/test_runs.py`` tests the callbacks themselves; this file tests what
a user reaches them through: ``kernelkit.fit(..., resume=, checkpoint=,
tensorboard=)`` and the ``--resume``, ``--checkpoint`` and ``--tensorboard``
options of the magic, including bad input (one plain line, nothing lost).
"""

from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
from IPython.core.error import UsageError

import kernelkit
from kernelkit import events as ev
from kernelkit import session
from kernelkit.callback import LiveProgress, history_for

SETUP = """
import numpy as np, keras, kernelkit
rng = np.random.default_rng(0)
x4 = rng.normal(size=(128, 4)).astype("float32")
y1 = x4 @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
"""


@pytest.fixture
def shell(ip):
    ip.run_cell_raising(SETUP)
    yield ip
    for name in list(session.registry._REGISTRY):
        session.unregister(name)


def make_model(name="tiny", seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
        name=name,
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


class Recorder(keras.callbacks.Callback):
    """Keeps every finished epoch's logs and weights."""

    def __init__(self):
        super().__init__()
        self.logs, self.weights = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs or {}))
        self.weights.append([w.copy() for w in self.model.get_weights()])


class CrashAfter(keras.callbacks.Callback):
    """Raises at the end of epoch ``epochs`` (1-based), like a bug in a user's callback."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise RuntimeError("crash for the test")


def quiet(events=None):
    """A LiveProgress that shows nothing (and records its events when given a list)."""
    return LiveProgress(display="none", sink=events.append if events is not None else None)


def event_scalars(logdir):
    """{tag: number of values} of the TensorBoard event files under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for path in glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True):
        acc = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        part = os.path.basename(os.path.dirname(path))
        for tag in acc.Tags()["tensors"] + acc.Tags()["scalars"]:
            items = acc.Tensors(tag) if tag in acc.Tags()["tensors"] else acc.Scalars(tag)
            found[f"{part}/{tag}"] = len(items)
    return found


def expect_usage(shell, line, cell, needle):
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("kmodel", line, cell)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message.strip()
    assert type(info.value) is UsageError  # a subclass would print a traceback
    return message


# --- kernelkit.fit -------------------------------------------------------------------------


def test_fit_checkpoint_keeps_the_best_epoch_weights(tiny_data, tmp_path):
    x, y = tiny_data
    model = make_model()
    path = tmp_path / "best.weights.h5"
    seen = Recorder()
    kernelkit.fit(
        model,
        x,
        y,
        checkpoint=str(path),
        epochs=4,
        batch_size=32,
        validation_split=0.25,
        callbacks=[seen, quiet()],
    )
    assert path.is_file()
    best = int(np.argmin([logs["val_loss"] for logs in seen.logs]))
    fresh = keras.Sequential(  # not compiled: the file's optimizer state is not wanted here
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    fresh.load_weights(path)
    for saved, kept in zip(fresh.get_weights(), seen.weights[best], strict=True):
        np.testing.assert_array_equal(saved, kept)


def test_fit_resume_after_an_exception_continues_and_draws_the_earlier_epochs(tiny_data, tmp_path):
    x, y = tiny_data
    directory = str(tmp_path / "run")
    first = Recorder()
    with pytest.raises(RuntimeError, match="crash for the test"):
        kernelkit.fit(
            make_model(),
            x,
            y,
            resume=directory,
            epochs=5,
            batch_size=32,
            callbacks=[first, CrashAfter(2), quiet()],
        )

    model = make_model(seed=1)  # a fresh model of the same architecture, as after a restart
    events = []
    history = kernelkit.fit(
        model, x, y, resume=directory, epochs=5, batch_size=32, callbacks=[quiet(events)]
    )
    begin = next(e for e in events if isinstance(e, ev.TrainBegin))
    assert (begin.initial_epoch, begin.resumed_at) == (2, 2)  # the view says "resumed at epoch 3"
    assert len(history.history["loss"]) == 3
    assert int(model.optimizer.iterations.numpy()) == 5 * 8  # 8 steps an epoch, none repeated
    # The curves and the table of this model hold all five epochs, the first two from run one.
    rows = list(history_for(model).rows())
    assert [epoch for epoch, _ in rows] == [0, 1, 2, 3, 4]
    for (_, logs), old in zip(rows[:2], first.logs, strict=True):
        assert logs["loss"] == pytest.approx(old["loss"])
    assert [logs["loss"] for _, logs in rows[2:]] == pytest.approx(history.history["loss"])
    assert history.history["loss"][0] < first.logs[-1]["loss"]  # the weights were restored


class StopMidEpoch(keras.callbacks.Callback):
    """Asks the fit's LiveProgress to stop at a step of an epoch, as the Stop button does."""

    def __init__(self, live, epoch, step):
        super().__init__()
        self.live, self.at = live, (epoch, step)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.live.request_stop("user")


def test_fit_resume_same_model_after_a_mid_epoch_stop_redraws_that_epoch(tiny_data, tmp_path):
    x, y = tiny_data
    directory = str(tmp_path / "run")
    model = make_model()
    session.register("same", model)
    try:
        live = quiet()
        kernelkit.fit(
            model,
            x,
            y,
            resume=directory,
            epochs=5,
            batch_size=32,
            callbacks=[StopMidEpoch(live, epoch=2, step=3), live],
        )
        assert runs_state_epoch(directory) == 2  # epoch 3 was cut short: it is done again
        # resume= is kernelkit.fit's (a registered model's own fit takes Keras's arguments only).
        history = kernelkit.fit(
            model, x, y, resume=directory, epochs=5, batch_size=32, callbacks=[quiet()]
        )
        assert history.epoch == [2, 3, 4]
        assert [epoch for epoch, _ in history_for(model).rows()] == [0, 1, 2, 3, 4]
    finally:
        session.unregister("same")


def runs_state_epoch(directory):
    from kernelkit import checkpoints

    return checkpoints.resumed_state(directory).epoch


def test_fit_tensorboard_writes_events_under_runs_name_timestamp(
    tiny_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    x, y = tiny_data
    kernelkit.fit(
        make_model("tiny"),
        x,
        y,
        tensorboard=True,
        epochs=2,
        batch_size=32,
        validation_split=0.25,
        callbacks=[quiet()],
    )
    kernelkit.fit(
        make_model("tiny"), x, y, tensorboard="exp-1", epochs=1, batch_size=32, callbacks=[quiet()]
    )
    out = capsys.readouterr().out
    (run,) = glob.glob("runs/tiny/*")
    (named,) = glob.glob("runs/exp-1/*")
    assert f"TensorBoard logs are in {run}." in out
    assert "%load_ext tensorboard\n%tensorboard --logdir runs/tiny\n" in out
    assert "%tensorboard --logdir runs/exp-1\n" in out
    scalars = event_scalars(run)
    assert scalars["train/epoch_loss"] == 2 and scalars["validation/epoch_loss"] == 2, scalars
    assert event_scalars(named)["train/epoch_loss"] == 1


def test_fit_bad_arguments_raise_one_line_and_change_nothing(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = tiny_data
    model = make_model()
    weights = [w.copy() for w in model.get_weights()]
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    cases = [
        ({"checkpoint": "best.h5"}, "must end in .weights.h5"),
        ({"checkpoint": str(blocker / "best.weights.h5")}, "The checkpoint folder"),
        ({"resume": str(blocker)}, "is a file"),
        ({"resume": str(blocker / "run")}, "Cannot write to the resume directory"),
        ({"tensorboard": "a/b"}, "must be one folder name"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ValueError) as info:
            kernelkit.fit(model, x, y, epochs=1, callbacks=[quiet()], **kwargs)
        assert needle in str(info.value) and "\n" not in str(info.value), (kwargs, info.value)
    assert int(model.optimizer.iterations.numpy()) == 0  # no fit started
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert blocker.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no runs/, no stray files


# --- %%kmodel ------------------------------------------------------------------------------


def test_magic_checkpoint_writes_best_weights_for_the_cell_and_later_fits(shell, tmp_path):
    path = tmp_path / "ckpt" / "best.weights.h5"  # the folder is made on demand
    shell.run_cell_magic(
        "kmodel",
        f"ck --checkpoint {path} --seed 0 --no-card",
        """
ck = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
ck.compile("sgd", "mse")
h = ck.fit(x4, y1, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
""",
    )
    assert path.is_file()
    model = shell.user_ns["ck"]
    probe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    probe.load_weights(path)
    assert probe.get_weights()[0].shape == (4, 1)
    # A later fit of the registered model keeps checkpointing to the same file.
    path.unlink()
    model.fit(shell.user_ns["x4"], shell.user_ns["y1"], epochs=1, validation_split=0.25)
    assert path.is_file()


def test_magic_tensorboard_logs_under_the_cell_name_and_prints_the_hint(
    shell, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    shell.run_cell_magic(
        "kmodel",
        "tb --tensorboard --no-card",
        """
tb = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="sequential_x")
tb.compile("sgd", "mse")
tb.fit(x4, y1, epochs=2, batch_size=32, verbose=0)
""",
    )
    (run,) = glob.glob("runs/tb/*")  # the cell's NAME, not the Keras model name
    out = capsys.readouterr().out
    assert f"TensorBoard logs are in {run}." in out
    assert "%tensorboard --logdir runs/tb" in out
    assert event_scalars(run)["train/epoch_loss"] == 2


def test_magic_resume_continues_after_the_cell_raised(shell, tmp_path):
    directory = tmp_path / "run"
    cell = """
rs = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
rs.compile("sgd", "mse")
h = rs.fit(x4, y1, epochs=4, batch_size=32, callbacks=CRASH)
"""
    shell.user_ns["CrashAfter"] = CrashAfter
    shell.run_cell_raising("CRASH = [CrashAfter(3)]")
    with pytest.raises(UsageError, match="the %%kmodel rs cell raised"):
        shell.run_cell_magic("kmodel", f"rs --resume {directory} --seed 0 --no-card", cell)
    assert "rs" not in session.registry._REGISTRY
    shell.run_cell_raising("CRASH = []")
    shell.run_cell_magic("kmodel", f"rs --resume {directory} --seed 0 --no-card", cell)
    model = shell.user_ns["rs"]
    assert len(shell.user_ns["h"].history["loss"]) == 1  # epochs 1-3 were done before the crash
    assert int(model.optimizer.iterations.numpy()) == 4 * 4
    assert [epoch for epoch, _ in history_for(model).rows()] == [0, 1, 2, 3]
    assert sorted(os.listdir(directory)) == ["history.json"]  # finished: the backup is gone


def test_magic_bad_paths_are_one_line_usage_errors_that_lose_nothing(shell, tmp_path):
    shell.run_cell_magic(
        "kmodel",
        "keep --no-card",
        """
keep = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
keep.compile("sgd", "mse")
""",
    )
    keep = shell.user_ns["keep"]
    weights = [w.copy() for w in keep.get_weights()]
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    shell.user_ns.pop("ran", None)
    cell = "ran = True\nkeep = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])"

    message = expect_usage(
        shell, f"keep --resume {blocker / 'run'}", cell, "Cannot write to the resume directory"
    )
    assert str(blocker / "run") in message
    expect_usage(shell, f"keep --resume {blocker}", cell, "is a file: pass a directory path")
    expect_usage(
        shell,
        f"keep --checkpoint {tmp_path / 'best.h5'}",
        cell,
        "must end in .weights.h5 (weights only) or .keras (whole model)",
    )
    expect_usage(
        shell, f"keep --checkpoint {blocker / 'best.weights.h5'}", cell, "The checkpoint folder"
    )

    assert "ran" not in shell.user_ns  # the cell never ran
    assert shell.user_ns["keep"] is keep and kernelkit.get("keep") is keep
    assert session.entry_for(keep).fit_options == {}
    assert all(np.array_equal(a, b) for a, b in zip(weights, keep.get_weights(), strict=True))
    assert blocker.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_magic_quoted_path_with_a_space(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a wrongly quoted relative folder would land
    directory = tmp_path / "my run"
    shell.run_cell_magic(
        "kmodel",
        f'q --resume "{directory}" --no-card',
        """
q = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
q.compile("sgd", "mse")
q.fit(x4, y1, epochs=1, batch_size=64, verbose=0)
""",
    )
    assert (directory / "history.json").is_file()
