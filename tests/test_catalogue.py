"""A catalogue of bad inputs and faults (issue 15): one clear line, and nothing lost.

The rows live in ``tests/_catalogue_cases.py``. Each runs in IPython's real
shell (the ``ip`` fixture) against one world of tiny models built once for
this module; before and after each row, every model of the world is
snapshotted (weights hash, trainable flags, optimizer iterations, history,
registry entry) and the two must be equal. The few rows that need a real
kernel (interrupts, kernel death, the notebook's final line) run in order
in one kernel at the end of this file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _catalogue_cases import CASES, Case, Raises, Says, Usage, snapshot
from IPython.core.error import UsageError

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


# --- the shared world ----------------------------------------------------------------------


class World:
    """Tiny models, files and data shared by every row (rows must leave them as they were)."""

    def __init__(self, ip: Any, tmp: Path) -> None:
        import keras

        import kernelkit
        from kernelkit import checkpoints

        self.ip = ip
        self.tmp = str(tmp)
        self.mp: pytest.MonkeyPatch | None = None
        self.cleanups: list[Any] = []
        rng = np.random.default_rng(0)
        # 64 samples in batches of 8: they split over the 8 devices of the JAX leg.
        self.x = rng.normal(size=(64, 4)).astype("float32")
        self.y = (self.x @ np.array([[1.0], [-2.0], [0.5], [3.0]])).astype("float32")
        self.seq_x = rng.normal(size=(64, 5, 3)).astype("float32")
        self.seq_y = self.seq_x.sum(axis=(1, 2))[:, None].astype("float32")
        ip.user_ns.update(
            keras=keras, np=np, kernelkit=kernelkit, _cat_ran=[],
            cat_x=self.x, cat_y=self.y, cat_seq_x=self.seq_x, cat_seq_y=self.seq_y,
        )
        ip.run_cell_raising(
            "%%kmodel cat_clf --no-card\n"
            "cat_clf = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name='d1'),\n"
            "    keras.layers.Dense(1, name='d2')], name='cat_clf')\n"
            "cat_clf.compile('adam', 'mse')\n"
            "_ = cat_clf.fit(cat_x, cat_y, epochs=1, batch_size=8, verbose=0)\n"
        )
        self.clf = ip.user_ns["cat_clf"]

        keras.utils.set_random_seed(0)
        self.plain = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, name="p1"), keras.layers.Dense(1, name="p2")],
            name="plain",
        )
        self.plain.compile("adam", "mse")
        self.plain.fit(self.x, self.y, epochs=1, batch_size=8, verbose=0)
        base = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, name="b1"), keras.layers.Dense(3, name="b2")],
            name="base",
        )
        inputs = keras.Input((4,))
        self.nested = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs)),
                                  name="nested")
        self.nested.compile("sgd", "mse")
        self.uncompiled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="u1")],
                                           name="uncompiled")
        self.unbuilt = keras.Sequential([keras.layers.Dense(1)], name="unbuilt")
        self.stateful = keras.Sequential(
            [keras.Input(batch_shape=(8, 5, 3)), keras.layers.LSTM(4, stateful=True, name="lstm"),
             keras.layers.Dense(1, name="out")],
            name="stateful",
        )
        self.stateful.compile("sgd", "mse")
        # Keras builds a stateful RNN only for a fixed batch: this one is never built.
        self.stateful_unbatched = keras.Sequential(
            [keras.layers.LSTM(4, stateful=True, name="lstm")], name="stateful_unbatched"
        )
        self.stateful_unbatched.compile("sgd", "mse")
        self.rnn = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm")],
                                    name="rnn")
        self.layer = keras.layers.Dense(2, name="stray")
        self.queue_source = self._queue_model()
        self.models = {
            "cat_clf": self.clf, "plain": self.plain, "nested": self.nested,
            "uncompiled": self.uncompiled, "unbuilt": self.unbuilt, "stateful": self.stateful,
            "stateful_unbatched": self.stateful_unbatched, "rnn": self.rnn,
        }

        self.yaml = kernelkit.to_yaml(self.plain)
        import yaml

        self.layer_yaml = yaml.safe_dump(keras.saving.serialize_keras_object(
            keras.layers.Dense(2)))
        self.lambda_yaml = kernelkit.to_yaml(keras.Sequential(
            [keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2)]))
        self.files = self._files(keras)

        # Resume folders: one with damaged metadata, one holding another model's backup.
        damaged = os.path.join(self.tmp, "damaged", checkpoints.BACKUP_DIR)
        os.makedirs(damaged)
        self.clf.save_weights(os.path.join(damaged, checkpoints._WEIGHTS))
        Path(damaged, checkpoints._METADATA).write_text("{not json")
        other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        other.compile("sgd", "mse")

        class Crash(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if epoch == 1:
                    raise RuntimeError("the run dies after epoch 2")

        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(RuntimeError):
            kernelkit.fit(other, self.x, self.y, epochs=4, batch_size=8, verbose=0,
                          resume=os.path.join(self.tmp, "other_arch"), callbacks=[Crash()])
        assert os.path.isdir(os.path.join(self.tmp, "other_arch", checkpoints.BACKUP_DIR))

    def _queue_model(self) -> Any:
        import keras

        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(4, name="q1"), keras.layers.Dense(1, name="q2")]
        )
        model.compile("adam", "mse")
        return model

    def _files(self, keras: Any) -> dict[str, str]:
        t = self.tmp
        files = {"missing": os.path.join(t, "missing.weights.h5"),
                 "folder": os.path.join(t, "folder")}
        os.makedirs(files["folder"])
        os.makedirs(os.path.join(t, "folder.weights.h5"))
        Path(t, "a_file").write_text("not a folder")
        files["good"] = os.path.join(t, "good.weights.h5")
        self.clf.save_weights(files["good"])
        files["text"] = os.path.join(t, "notes.weights.h5")
        Path(files["text"]).write_text("these are not weights\n")
        files["json"] = os.path.join(t, "model.weights.json")
        Path(files["json"]).write_text("{}")
        data = Path(files["good"]).read_bytes()
        files["truncated"] = os.path.join(t, "truncated.weights.h5")
        Path(files["truncated"]).write_bytes(data[: len(data) // 2])
        archive = os.path.join(t, "whole.keras")
        self.clf.save(archive)
        whole = Path(archive).read_bytes()
        files["truncated_keras"] = os.path.join(t, "truncated.keras")
        Path(files["truncated_keras"]).write_bytes(whole[: len(whole) // 2])
        files["zip"] = os.path.join(t, "other.keras")
        with zipfile.ZipFile(files["zip"], "w") as z:
            z.writestr("config.json", "{}")
        import h5py

        files["empty_h5"] = os.path.join(t, "empty.weights.h5")
        with h5py.File(files["empty_h5"], "w") as f:
            f.attrs["note"] = "no weights here"
        other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        files["other"] = os.path.join(t, "other.weights.h5")
        other.save_weights(files["other"])
        short = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        files["short"] = os.path.join(t, "short.weights.h5")
        short.save_weights(files["short"])
        files["queue"] = os.path.join(t, "queue.weights.h5")
        self.queue_source.save_weights(files["queue"])
        return files

    # --- helpers the rows call ---------------------------------------------------------

    def keep(self) -> None:
        """Remembers the registry and NAME bindings that every row must leave alone."""
        from kernelkit import session

        self.kept = dict(session.registry._REGISTRY)

    def repair(self) -> None:
        """Puts back what a failing row changed, so that later rows see the same world."""
        from kernelkit import session

        for name in list(session.registry._REGISTRY):
            if name not in self.kept:
                session.unregister(name)
        for name, entry in self.kept.items():
            if session.registry._REGISTRY.get(name) is not entry:
                now = session.registry._REGISTRY.get(name)
                if now is not None:
                    session.registry._unpatch(now.model)
                session.registry._REGISTRY[name] = entry
                session.registry._patch(entry)
        self.ip.user_ns["cat_clf"] = self.clf

    def snapshots(self) -> dict[str, Any]:
        from kernelkit import session

        shots: dict[str, Any] = {k: snapshot(m, self.ip.user_ns) for k, m in self.models.items()}
        shots["registry"] = tuple((n, id(e.model)) for n, e in session.registry._REGISTRY.items())
        return shots

    def flaky(self, value: float, bad_epoch: int) -> tuple[Any, Any, Any]:
        """A trained BatchNormalization model, data whose batch 3 of ``bad_epoch`` turns
        ``value``, and a callback that keeps each finite epoch's snapshot."""
        import keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        model.fit(self.x, self.y, epochs=1, batch_size=8, verbose=0)  # built optimizer state
        x, y = self.x, self.y

        class Flaky(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__()
                self.epoch = -1  # set by Marks: the data adapter peeks before the fit

            def __len__(self) -> int:
                return 8

            def __getitem__(self, i: int) -> tuple[Any, Any]:
                yb = y[i * 8 : (i + 1) * 8].copy()
                if self.epoch == bad_epoch and i == 2:
                    yb[:] = value
                return x[i * 8 : (i + 1) * 8], yb

        data = Flaky()

        class Marks(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.at_epoch_end: dict[int, Any] = {}

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                data.epoch = epoch

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.at_epoch_end[epoch] = snapshot(self.model)

        return model, data, Marks()

    def fresh_for_queue(self, stateful: bool) -> tuple[Any, Any, Any, dict[str, Any]]:
        import keras

        if not stateful:
            return self._queue_model(), self.x, self.y, {"batch_size": 8, "verbose": 0}
        model = keras.Sequential(
            [keras.Input(batch_shape=(8, 5, 3)), keras.layers.LSTM(4, stateful=True, name="q1"),
             keras.layers.Dense(1, name="q2")]
        )
        model.compile("sgd", "mse")
        kwargs = {"batch_size": 8, "shuffle": False, "verbose": 0}
        return model, self.seq_x, self.seq_y, kwargs

    def same_as_queue_file(self, model: Any) -> None:
        for mine, theirs in zip(
            model.get_weights(), self.queue_source.get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)

    def block_runs_folder(self) -> None:
        """The TensorBoard root ``runs`` cannot be made: a file has that name."""
        here = Path(self.tmp, "blocked")
        here.mkdir(exist_ok=True)
        (here / "runs").write_text("a file, not a folder")
        assert self.mp is not None
        self.mp.chdir(here)

    def hide(self, package: str) -> None:
        """As if ``package`` (JAX for the workers, tensorboard) were not installed."""
        real = importlib.util.find_spec

        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            return None if name.split(".")[0] == package else real(name, *args, **kwargs)

        assert self.mp is not None
        self.mp.setattr(importlib.util, "find_spec", find_spec)

    def set_user_distribution(self) -> None:
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel())
        self.cleanups.append(lambda: keras.distribution.set_distribution(None))


@pytest.fixture(scope="module")
def world(ip: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    made = World(ip, tmp_path_factory.mktemp("catalogue"))
    made.keep()
    yield made
    from kernelkit import session

    session.unregister("cat_clf")
    for name in ("cat_clf", "cat_new", "_cat_ran", "cat_x", "cat_y", "cat_seq_x", "cat_seq_y"):
        ip.user_ns.pop(name, None)


# --- running a row -------------------------------------------------------------------------


def _has(text: str, word: Any) -> bool:
    return any(w in text for w in word) if isinstance(word, tuple) else word in text


def _check_words(text: str, words: tuple[Any, ...], absent: tuple[str, ...]) -> None:
    missing = [w for w in words if not _has(text, w)]
    assert not missing, f"{missing} not in {text!r}"
    present = [a for a in absent if a in text]
    assert not present, f"{present} should not be in {text!r}"


def _message(err: BaseException) -> str:
    # KeyError's str() adds quotes; its one argument is what the user reads.
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _run_usage(w: World, case: Case, expect: Usage) -> None:
    code = case.action(w)
    ran: list[int] = w.ip.user_ns["_cat_ran"]
    ran.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = w.ip.run_cell(code)  # the plain run_cell: IPython shows the error itself
    error = result.error_in_exec
    assert type(error) is UsageError, f"{type(error).__name__}: {error}\n{out.getvalue()}"
    message = str(error)
    assert "\n" not in message, message
    # What IPython showed: exactly the one line (the user's own traceback may stand above).
    assert err.getvalue().splitlines() == [f"UsageError: {message}"], err.getvalue()
    if expect.traceback_above:
        assert "Traceback" in out.getvalue() or "Error" in out.getvalue(), out.getvalue()
    else:
        assert out.getvalue() == "", out.getvalue()
    if not expect.cell_runs:
        assert ran == [], "the cell ran although its options were refused"
    _show(case, message)
    _check_words(message, expect.words, expect.absent)


def _show(case: Case, text: str) -> None:
    # CATALOGUE_SHOW=1 prints every row's line: the catalogue as a user reads it.
    if os.environ.get("CATALOGUE_SHOW"):
        print(f"\n[{case.id}] {text.strip()}", file=sys.__stderr__)


def _run_raises(w: World, case: Case, expect: Raises) -> None:
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(expect.error) as caught:
        case.action(w)
    message = _message(caught.value)
    _show(case, f"{type(caught.value).__name__}: {message}")
    assert "\n" not in message.strip(), message
    _check_words(message, expect.words, expect.absent)


def _run_says(w: World, case: Case, expect: Says) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        case.action(w)
    _show(case, out.getvalue())
    _check_words(out.getvalue(), expect.words, expect.absent)


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = []
        if case.legs == ("tensorflow",):
            marks.append(pytest.mark.tensorflow)
        if case.legs == ("jax",):
            marks.append(pytest.mark.jax_devices)  # the row itself skips outside the JAX leg
        if case.bug and BACKEND in case.bug_legs:
            marks.append(pytest.mark.xfail(strict=case.bug_strict, reason=f"bug: {case.bug}"))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_catalogue(world: World, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    if BACKEND not in case.legs:
        pytest.skip(f"applies to the {', '.join(case.legs)} leg only")
    w = world
    w.mp = monkeypatch
    try:
        if case.prepare is not None:
            case.prepare(w)
        before = w.snapshots()
        if isinstance(case.expect, Usage):
            _run_usage(w, case, case.expect)
        elif isinstance(case.expect, Raises):
            _run_raises(w, case, case.expect)
        else:
            _run_says(w, case, case.expect)
        after = w.snapshots()
    finally:
        for undo in reversed(w.cleanups):
            undo()
        w.cleanups.clear()
        w.ip.user_ns.pop("cat_new", None)
        w.mp = None
        w.repair()
    lost = {k: (before[k], after[k]) for k in before if before[k] != after.get(k)}
    assert not lost, f"{case.id} changed what it must leave alone: {lost}"


def test_the_snapshot_sees_every_kind_of_loss(world: World) -> None:
    """The "nothing lost" check can fail: each kind of change shows in the snapshot."""
    import keras

    import kernelkit

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="s1"),
                              keras.layers.BatchNormalization(name="bn")], name="snap")
    model.compile("adam", "mse")
    model.fit(world.x, np.zeros((64, 2), "float32"), batch_size=8, verbose=0)
    seen = [snapshot(model, world.ip.user_ns)]

    def changed(field: str) -> None:
        seen.append(snapshot(model, world.ip.user_ns))
        a, b = seen[-2], seen[-1]
        differs = [f for f in a.__dataclass_fields__ if getattr(a, f) != getattr(b, f)]
        assert differs == [field], (field, differs)

    bn = model.get_layer("bn")
    bn.moving_mean.assign(bn.moving_mean + 1.0)  # a non-trainable statistic
    changed("weights")
    model.optimizer.variables[-1].assign(model.optimizer.variables[-1] + 1.0)  # a slot
    changed("optimizer")
    model.optimizer.iterations.assign(model.optimizer.iterations + 1)
    changed("iterations")
    model.get_layer("s1").trainable = False
    changed("flags")
    kernelkit.fit(model, world.x, np.zeros((64, 2), "float32"), batch_size=8, verbose=0,
                  callbacks=[kernelkit.LiveProgress(display="none")])
    seen.append(snapshot(model, world.ip.user_ns))  # a fit changes everything; start over
    model.history.history["loss"].append(0.0)
    changed("history")
    kernelkit.register("cat_snap", model)
    try:
        changed("registry")
    finally:
        kernelkit.unregister("cat_snap")


def test_the_catalogue_is_big_enough() -> None:
    assert len(CASES) + len(KERNEL_CASES) >= 120
    assert {type(c.expect) for c in CASES} == {Usage, Raises, Says}


def test_every_public_function_has_a_wrong_model_row() -> None:
    import kernelkit

    takes_model = {
        "fit", "register", "card", "freeze", "unfreeze", "set_trainable", "recompile",
        "freeze_to", "layer_lrs", "lr_find", "extract", "reset_states", "state_summary",
        "load_weights", "to_yaml", "FeatureView",
    }
    ids = {c.id for c in CASES}
    assert takes_model <= set(kernelkit.__all__)
    assert {f"{fn}-model-is-int" for fn in takes_model} <= ids


# --- the rows that need a real kernel ------------------------------------------------------

KSETUP = """
%load_ext kernelkit
import hashlib, threading, time
import numpy as np, keras, kernelkit
rng = np.random.default_rng(0)
x = rng.normal(size=(320, 4)).astype("float32")
y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
HOLD_AT = {hold}  # (1-based epoch, step) whose step waits for a stop or a kill; None: never

def digest(m):
    h = hashlib.sha256()
    for v in [*m.weights, *m.optimizer.variables]:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()[:16]

class Hold(keras.callbacks.Callback):
    '''Keeps each step's digest; holds at HOLD_AT until a stop (or, with `twice`, an abort).'''
    def __init__(self, twice=False):
        super().__init__(); self.twice = twice; self.last = None
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_epoch_end(self, epoch, logs=None):
        print(f"end of epoch {{epoch + 1}}", flush=True)
    def on_train_batch_end(self, batch, logs=None):
        self.last = (digest(self.model), int(self.model.optimizer.iterations))
    def on_train_batch_begin(self, batch, logs=None):
        if HOLD_AT is None or (self.epoch + 1, batch + 1) != tuple(HOLD_AT):
            return
        print("holding", flush=True)
        gate, deadline = threading.Event(), time.monotonic() + 120
        while not self.model.stop_training and time.monotonic() < deadline:
            gate.wait(0.02)
        print("stop seen", flush=True)
        while self.twice and time.monotonic() < deadline:
            gate.wait(0.02)  # only a second interrupt ends this
"""

RESUME_CELL = """%%kmodel reg --resume {directory} --seed 0 --no-card
reg = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="reg")
reg.compile(keras.optimizers.SGD(learning_rate=0.05), "mse")
hold = Hold()
h = reg.fit(x, y, epochs=6, batch_size=32, callbacks=[hold])
"""


def _final(messages: list[dict]) -> str:
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    return updates[-1]["content"]["data"]["text/plain"] if updates else ""


def _prints(text: str) -> Any:
    return lambda m: m["msg_type"] == "stream" and text in m["content"]["text"]


def _ask(kernel: Any, expression: str) -> Any:
    reply, out = kernel.execute(f"import json as _j; print(_j.dumps({expression}))")
    assert reply["status"] == "ok", kernel.text(out)
    return json.loads(kernel.text(out).strip().splitlines()[-1])


def _k_death_then_resume(k: Any, state: dict[str, Any]) -> None:
    """A kernel SIGKILLed in epoch 3 of a --resume cell; the same cell in a new kernel resumes."""
    from jupyter_client.manager import start_new_kernel

    directory = state["directory"]
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ), startup_timeout=120)
    doomed = type(k)(km, kc)
    try:
        reply, out = doomed.execute(KSETUP.format(hold=(3, 2)))
        assert reply["status"] == "ok", doomed.text(out)
        msg_id = kc.execute(RESUME_CELL.format(directory=directory))
        doomed.wait_for(msg_id, _prints("holding"))
        os.kill(km.provisioner.pid, signal.SIGKILL)
        assert km.provisioner.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    reply, out = k.execute(RESUME_CELL.format(directory=directory), timeout=180)
    assert reply["status"] == "ok", k.text(out)
    state["resumed"] = _final(out)
    html = [m for m in out if m["msg_type"] == "update_display_data"][-1]["content"]["data"]
    assert "resumed at epoch 3" in html["text/html"], state["resumed"]
    # Nothing lost: epochs 1-2 came from the backup; the whole run counts 6 x 10 steps.
    assert _ask(k, "[len(h.history['loss']), int(reg.optimizer.iterations)]") == [4, 60]
    assert _ask(k, "kernelkit.session.entry_for(reg).name") == "reg"


def _k_counts_whole_run(k: Any, state: dict[str, Any]) -> None:
    """The resumed run's final line counts the whole run and the part run in this kernel."""
    assert "6 epochs, 4 in this run" in state["resumed"], state["resumed"]


def _k_interrupt(k: Any, state: dict[str, Any]) -> None:
    """One interrupt: the fit stops after the current step; the model keeps that step."""
    reply, out = k.execute("HOLD_AT = (2, 2)")
    assert reply["status"] == "ok"
    reply, out = k.execute(
        "%%kmodel reg2 --no-card\n"
        "reg2 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name='reg2')\n"
        "reg2.compile('sgd', 'mse')\n"
    )
    assert reply["status"] == "ok", k.text(out)
    msg_id = k.kc.execute("hold = Hold(); h2 = reg2.fit(x, y, epochs=5, batch_size=32, "
                          "callbacks=[hold])")
    seen = k.wait_for(msg_id, _prints("holding"))
    k.km.interrupt_kernel()
    reply, rest = k.collect(msg_id)
    assert reply["status"] == "ok", k.text(seen + rest)  # no traceback
    final = _final(seen + rest)
    assert final.startswith("kernelkit reg2: stopped by user at epoch 2, step 2"), final
    # Nothing lost: the weights and optimizer are those of the last step that ran.
    assert _ask(k, "[digest(reg2), int(reg2.optimizer.iterations)] == list(hold.last)") is True
    assert _ask(k, "int(reg2.optimizer.iterations)") == 12
    # Keras closes the cut-short epoch 2 too: two History entries.
    assert _ask(k, "[kernelkit.session.entry_for(reg2).runs, len(h2.history['loss'])]") == [1, 2]


def _k_second_interrupt(k: Any, state: dict[str, Any]) -> None:
    """A second interrupt aborts at once; the model stays usable and registered."""
    msg_id = k.kc.execute("hold = Hold(twice=True); reg2.fit(x, y, epochs=5, batch_size=32, "
                          "callbacks=[hold])")
    seen = k.wait_for(msg_id, _prints("holding"))
    k.km.interrupt_kernel()
    seen += k.wait_for(msg_id, _prints("stop seen"))
    k.km.interrupt_kernel()
    reply, rest = k.collect(msg_id)
    messages = seen + rest
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert "aborted by a second interrupt at epoch 2, step" in _final(messages), _final(messages)
    assert _ask(k, "[digest(reg2), int(reg2.optimizer.iterations)] == list(hold.last)") is True
    reply, out = k.execute("HOLD_AT = None; reg2.fit(x, y, epochs=1, batch_size=32)")
    assert reply["status"] == "ok", k.text(out)
    assert "kernelkit reg2: finished (1 epoch)" in _final(out)
    assert _ask(k, "kernelkit.session.entry_for(reg2).runs") == 3


def _k_nan_final_line(k: Any, state: dict[str, Any]) -> None:
    """In a notebook, the saved final line names NaN and says the weights were restored."""
    reply, out = k.execute(
        "bad = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
        "bad.compile('sgd', 'mse'); bad.fit(x, y, epochs=1, verbose=0)\n"
        "w0 = digest(bad); yn = y.copy(); yn[40] = np.nan\n"
        "kernelkit.fit(bad, x, yn, epochs=2, batch_size=32, shuffle=False)\n"
        "print(digest(bad) == w0)"
    )
    assert reply["status"] == "ok", k.text(out)
    final = _final(out)
    assert re.search(r"loss became NaN at epoch 1, step \d+ of 10; weights restored to the start "
                     r"of the fit", final), final
    assert k.text([m for m in out if m["msg_type"] == "stream"]).strip().endswith("True")


KERNEL_CASES = [
    ("kernel-death-then-resume", _k_death_then_resume, ""),
    ("kernel-resumed-run-counts-whole-run", _k_counts_whole_run,
     "a resumed run's final line counts the whole run (issue 15, item 7)"),
    ("kernel-interrupt-mid-fit", _k_interrupt, ""),
    ("kernel-second-interrupt-aborts", _k_second_interrupt, ""),
    ("kernel-nan-final-line", _k_nan_final_line, ""),
]


@pytest.fixture(scope="module")
def real_kernel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real kernel for the kernel rows, which run in order (each builds on the last)."""
    from _kernel import Kernel
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ)
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    kernel = Kernel(km, kc)
    try:
        reply, out = kernel.execute(KSETUP.format(hold=None))
        assert reply["status"] == "ok", kernel.text(out)
        yield kernel, {"directory": str(tmp_path_factory.mktemp("resume") / "run")}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.kernel
@pytest.mark.parametrize("row", KERNEL_CASES, ids=[r[0] for r in KERNEL_CASES])
def test_catalogue_in_a_real_kernel(real_kernel: Any, row: Any) -> None:
    kernel, state = real_kernel
    _, run, _pending = row
    run(kernel, state)
