"""kernelkit.checkpoints: resume after a crash, best checkpoints, TensorBoard logs."""

from __future__ import annotations

import json
import os
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest

from kernelkit import checkpoints
from kernelkit.checkpoints import (
    ResumeBackup,
    checkpoint_callback,
    clear_resume,
    resume_callbacks,
    resumed_state,
    tensorboard_callback,
    tensorboard_hint,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = (X @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
BATCH = 16  # 4 steps per epoch


def make_model(seed: int = 0, compile: bool = True) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
        ]
    )
    if compile:
        # Eager: tracing a tf.function costs more than these few tiny steps.
        model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=True)
    return model


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in model.weights]


class Recorder(keras.callbacks.Callback):
    """Records the epochs that run, their logs, and the weights at each edge."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.logs: dict[int, dict] = {}
        self.at_begin: dict[int, list[np.ndarray]] = {}
        self.at_end: dict[int, list[np.ndarray]] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.at_begin[epoch] = snapshot(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.logs[epoch] = dict(logs or {})
        self.at_end[epoch] = snapshot(self.model)


class Crash(keras.callbacks.Callback):
    """Simulates a crash: raises in the middle of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch
        self.current = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 1:
            raise RuntimeError("simulated crash")


class StopAt(keras.callbacks.Callback):
    """Sets stop_training like a stop button or a graceful Ctrl-C does."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            self.model.stop_training = True


def fit(model, directory, epochs, *extra):
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[*resume_callbacks(directory), *extra],
    )


# ----------------------------------------------------------------------------
# resume


def test_resume_after_crash_continues_at_epoch_3_with_weights_and_history(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a user file that must survive
    first = make_model(seed=0)
    seen = Recorder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(first, run, 6, seen, Crash(epoch=3))
    assert seen.epochs == [0, 1, 2, 3]

    state = resumed_state(run)  # read before the second fit starts
    assert state is not None and state.epoch == 3 and str(state) == "resumed at epoch 4"
    assert state.epochs == (0, 1, 2)
    assert state.history["loss"] == [seen.logs[e]["loss"] for e in (0, 1, 2)]

    second = make_model(seed=42)  # a fresh model, as after a kernel restart
    again = Recorder()
    history = fit(second, run, 6, again)

    assert again.epochs == [3, 4, 5]
    assert history.epoch == [3, 4, 5]
    for restored, saved in zip(again.at_begin[3], seen.at_end[2], strict=True):
        np.testing.assert_array_equal(restored, saved)  # weights after epoch 2, not 3's half
    # Finished: nothing left to resume, the history file holds the whole run,
    # the user's file is still there.
    assert resumed_state(run) is None
    assert not (run / "backup").exists()
    assert (run / "notes.txt").read_text() == "mine"
    saved = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in saved["logs"]] == [0, 1, 2, 3, 4, 5]
    assert saved["logs"][4]["loss"] == pytest.approx(again.logs[4]["loss"])


def test_optimizer_state_is_restored_and_a_later_plain_fit_starts_at_0(tmp_path):
    first = make_model()
    with pytest.raises(RuntimeError):
        fit(first, tmp_path, 4, Crash(epoch=2))
    second = make_model(seed=9)
    seen = Recorder()
    fit(second, tmp_path, 4, seen)
    # Adam's step counter continues from 2 epochs x 4 steps, not from 0.
    assert int(keras.ops.convert_to_numpy(second.optimizer.iterations)) == 4 * 4
    # Keras's BackupAndRestore alone would make this fit start at epoch 2.
    later = second.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    assert later.epoch == [0]


def test_stop_mid_epoch_keeps_backup_and_redoes_that_epoch(tmp_path):
    first = make_model()
    history = fit(first, tmp_path, 5, StopAt(epoch=2, batch=1))
    assert history.epoch == [0, 1, 2]  # Keras logs the cut epoch ...
    state = resumed_state(tmp_path)
    assert state is not None and state.epoch == 2  # ... but it is not counted as done
    assert state.epochs == (0, 1)

    seen = Recorder()
    fit(make_model(seed=5), tmp_path, 5, seen)
    assert seen.epochs == [2, 3, 4]
    assert resumed_state(tmp_path) is None


def test_stop_at_an_epoch_end_resumes_at_the_next_epoch(tmp_path):
    fit(make_model(), tmp_path, 5, StopAt(epoch=1, batch=3))  # last step of epoch 1
    state = resumed_state(tmp_path)
    assert state is not None and state.epoch == 2 and state.epochs == (0, 1)


def test_first_run_has_no_state_and_clear_resume_removes_only_ours(tmp_path):
    assert resumed_state(tmp_path / "never") is None
    with pytest.raises(RuntimeError):
        fit(make_model(), tmp_path, 3, Crash(epoch=1))
    (tmp_path / "keep.txt").write_text("x")
    assert resumed_state(tmp_path).epoch == 1
    assert clear_resume(tmp_path) is True
    assert resumed_state(tmp_path) is None
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]
    assert clear_resume(tmp_path) is False
    seen = Recorder()
    fit(make_model(), tmp_path, 2, seen)
    assert seen.epochs == [0, 1]


def test_a_fresh_run_after_a_finished_one_starts_a_new_history(tmp_path):
    fit(make_model(), tmp_path, 3)
    seen = Recorder()
    fit(make_model(), tmp_path, 2, seen)
    assert seen.epochs == [0, 1]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in saved["logs"]] == [0, 1]


def test_damaged_latest_backup_falls_back_to_the_previous_one(tmp_path):
    with pytest.raises(RuntimeError):
        fit(make_model(), tmp_path, 5, Crash(epoch=3))
    latest = tmp_path / "backup" / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:100])  # the kernel died mid-write
    state = resumed_state(tmp_path)
    assert state.epoch == 2 and state.epochs == (0, 1)  # what BackupAndRestore restores
    seen = Recorder()
    fit(make_model(), tmp_path, 5, seen)
    assert seen.epochs == [2, 3, 4]


def test_damaged_metadata_is_one_clear_line(tmp_path):
    with pytest.raises(RuntimeError):
        fit(make_model(), tmp_path, 3, Crash(epoch=1))
    (tmp_path / "backup" / "training_metadata.json").write_text("{not json")
    with pytest.raises(ValueError) as excinfo:
        resumed_state(tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message and "delete" in message and "backup" in message


def test_history_with_validation_every_other_epoch(tmp_path):
    model = make_model()
    with pytest.raises(RuntimeError):
        model.fit(
            X[:48],
            Y[:48],
            validation_data=(X[48:], Y[48:]),
            validation_freq=2,
            batch_size=BATCH,
            epochs=5,
            verbose=0,
            callbacks=[*resume_callbacks(tmp_path), Crash(epoch=3)],
        )
    state = resumed_state(tmp_path)
    assert state.epochs == (0, 1, 2) and len(state.history["loss"]) == 3
    assert len(state.history["val_loss"]) == 1  # only epoch 1 validated, like History
    saved = json.loads((tmp_path / "history.json").read_text())["logs"]
    assert ["val_loss" in r for r in saved] == [False, True, False]


def test_history_file_is_replaced_atomically(tmp_path, monkeypatch):
    fit(make_model(), tmp_path, 3, StopAt(epoch=0, batch=3))  # stopped: the backup stays
    good = (tmp_path / "history.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "replace", broken_replace)
    history_cb = resume_callbacks(tmp_path)[0]
    history_cb.set_model(make_model())
    history_cb.on_train_begin()
    with pytest.raises(OSError, match="disk full"):
        history_cb.on_epoch_end(1, {"loss": 1.0})
    assert (tmp_path / "history.json").read_text() == good  # old version intact
    assert sorted(os.listdir(tmp_path)) == ["backup", "history.json"]  # no temp file left


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only directory"])
def test_unwritable_resume_directory_is_one_clear_line(tmp_path, case):
    if case == "a file":
        target = tmp_path / "run"
        target.write_text("")
        expected = "is a file"
    elif case == "under a file":
        (tmp_path / "f").write_text("")
        target = tmp_path / "f" / "run"
        expected = "Cannot write"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write to a read-only directory")
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
        expected = "Cannot write"
    with pytest.raises(ValueError) as excinfo:
        resume_callbacks(target)
    message = str(excinfo.value)
    assert "\n" not in message and expected in message and str(target) in message


def test_resume_backup_keeps_async_batch_dispatch(tmp_path):
    # Keras only dispatches batch-end hooks asynchronously when no callback
    # overrides them; BackupAndRestore does, ResumeBackup must not.
    backup = resume_callbacks(tmp_path)[1]
    assert isinstance(backup, ResumeBackup)
    assert getattr(backup.on_train_batch_end, "_is_default", False)
    assert not getattr(
        keras.callbacks.BackupAndRestore(str(tmp_path / "b")).on_train_batch_end,
        "_is_default",
        False,
    )


# ----------------------------------------------------------------------------
# best-weights checkpoints


def test_checkpoint_keeps_the_best_epoch_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "best.weights.h5"
    model = make_model()
    seen = Recorder()
    model.fit(
        X[:48],
        Y[:48],
        validation_data=(X[48:], Y[48:]),
        batch_size=BATCH,
        epochs=4,
        verbose=0,
        callbacks=[checkpoint_callback(path), seen],
    )
    best = min(seen.logs, key=lambda e: seen.logs[e]["val_loss"])
    with h5py.File(path) as f:  # Keras 3 weights file, no model config
        assert "layers" in f and "model_config" not in f.attrs
    restored = make_model(seed=3, compile=False)
    restored.load_weights(path)
    for a, b in zip(snapshot(restored), seen.at_end[best], strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_keras_suffix_saves_the_whole_model(tmp_path):
    path = tmp_path / "best.keras"
    model = make_model()
    model.fit(
        X,
        Y,
        validation_split=0.25,
        batch_size=BATCH,
        epochs=2,
        verbose=0,
        callbacks=[checkpoint_callback(path, monitor="val_loss", mode="min")],
    )
    assert zipfile.is_zipfile(path)
    assert keras.saving.load_model(path).count_params() == model.count_params()


@pytest.mark.parametrize(
    "path, kwargs, message",
    [
        ("best.h5", {}, "must end in .weights.h5"),
        ("best.weights", {}, "must end in .weights.h5"),
        ("best.keras", {"mode": "lowest"}, "mode must be"),
    ],
)
def test_checkpoint_bad_arguments(tmp_path, path, kwargs, message):
    with pytest.raises(ValueError) as excinfo:
        checkpoint_callback(tmp_path / path, **kwargs)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


# ----------------------------------------------------------------------------
# TensorBoard


def test_tensorboard_writes_to_runs_name_timestamp(tmp_path):
    callback, logdir = tensorboard_callback("mnist", root=tmp_path / "runs")
    _, logdir2 = tensorboard_callback("mnist", root=tmp_path / "runs")
    # Keras's own on TensorFlow; the TensorFlow-free scalar writer on other backends.
    assert isinstance(callback, (keras.callbacks.TensorBoard, checkpoints.ScalarTensorBoard))
    assert logdir != logdir2  # two runs in the same second still get their own folder
    relative = os.path.relpath(logdir, tmp_path)
    assert re.fullmatch(r"runs/mnist/\d{8}-\d{6}(-\d+)?", relative.replace(os.sep, "/"))

    make_model().fit(X, Y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[callback])
    events = [f for _, _, files in os.walk(logdir) for f in files if "tfevents" in f]
    assert events, "TensorBoard wrote no event file"


def test_tensorboard_hint_points_at_the_run_name():
    hint = tensorboard_hint("runs/mnist/20260101-120000")
    lines = hint.splitlines()
    assert lines[1:] == ["%load_ext tensorboard", "%tensorboard --logdir runs/mnist"]
    assert "runs/mnist/20260101-120000" in lines[0]
    assert tensorboard_hint("my runs/a/20260101-120000").endswith('--logdir "my runs/a"')


@pytest.mark.parametrize("name", ["", "../up", "a/b", " spaced"])
def test_tensorboard_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="one folder name"):
        tensorboard_callback(name, root=tmp_path)


# ----------------------------------------------------------------------------
# checked before anything trains; honest counts (issue 15)


class Perturb(keras.callbacks.Callback):
    """Knocks the weights far off at the start of one epoch, so a later epoch is worse."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([w + 3.0 for w in self.model.get_weights()])


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_checkpoint_without_validation_keeps_the_best_training_loss_and_says_so(
    tmp_path, capsys
):
    import kernelkit

    path = tmp_path / "best.weights.h5"
    model = make_model()
    seen = Recorder()
    kernelkit.fit(
        model, X, Y, batch_size=BATCH, epochs=4, shuffle=False, checkpoint=str(path),
        callbacks=[Perturb(epoch=2), seen],
    )  # fmt: skip
    out = capsys.readouterr().out
    assert (
        f"kernelkit {model.name}: no validation data, so the checkpoint {path} keeps the epoch "
        "with the lowest training loss; pass validation_data or validation_split to keep the "
        "lowest val_loss instead"
    ) in out.splitlines()
    losses = {e: logs["loss"] for e, logs in seen.logs.items()}
    best = min(losses, key=losses.get)
    assert best < 3, losses  # the perturbed epochs are worse: the best is not the last one
    restored = make_model(seed=3, compile=False)
    restored.load_weights(path)
    for a, b in zip(snapshot(restored), seen.at_end[best], strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_with_validation_says_nothing_extra(tmp_path, capsys):
    import kernelkit

    kernelkit.fit(
        make_model(), X, Y, batch_size=BATCH, epochs=2, validation_split=0.25,
        checkpoint=str(tmp_path / "best.weights.h5"),
    )  # fmt: skip
    assert "no validation data" not in capsys.readouterr().out
    assert (tmp_path / "best.weights.h5").is_file()


def test_checkpoint_naming_a_folder_is_one_line(tmp_path):
    (tmp_path / "best.keras").mkdir()
    with pytest.raises(ValueError) as excinfo:
        checkpoint_callback(tmp_path / "best.keras")
    assert str(excinfo.value) == (
        f"The checkpoint path '{tmp_path}/best.keras' is an existing folder, and Keras saves "
        f"the best epoch to a file: name a file, e.g. '{tmp_path}/best.keras/best.keras'."
    )


def test_check_resume_says_where_a_run_continues(tmp_path):
    # A first run: the folder is made, and there is nothing to resume.
    assert checkpoints.check_resume(tmp_path / "new") is None
    fit(make_model(), tmp_path / "run", 4, StopAt(epoch=1, batch=3))
    state = checkpoints.check_resume(tmp_path / "run", make_model(seed=7))
    assert state.epoch == 2 and str(state) == "resumed at epoch 3"


def test_a_backup_of_another_architecture_is_refused_before_anything_trains(tmp_path):
    import kernelkit

    fit(make_model(), tmp_path, 4, StopAt(epoch=0, batch=3))
    files = {p.name: p.read_bytes() for p in (tmp_path / "backup").iterdir()}
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(1)])
    other.compile("sgd", "mse")
    before = snapshot(other)
    from kernelkit.session import FitRefused  # kernelkit.session is an attribute once imported

    with pytest.raises(FitRefused) as excinfo:
        kernelkit.fit(other, X, Y, batch_size=BATCH, epochs=4, resume=str(tmp_path))
    assert re.fullmatch(
        re.escape(f"The resume backup in '{tmp_path}' is of another architecture (layer '")
        + r"dense(_\d+)?"
        + re.escape(
            "' holds [(4, 8), (8,)] there and [(4, 5), (5,)] in this model), so nothing was "
            "restored or trained: use another resume folder, or start this one over with "
            f"kernelkit.checkpoints.clear_resume('{tmp_path}')."
        ),
        str(excinfo.value),
    ), str(excinfo.value)
    assert int(keras.ops.convert_to_numpy(other.optimizer.iterations)) == 0
    for a, b in zip(snapshot(other), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert {p.name: p.read_bytes() for p in (tmp_path / "backup").iterdir()} == files


def test_an_unbuilt_model_is_checked_before_the_restore(tmp_path):
    import kernelkit

    fit(make_model(), tmp_path, 4, StopAt(epoch=0, batch=3))

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(5)
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.hidden(x))

    net = Net()
    net.compile("sgd", "mse")
    assert not net.built
    from kernelkit.session import FitRefused  # kernelkit.session is an attribute once imported

    with pytest.raises(FitRefused) as excinfo:
        kernelkit.fit(net, X, Y, batch_size=BATCH, epochs=4, resume=str(tmp_path), verbose=0)
    message = str(excinfo.value)
    assert "\n" not in message, message
    if keras.backend.backend() == "tensorflow":
        # Keras's TensorFlow trainer builds a subclassed model only at its first step.
        assert message == (  # Keras numbers repeated names (net_1) in one session
            f"Resuming restores the backup before the first step, and model '{net.name}' is not "
            "built yet: build it first (call it on a batch, e.g. model(x[:1]), or start it with "
            "keras.Input)."
        )
    else:  # the JAX trainer builds it before the restore: the shapes are compared then
        assert "is of another architecture (" in message, message
        assert message.endswith(f"kernelkit.checkpoints.clear_resume('{tmp_path}')."), message
    assert int(keras.ops.convert_to_numpy(net.optimizer.iterations)) == 0


def test_a_resumed_run_counts_the_whole_run_and_this_part(tmp_path, capsys):
    import kernelkit

    first = make_model()
    kernelkit.fit(first, X, Y, batch_size=BATCH, epochs=6, shuffle=False, resume=str(tmp_path),
                  callbacks=[StopAt(epoch=1, batch=3)])  # stopped at the end of epoch 2
    assert re.fullmatch(
        rf"kernelkit {first.name}: a callback set model.stop_training \(StopAt\) \(2 epochs\) - "
        r"loss \S+",
        last_line(capsys),
    )
    second = make_model(seed=9)  # a fresh kernel's model
    kernelkit.fit(second, X, Y, batch_size=BATCH, epochs=6, shuffle=False, resume=str(tmp_path))
    assert re.fullmatch(
        rf"kernelkit {second.name}: finished \(6 epochs, 4 in this run\) - loss \S+",
        last_line(capsys),
    )


def test_a_resumed_run_cut_short_counts_complete_epochs_only(tmp_path, capsys):
    import kernelkit

    kernelkit.fit(make_model(), X, Y, batch_size=BATCH, epochs=6, shuffle=False,
                  resume=str(tmp_path), callbacks=[StopAt(epoch=1, batch=3)])
    capsys.readouterr()
    model = make_model(seed=9)
    live = kernelkit.LiveProgress()

    class StopAtStep(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 3 and batch == 1:
                live.request_stop("user")  # as the Stop button does

    kernelkit.fit(model, X, Y, batch_size=BATCH, epochs=6, shuffle=False, resume=str(tmp_path),
                  callbacks=[live, StopAtStep()])
    assert re.fullmatch(
        rf"kernelkit {model.name}: stopped by user at epoch 4, step 2 of 4 "
        r"\(3 epochs complete, 1 in this run\) - loss \S+",
        last_line(capsys),
    )


def test_a_latest_backup_that_opens_but_fails_to_read_falls_back_too(tmp_path):
    with pytest.raises(RuntimeError):
        fit(make_model(), tmp_path, 5, Crash(epoch=3))  # backups of epochs 2 (.bkp) and 3
    latest = tmp_path / "backup" / "latest.weights.h5"
    with h5py.File(latest, "r+") as f:  # the header is fine; one dataset's data is not
        name = next(n for n in _datasets(f))
        offset = f[name].id.get_offset()
    data = bytearray(latest.read_bytes())
    data[offset:] = b"\xff" * (len(data) - offset)  # clobbers the stored values from there on
    latest.write_bytes(bytes(data))
    state = checkpoints.check_resume(tmp_path, make_model(seed=4))
    assert state.epoch == 2  # what is restored: the previous backup, as Keras would
    seen = Recorder()
    fit(make_model(), tmp_path, 5, seen)
    assert seen.epochs == [2, 3, 4]


def _datasets(group):
    found = []
    group.visititems(lambda n, item: found.append(n) if isinstance(item, h5py.Dataset) else None)
    return found
