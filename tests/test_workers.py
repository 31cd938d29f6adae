"""Data-parallel fits in real worker processes (Keras 3 + JAX on 127.0.0.1).

Every run here starts two real worker processes; they are small (a Dense
model, a few hundred samples) and bounded in time, and each test checks that
no worker is left running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest

from kernelkit import events as ev
from kernelkit.workers import (
    _EXIT_GRACE,
    _JOIN_TIMEOUT,
    WorkerError,
    WorkerTimeout,
    _cleanup,
    _Rank,
    _Run,
    _Supervisor,
    fit_on_workers,
    free_port,
    shard_indices,
)

ROOT = Path(__file__).resolve().parents[1]


def data(samples=130, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1))).astype("float32")
    return x, y


def make_model(extra=None, features=6):
    keras.utils.set_random_seed(3)
    layers = [keras.Input((features,)), keras.layers.Dense(8, activation="relu")]
    layers += [extra] if extra is not None else []
    layers += [keras.layers.Dense(1)]
    model = keras.Sequential(layers, name="reg")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def worker_processes():
    """Worker processes started by this test process (directly or below)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "kernelkit._worker_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def digest(weights):
    from kernelkit._worker_main import weights_digest

    return weights_digest(weights)


FAULTS = '''
import time

import keras


@keras.saving.register_keras_serializable(package="kk_faults")
class FaultOnRank(keras.layers.Layer):
    """Raises or hangs in one worker rank only (identity everywhere else)."""

    def __init__(self, rank=1, mode="raise", **kwargs):
        super().__init__(**kwargs)
        self.rank, self.mode = rank, mode

    def call(self, x):
        if keras.backend.backend() == "jax":
            import jax

            if jax.process_index() == self.rank:
                if self.mode == "raise":
                    raise ValueError(f"boom from rank {self.rank}")
                time.sleep(3600)
        return x

    def get_config(self):
        return {**super().get_config(), "rank": self.rank, "mode": self.mode}
'''


@pytest.fixture
def faults(tmp_path, monkeypatch):
    """An importable module with a layer that fails in one rank."""
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "kk_faults_mod.py").write_text(FAULTS)
    monkeypatch.syspath_prepend(str(folder))  # the workers inherit the notebook's sys.path
    import importlib

    return importlib.import_module("kk_faults_mod")


# --------------------------------------------------------------------------- pure parts


def test_shards_are_equal_and_replay_every_global_batch():
    samples, batch, workers = 70, 16, 2
    rows = [shard_indices(samples, batch, workers, r) for r in range(workers)]
    assert len(rows[0]) == len(rows[1]) == 35
    # Step b of every rank together is exactly global batch b (the last one partial).
    for b, start in enumerate(range(0, samples, batch)):
        local = batch // workers if start + batch <= samples else (samples - start) // workers
        together = np.concatenate([r[b * (batch // workers) :][:local] for r in rows])
        np.testing.assert_array_equal(
            np.sort(together), np.arange(start, min(start + batch, samples))
        )
    with pytest.raises(ValueError, match="multiples of workers"):
        shard_indices(71, 16, 2, 0)


def test_free_port_can_be_bound_right_away():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("", port))  # would raise if the port were taken


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, r"workers=0 is not allowed"),
        (
            {"workers": 4, "batch_size": 30},
            ValueError,
            r"batch_size=30 does not split evenly over 4",
        ),
        (
            {"workers": 2, "x": np.zeros((1, 6), "float32"), "y": np.zeros((1, 1), "float32")},
            ValueError,
            r"1 training samples cannot be shared by 2 workers",
        ),
        (
            {"workers": 2, "callbacks": [keras.callbacks.EarlyStopping()]},
            ValueError,
            r"EarlyStopping cannot run in workers",
        ),
        (
            {"workers": 2, "validation_freq": 1, "jit": True},
            TypeError,
            r"unsupported argument\(s\) jit",
        ),
        (
            {"workers": 2, "hosts": ["127.0.0.1"]},
            ValueError,
            r"hosts names 1 machines for 2 workers",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_starts_nothing(tmp_path, kwargs, error, match):
    model = make_model()
    before = model.get_weights()
    x, y = data()
    kwargs = {"x": x, "y": y, **kwargs}
    with pytest.raises(error, match=match) as info:
        fit_on_workers(model, job_dir=tmp_path / "job", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "job").exists()  # nothing written, nothing started
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.tensorflow  # a tf.data.Dataset
def test_a_dataset_is_refused_with_the_fix():
    import tensorflow as tf

    x, y = data()
    with pytest.raises(TypeError, match="pass NumPy arrays"):
        fit_on_workers(make_model(), tf.data.Dataset.from_tensor_slices((x, y)), workers=2)


def test_a_layer_defined_in_the_notebook_is_refused(tmp_path):
    class Local(keras.layers.Layer):
        def call(self, x):
            return x

    Local.__module__ = "__main__"  # as a class defined in a notebook cell
    x, y = data()
    with pytest.raises(ValueError, match="defined in the notebook, where workers cannot import"):
        fit_on_workers(make_model(Local()), x, y, workers=2, job_dir=tmp_path / "job")
    assert not worker_processes()


# --------------------------------------------------------------------------- the supervisor
# Its steps, driven one at a time, with the test playing rank 0 over a real local socket.
# Ranks that must be killed are real processes; ranks that have ended are stand-ins.


class Ended:
    """A rank's process as Popen shows it once it has exited with ``code``."""

    def __init__(self, code):
        self.returncode = code

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        return self.returncode


def running():
    """A live process in its own group, as the supervisor starts ranks."""
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


@pytest.fixture
def channel(tmp_path):
    """A run with its listener, and rank 0's end of the connection to it."""
    run = _Run(job_dir=tmp_path, owns_dir=False)
    run.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    run.listener.bind(("127.0.0.1", 0))
    run.listener.listen(1)
    run.listener.setblocking(False)
    rank0 = socket.create_connection(run.listener.getsockname(), timeout=30)
    yield run, rank0
    rank0.close()
    _cleanup(run)  # kills any rank a test left running
    assert not any(r.process.poll() is None for r in run.ranks if r.process is not None)


def supervisor(run, *, on_event=None, should_stop=None, timeout=None, stall_timeout=None):
    return _Supervisor(
        run,
        on_event=on_event,
        should_stop=should_stop,
        timeout=timeout,
        stall_timeout=stall_timeout,
    )


def line(**message):
    return (json.dumps(message) + "\n").encode()


def read_until(sup, done):
    """Runs the read step until ``done()`` (each read waits at most 0.1 s for data)."""
    for _ in range(300):
        sup.read_messages()
        if done():
            return
    raise AssertionError("rank 0's messages did not arrive")


def test_the_supervisor_relays_rank0s_events_in_order_across_reads(channel):
    run, rank0 = channel
    seen = []
    sup = supervisor(run, on_event=seen.append)
    sent = [
        ev.TrainBegin(epochs=1, steps=2, model_name="reg"),
        ev.Step(epoch=0, step=1, logs={"loss": 0.5}),
        ev.EpochEnd(epoch=0, logs={"loss": 0.25}, steps=2),
        ev.TrainEnd(state="finished"),
    ]
    rank0.sendall(line(phase="starting", pid=1) + line(phase="joined", devices=2))
    read_until(sup, lambda: sup.joined)
    assert run.conn is not None and not seen  # heartbeats and phases are progress, not events
    step = line(event=ev.to_dict(sent[1]))
    rank0.sendall(line(event=ev.to_dict(sent[0])) + step[:10])
    read_until(sup, lambda: seen and sup.buffer)  # a read that ends inside a message
    rank0.sendall(step[10:] + b"\n" + b"".join(line(event=ev.to_dict(e)) for e in sent[2:]))
    read_until(sup, lambda: len(seen) == 4)
    assert seen == sent
    assert run.events_seen == ["TrainBegin", "Step", "EpochEnd", "TrainEnd"]
    assert sup.began and sup.ended and sup.buffer == b""


def test_a_failing_on_event_is_reported_once_and_the_fit_goes_on(channel, capsys):
    run, _ = channel

    def broken(event):
        raise ValueError("no view")

    sup = supervisor(run, on_event=broken)
    sup.relay(ev.TrainBegin(epochs=1))
    sup.relay(ev.EpochBegin(epoch=0))
    assert capsys.readouterr().err == (
        "kernelkit: on_event failed and was skipped: ValueError('no view')\n"
    )
    assert run.events_seen == ["TrainBegin", "EpochBegin"]


@pytest.mark.parametrize("asked", ["before rank 0 connects", "while it trains"])
def test_a_stop_reaches_rank0_once(channel, asked):
    run, rank0 = channel
    wanted = [asked == "before rank 0 connects"]
    sup = supervisor(run, should_stop=lambda: wanted[0])
    sup.forward_stop()
    read_until(sup, lambda: run.conn is not None)  # accepts rank 0 (and sends a stop it owes)
    wanted[0] = True
    sup.forward_stop()
    sup.forward_stop()
    assert sup.stop_sent
    rank0.settimeout(10)
    assert rank0.recv(100) == b"stop\n"
    rank0.setblocking(False)  # sendall has returned, so a second stop would be here already
    with pytest.raises(BlockingIOError):
        rank0.recv(100)


@pytest.mark.parametrize(
    ("code", "error_file", "details"),
    [
        (1, "Traceback (most recent call last):\nValueError: boom\n", None),
        (-9, None, "the worker ended without a traceback (killed by signal 9); its last output:\n"),
    ],
    ids=["with a traceback", "killed"],
)
def test_a_failed_rank_is_named_every_rank_is_killed_and_the_fit_ends_failed(
    channel, code, error_file, details
):
    run, _ = channel
    run.ranks = [
        _Rank(0, "127.0.0.1", process=running()),
        _Rank(1, "127.0.0.1", process=Ended(code), log=run.job_dir / "rank1.log"),
    ]
    (run.job_dir / "rank1.log").write_text("last words\n")
    if error_file:
        (run.job_dir / "error_rank1.txt").write_text(error_file)
    seen = []
    sup = supervisor(run, on_event=seen.append)
    sup.relay(ev.TrainBegin(epochs=1))
    with pytest.raises(WorkerError) as info:
        sup.check_failed()
    expected = error_file.rstrip() if error_file else details + "last words"
    assert str(info.value) == (
        "worker 1 of 2 failed; every worker was stopped and the model is unchanged.\n"
        f"--- worker 1 ---\n{expected}"
    )
    assert info.value.rank == 1 and info.value.details == expected
    assert run.ranks[0].process.poll() is not None  # the healthy rank was killed too
    end = seen[-1]
    assert isinstance(end, ev.TrainEnd) and end.state == "failed"
    assert end.reason == str(info.value).splitlines()[0]


def test_the_run_is_over_once_every_rank_wrote_its_results(channel):
    run, _ = channel
    run.ranks = [_Rank(0, "127.0.0.1", process=Ended(0)), _Rank(1, "127.0.0.1", process=running())]
    sup = supervisor(run)
    assert not sup.finished()
    for rank in (0, 1):
        (run.job_dir / f"done_rank{rank}.json").write_text("{}")
    run.ranks[1].process.kill()
    run.ranks[1].process.wait()
    assert sup.finished()
    # A rank still alive after writing its results only shuts down: it gets _EXIT_GRACE.
    run.ranks[1].process = running()
    assert not sup.finished() and sup.done_at is not None
    sup.done_at -= _EXIT_GRACE + 1
    assert sup.finished()


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"timeout": 5, "start": -6}, "did not finish within timeout=5 s"),
        (
            {"stall_timeout": 8, "joined": True, "last_progress": -9},
            "made no progress for stall_timeout=8 s (a hung collective never raises)",
        ),
        ({"start": -_JOIN_TIMEOUT - 1}, "did not all join the job within 600 s"),
        ({"stall_timeout": 8, "last_progress": -9}, None),  # the stall bound starts once joined
    ],
    ids=["timeout", "stall_timeout", "joining", "no stall before joining"],
)
def test_each_time_bound_kills_every_rank_and_says_which_it_was(channel, state, reason):
    run, _ = channel
    run.ranks = [_Rank(0, "127.0.0.1", process=running())]  # no log: no stacks to ask for
    seen = []
    sup = supervisor(
        run,
        on_event=seen.append,
        timeout=state.get("timeout"),
        stall_timeout=state.get("stall_timeout"),
    )
    sup.relay(ev.TrainBegin(epochs=1))
    # The clock readings moved back instead of waiting for them to pass.
    sup.start += state.get("start", 0)
    sup.last_progress += state.get("last_progress", 0)
    sup.joined = state.get("joined", False)
    if reason is None:
        sup.check_time()
        assert run.ranks[0].process.poll() is None and len(seen) == 1
        return
    with pytest.raises(WorkerTimeout) as info:
        sup.check_time()
    assert str(info.value) == (
        f"the 1 workers {reason}; every worker was killed and the model is unchanged."
    )
    assert run.ranks[0].process.poll() is not None
    assert seen[-1].state == "failed" and seen[-1].reason == str(info.value)


def test_a_first_interrupt_stops_the_workers_and_a_second_kills_them(channel, capsys):
    run, rank0 = channel
    run.ranks = [_Rank(0, "127.0.0.1", process=running())]
    heard = []

    def rank_0():
        # Rank 0 begins, hears the stop, and sends the step it was in.
        rank0.sendall(line(event=ev.to_dict(ev.TrainBegin(epochs=1))))
        heard.append(rank0.recv(100))
        rank0.sendall(line(event=ev.to_dict(ev.Step(epoch=0, step=1))))

    def should_stop():
        raise KeyboardInterrupt  # the first Ctrl-C lands while the loop polls

    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, ev.Step):
            raise KeyboardInterrupt  # the second Ctrl-C

    thread = threading.Thread(target=rank_0)
    thread.start()
    # timeout: a backstop, so a broken loop fails the test instead of hanging it.
    sup = supervisor(run, on_event=on_event, should_stop=should_stop, timeout=60)
    with pytest.raises(KeyboardInterrupt):
        sup.wait()
    thread.join(timeout=30)
    assert heard == [b"stop\n"]
    assert [type(e).__name__ for e in seen] == ["TrainBegin", "Step", "TrainEnd"]
    assert seen[-1].state == "stopped_by_user"
    assert seen[-1].reason == "killed by a second interrupt"
    assert run.ranks[0].process.poll() is not None
    assert capsys.readouterr().err == (
        "kernelkit: stopping every worker after the current step (interrupt again to kill them)\n"
    )


# --------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_two_workers_match_a_single_process_run(tmp_path):
    # 131 samples: one is left out (with a warning) so both shards are equal.
    x, y = data(131)
    val = data(40, seed=1)
    reference = make_model()
    expected = reference.fit(
        x[:130], y[:130], batch_size=32, epochs=2, shuffle=False, validation_data=val, verbose=0
    )

    model = make_model()
    seen = []
    launched = []

    def launch(rank, host, command):
        # Stands in for ssh: rank 1 "lives" on another host that shares the job folder.
        assert host == "rank1.invalid" and command[:2] == ["env", "KERAS_BACKEND=jax"]
        # Another host has its own environment: not this one's simulated devices.
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *sys.path])
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        launched.append(process)
        return process

    start = time.monotonic()
    with pytest.warns(UserWarning, match="last 1 training and 0 validation sample"):
        history = fit_on_workers(
            model,
            x,
            y,
            workers=2,
            batch_size=32,
            epochs=2,
            shuffle=False,
            validation_data=val,
            on_event=seen.append,
            timeout=240,
            stall_timeout=90,
            hosts=["127.0.0.1", "rank1.invalid"],
            launch=launch,
            job_dir=tmp_path / "job",
        )
    elapsed = time.monotonic() - start

    info = history.params["workers"]
    ranks = info["ranks"]
    # Both ranks ended with bit-identical weights, and the notebook's model holds them.
    assert ranks[0]["digest"] == ranks[1]["digest"] == digest(model.get_weights())
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 2 * 5
    assert info["devices"] == 2 and info["batch_size_per_worker"] == 16
    # The same losses as one process on the same data (TensorFlow here, JAX there).
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history.history[key], expected.history[key], rtol=0, atol=1e-5)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert model.history is history and history.epoch == [0, 1]
    # The optimizer state came back too: a later local fit continues from it.
    assert int(model.optimizer.iterations.numpy()) == 10

    # Live events, as a local fit produces them, saying who takes part.
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "TrainBegin" and kinds[-1] == "TrainEnd"
    assert kinds.count("EpochEnd") == 2 and "Step" in kinds
    begin = seen[0]
    assert begin.strategy == "DataParallel (2 workers, 2 devices)"
    assert begin.replicas == 2 and begin.batch_size == 32 and begin.steps == 5
    assert seen[-1].state == "finished"
    assert seen[-2].logs["loss"] == pytest.approx(expected.history["loss"][-1], abs=1e-5)

    assert launched and launched[0].poll() is not None
    assert not worker_processes()
    print(f"2-worker run: {elapsed:.1f} s")


@pytest.mark.slow
def test_a_worker_that_raises_shows_its_traceback_and_stops_the_others(tmp_path, faults):
    model = make_model(faults.FaultOnRank(rank=1, mode="raise"))
    before = model.get_weights()
    x, y = data(64)
    seen = []
    with pytest.raises(WorkerError) as info:
        fit_on_workers(
            model,
            x,
            y,
            workers=2,
            epochs=1,
            on_event=seen.append,
            timeout=180,
            stall_timeout=90,
            job_dir=tmp_path / "job",
        )
    message = str(info.value)
    assert info.value.rank == 1
    assert message.startswith("worker 1 of 2 failed; every worker was stopped")
    # The failing worker's traceback, whole, in the one message.
    assert "Traceback (most recent call last)" in message
    assert "kk_faults_mod.py" in message and "boom from rank 1" in message
    # In a notebook, IPython shows only this block, not kernelkit's waiting loop.
    shown = "\n".join(info.value._render_traceback_())
    assert shown.startswith("WorkerError: worker 1 of 2 failed") and "boom from rank 1" in shown
    # The Python traceback does pass through the kernel's supervisor; IPython's does not.
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(frame.filename.endswith(os.path.join("kernelkit", "workers.py")) for frame in frames)
    assert os.path.join("kernelkit", "workers.py") not in shown
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert not worker_processes()


@pytest.mark.slow
def test_a_worker_that_hangs_is_killed_at_the_time_bound(tmp_path, faults):
    model = make_model(faults.FaultOnRank(rank=1, mode="hang"))
    before = model.get_weights()
    x, y = data(64)
    start = time.monotonic()
    with pytest.raises(WorkerTimeout) as info:
        fit_on_workers(
            model, x, y, workers=2, epochs=1, timeout=150, stall_timeout=8, job_dir=tmp_path / "job"
        )
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "made no progress for stall_timeout=8 s" in message
    # Where the hung rank was, from its own stack dump.
    assert "--- worker 1 stack ---" in message and "kk_faults_mod.py" in message
    assert elapsed < 150
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert not worker_processes()


# --------------------------------------------------------------------------- in a notebook


@pytest.fixture
def pythonpath(monkeypatch):
    """Kernels started after this import kernelkit from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


def wait_for(kernel, msg_id, predicate, timeout=120.0):
    """Reads iopub until a message of the cell satisfies ``predicate``."""
    return kernel.wait_for(msg_id, predicate, timeout)


def is_live_view(msg):
    return msg["msg_type"] == "display_data" and (
        "application/vnd.jupyter.widget-view+json" in msg["content"]["data"]
    )


def final_text(messages):
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    return updates[-1]["content"]["data"]["text/plain"] if updates else ""


NOTEBOOK_FIT = textwrap.dedent(
    """
    import numpy as np, keras, kernelkit, psutil
    from kernelkit._worker_main import weights_digest
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    def make():
        keras.utils.set_random_seed(3)
        m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)], name="reg")
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        return m
    single = make().fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    model = make()
    """
)


@pytest.mark.slow
@pytest.mark.kernel
def test_a_notebook_trains_on_two_workers_with_live_progress(tmp_path, pythonpath):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(NOTEBOOK_FIT),
        nbformat.v4.new_code_cell(
            "seen = []\n"
            "h = kernelkit.fit(model, x, y, workers=2, batch_size=32, epochs=2, shuffle=False,\n"
            "                  callbacks=[kernelkit.LiveProgress(sink=seen.append)])"
        ),
        nbformat.v4.new_code_cell(
            textwrap.dedent(
                """
                ranks = h.params["workers"]["ranks"]
                weights = weights_digest(model.get_weights())
                print(ranks[0]["digest"] == ranks[1]["digest"] == weights)
                gaps = [abs(a - b) for a, b in zip(h.history["loss"], single.history["loss"])]
                print(max(gaps) < 1e-5)
                print(sum("_worker_main" in " ".join(c.cmdline())
                          for c in psutil.Process().children(recursive=True)))
                kinds = [type(e).__name__ for e in seen]
                print(kinds[0], kinds.count("EpochEnd"), "Step" in kinds, kinds[-1], seen[-1].state)
                """
            )
        ),
        # A registered model's fit on workers goes into the run ledger like any other.
        nbformat.v4.new_code_cell(
            textwrap.dedent(
                """
                kernelkit.register("reg_workers", model)
                kernelkit.fit(model, x, y, workers=2, batch_size=32, epochs=2, shuffle=False,
                              callbacks=[kernelkit.LiveProgress(display="none")])
                (run,) = kernelkit.runs("reg_workers")
                print(run.state, len(run.epochs), run.device)
                """
            )
        ),
    ]
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    # The progress view, in its final static form (nbclient stores the last
    # display update in place of the live widgets), says who took part.
    shown = [
        o
        for o in nb.cells[1].outputs
        if o.output_type == "display_data"
        and "application/vnd.plotly.v1+json" not in o.data  # the curves' own output
    ]
    assert len(shown) == 1
    final = shown[0].data
    assert final["text/plain"].startswith("kernelkit reg: finished (2 epochs)"), final["text/plain"]
    assert "DataParallel (2 workers, 2 devices)" in final["text/html"]
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs).split()
    # Identical weights on both ranks and in the notebook; the single-process
    # loss; no worker left; rank 0's events reached the notebook's callback.
    assert printed == ["True", "True", "0", "TrainBegin", "2", "True", "TrainEnd", "finished"]
    recorded = "".join(o.get("text", "") for o in nb.cells[3].outputs).strip()
    assert recorded == "finished 2 DataParallel (2 workers, 2 devices)", recorded


STOPPED_RUN_CHECK = textwrap.dedent(
    """
    ranks = h.params["workers"]["ranks"]
    its = [r["iterations"] for r in ranks]
    print(its[0] == its[1], 0 < its[0] < 500 * 4, len(h.epoch) < 500,
          ranks[0]["digest"] == ranks[1]["digest"] == weights_digest(model.get_weights()),
          int(model.optimizer.iterations.numpy()) == its[0])
    print(sum("_worker_main" in " ".join(c.cmdline())
              for c in psutil.Process().children(recursive=True)))
    """
)


def start_long_fit(kernel):
    """Starts a 500-epoch fit on two workers; returns its msg id once steps are running."""
    msg_id = kernel.kc.execute(
        "model = make()\n"
        "h = kernelkit.fit(model, x, y, workers=2, batch_size=32, epochs=500, timeout=240)"
    )
    seen = wait_for(kernel, msg_id, is_live_view, timeout=180)
    # A widget update means rank 0's steps are arriving.
    seen += wait_for(kernel, msg_id, lambda m: m["msg_type"] == "comm_msg", timeout=120)
    return msg_id, seen


@pytest.mark.slow
@pytest.mark.kernel
def test_stop_button_and_interrupt_reach_every_worker(pythonpath, kernel):
    reply, out = kernel.execute(NOTEBOOK_FIT)
    assert reply["status"] == "ok", kernel.text(out)

    # 1. The view's Stop button, clicked while the workers train.
    msg_id, seen = start_long_fit(kernel)
    buttons = [
        m["content"]["comm_id"]
        for m in seen
        if m["msg_type"] == "comm_open"
        and m["content"]["data"]["state"].get("_model_name") == "ButtonModel"
    ]
    assert buttons, "the live view has a Stop button"
    click = kernel.kc.session.msg(
        "comm_msg",
        {"comm_id": buttons[0], "data": {"method": "custom", "content": {"event": "click"}}},
    )
    kernel.kc.shell_channel.send(click)
    reply, rest = kernel.collect(msg_id, timeout=180)
    assert reply["status"] == "ok", kernel.text(rest)
    assert "stopped by user at epoch" in final_text(seen + rest)
    _, out = kernel.execute(STOPPED_RUN_CHECK)
    assert kernel.text(out).split() == ["True"] * 5 + ["0"], kernel.text(out)

    # 2. The kernel's interrupt (the ■ button): the same graceful stop.
    msg_id, seen = start_long_fit(kernel)
    kernel.km.interrupt_kernel()
    reply, rest = kernel.collect(msg_id, timeout=180)
    assert reply["status"] == "ok", kernel.text(rest)
    assert "stopped by user at epoch" in final_text(seen + rest)
    _, out = kernel.execute(STOPPED_RUN_CHECK)
    assert kernel.text(out).split() == ["True"] * 5 + ["0"], kernel.text(out)
