"""The run ledger: real tiny fits recorded in SQLite, read back, chosen, drawn and exported."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kernelkit import ledger
from kernelkit.callback import LiveProgress
from kernelkit.views.ledger import Comparison, RunTable


def _model(rate: float = 1e-2):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse", metrics=["mae"])
    return model


def _record(book, model, x, y, name="reg", **fit):
    recorder = ledger.RunRecorder(
        book,
        model=name,
        fingerprint=ledger.fingerprint(model),
        config=ledger.describe_fit(model, fit, seed=7),
        versions=ledger.versions(),
    )
    fit.setdefault("epochs", 3)
    history = model.fit(
        x,
        y,
        batch_size=32,
        verbose=0,
        callbacks=[LiveProgress(display="none", sink=recorder)],
        **fit,
    )
    return recorder, history


@pytest.fixture
def book(tmp_path):
    return ledger.Ledger(tmp_path / "ledger")


def test_a_fit_is_recorded_with_what_the_issue_asks_for(book, tiny_data):
    x, y = tiny_data
    model = _model(1e-2)
    recorder, history = _record(book, model, x, y, validation_split=0.25, epochs=3)
    (run,) = book.runs("reg")
    assert run.id == recorder.run_id
    assert run.state == "finished" and run.ended is not None
    assert [int(r["epoch"]) for r in run.epochs] == [0, 1, 2]
    # Keras's History and the ledger agree epoch for epoch.
    assert [r["val_loss"] for r in run.epochs] == pytest.approx(history.history["val_loss"])
    assert run.learning_rate == pytest.approx(1e-2)
    assert run.config["seed"] == 7
    assert run.config["fit"]["validation_split"] == 0.25
    assert run.config["compile"]["loss"] == "mse"
    assert run.versions["backend"] in ("tensorflow", "jax")
    assert run.versions["keras"]
    assert run.fingerprint == ledger.fingerprint(_model())  # same architecture, same print
    assert run.timing["steps"] == 3 * 6  # 192 training samples in batches of 32
    assert run.timing["wall"] > 0 and run.timing["steps_per_second"] > 0
    # The figures the progress view showed: its status reducer, fed the same events.
    assert run.timing["compile"] >= 0 and run.timing["first_step"] >= run.timing["compile"]
    assert run.device  # what the bar says it ran on
    assert "loss" in run.curves and run.curves["loss"][0][0] < run.curves["loss"][-1][0]


def test_a_recorder_reads_the_fits_own_status_instead_of_folding_again(book, tiny_data):
    x, y = tiny_data
    model = _model()
    live = LiveProgress(display="none")
    recorder = ledger.RunRecorder(
        book, model="reg", fingerprint=ledger.fingerprint(model),
        config=ledger.describe_fit(model, {}, seed=None), versions=ledger.versions(),
        status=lambda: live.status,
    )
    live.sinks.append(recorder)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[live])
    assert recorder._own is None  # nothing folded twice
    (run,) = book.runs("reg")
    status = live.status
    assert run.timing["compile"] == pytest.approx(status.compile_time)
    assert run.timing["first_step"] == pytest.approx(status.first_step_time)
    assert run.timing["steps_per_second"] == pytest.approx(1.0 / status.step_time)
    assert run.timing["wall"] == pytest.approx(status.t_now - status.t_begin)


def test_the_ledger_outlives_the_process_and_survives_a_kill_mid_fit(tmp_path):
    folder = tmp_path / "ledger"
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np, keras
        from kernelkit import ledger
        from kernelkit.callback import LiveProgress
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        book = ledger.Ledger({str(folder)!r})
        rec = ledger.RunRecorder(book, model="killed", fingerprint=ledger.fingerprint(model),
                                 config={{}}, versions=ledger.versions())
        class Die(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:  # two epochs are in the ledger: die as a SIGKILLed kernel does
                    os.kill(os.getpid(), signal.SIGKILL)
        x = np.ones((64, 4), "float32")
        model.fit(x, x[:, :1], epochs=5, verbose=0,
                  callbacks=[LiveProgress(display="none", sink=rec), Die()])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    (run,) = ledger.Ledger(folder).runs()
    assert run.state == "interrupted"
    assert "kernel stopped" in run.reason
    assert [int(r["epoch"]) for r in run.epochs] == [0, 1]
    # The database itself is whole.
    with sqlite3.connect(folder / ledger.FILE_NAME) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_steps_never_touch_the_database(book, tiny_data, monkeypatch):
    x, y = tiny_data
    opened = []
    original = ledger.Ledger._connect

    def counting(self, *, create):
        opened.append(create)
        return original(self, create=create)

    monkeypatch.setattr(ledger.Ledger, "_connect", counting)
    _record(book, _model(), x, y, epochs=4)
    # One start, one write per epoch end, one finish: nothing per step (8 steps an epoch).
    assert len(opened) == 1 + 4 + 1


def test_choosing_runs_by_id_latest_state_filter_and_function(book, tiny_data):
    x, y = tiny_data
    for rate in (1e-1, 1e-2, 1e-3):
        _record(book, _model(rate), x, y, epochs=1)
    every = book.runs("reg")
    ids = [r.id for r in every]
    assert [r.id for r in ledger.select(every, -1)] == [ids[-1]]
    assert [r.id for r in ledger.select(every, [ids[0], -1])] == [ids[0], ids[-1]]
    assert [r.learning_rate for r in ledger.select(every, {"learning_rate": 1e-2})] == [
        pytest.approx(1e-2)
    ]
    assert len(ledger.select(every, "finished")) == 3
    assert len(ledger.select(every, lambda r: r.learning_rate < 0.05)) == 2
    with pytest.raises(ValueError, match=r"no run #999 here \(runs: "):
        ledger.select(every, 999)
    with pytest.raises(ValueError, match="only 3 runs"):
        ledger.select(every, -4)
    assert book.delete([ids[1]]) == 1
    assert [r.id for r in book.runs("reg")] == [ids[0], ids[2]]  # the others keep their ids


def test_the_table_and_the_comparison_read_without_a_kernel(book, tiny_data):
    x, y = tiny_data
    for rate in (1e-1, 1e-3):
        _record(book, _model(rate), x, y, validation_split=0.25, epochs=2)
    table = RunTable(book.runs("reg"), "reg")
    text = repr(table)
    assert text.splitlines()[0] == "runs of reg"
    assert "best val_loss" in text and "0.1" in text and "0.001" in text
    assert "<table" in table._repr_html_() and "best val_loss" in table._repr_html_()
    by_loss = table.sort("val_loss")
    assert _best_order(by_loss, "val_loss")
    compared = Comparison(list(table))
    charts = compared.charts()
    assert [c.title for c in charts][:2] == ["loss", "val_loss"]
    assert [line.label for line in charts[0].lines] == [
        f"#{table[0].id} lr 0.1",
        f"#{table[1].id} lr 0.001",
    ]
    assert compared._repr_html_().count("<svg") >= 2
    assert repr(compared).startswith("2 runs compared: loss, val_loss")


def test_the_live_table_sorts_by_any_column(book, tiny_data, monkeypatch):
    import re

    x, y = tiny_data
    for rate in (1e-1, 1e-3, 1e-2):
        _record(book, _model(rate), x, y, validation_split=0.25, epochs=2)
    table = RunTable(book.runs("reg"), "reg")
    widget = table.sorter()
    (by, flip), shown = widget.children[0].children, widget.children[1]

    def ids_shown():
        return [int(i) for i in re.findall(r"<td[^>]*>#(\d+)</td>", shown.value)]

    assert ids_shown() == [r.id for r in table]
    assert ("best val_loss", "val_loss") in by.options
    by.value = "val_loss"  # a loss: the lowest first
    assert ids_shown() == [r.id for r in table.sort("val_loss")] and _best_order(
        RunTable([table.runs[[r.id for r in table].index(i)] for i in ids_shown()]), "val_loss")
    flip.value = True
    assert ids_shown() == [r.id for r in table.sort("val_loss", reverse=True)]
    by.value = "learning_rate"
    assert [table.runs[[r.id for r in table].index(i)].learning_rate for i in ids_shown()] == (
        pytest.approx([1e-1, 1e-2, 1e-3]))  # reversed: highest rate first
    # Outside a kernel the output is the static table only; inside, the widget comes with it.
    assert set(table._repr_mimebundle_()) == {"text/plain", "text/html"}
    monkeypatch.setattr("kernelkit.views.ledger.in_notebook_kernel", lambda: True)
    assert "application/vnd.jupyter.widget-view+json" in table._repr_mimebundle_()


def test_runs_without_a_value_go_last_in_either_order(book, tiny_data):
    x, y = tiny_data
    _record(book, _model(1e-2), x, y, epochs=1)
    _record(book, _model(1e-3), x, y, validation_split=0.25, epochs=1)
    table = RunTable(book.runs("reg"), "reg")
    no_val = table[0].id
    assert table.sort("val_loss")[-1].id == no_val
    assert table.sort("val_loss", reverse=True)[-1].id == no_val


def _best_order(table, metric):
    from kernelkit.views.ledger import _best

    values = [_best(r, metric) for r in table]
    return values == sorted(values)


def test_export_writes_tensorboard_event_files(book, tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tests.test_tensorboard import read

    x, y = tiny_data
    _, history = _record(book, _model(), x, y, validation_split=0.25, epochs=3)
    (folder,) = ledger.export_tensorboard(book.runs("reg"), tmp_path / "tb")
    train, validation = read(folder, "train"), read(folder, "validation")
    assert [v for _, v in train["epoch_loss"]] == pytest.approx(history.history["loss"])
    assert [s for s, _ in validation["epoch_loss"]] == [0, 1, 2]


def test_a_damaged_ledger_is_one_line_naming_the_fix(tmp_path):
    folder = tmp_path / "ledger"
    folder.mkdir()
    (folder / ledger.FILE_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(ledger.LedgerError) as err:
        ledger.Ledger(folder).runs()
    line = str(err.value)
    assert "\n" not in line and "is damaged" in line and "set_folder" in line


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ledger.LedgerError, match=r"cannot be made.*set_folder"):
        ledger.Ledger(blocker / "ledger").start(
            model="m", fingerprint="f", config={}, versions={}
        )


def test_non_finite_values_and_numpy_in_configs_are_stored(book):
    run_id = book.start(
        model="m",
        fingerprint="f",
        config={"a": np.float32(0.5), "b": float("nan"), "c": np.arange(3)},
        versions={},
    )
    book.add_epoch(run_id, 0, {"loss": float("inf"), "mae": np.float32(1.5)})
    book.finish(run_id, state="failed", reason="loss became inf")
    (run,) = book.runs("m")
    assert run.config == {"a": 0.5, "b": "nan", "c": [0, 1, 2]}
    assert run.epochs == ({"epoch": 0.0, "mae": 1.5},)
    assert run.state == "failed" and run.reason == "loss became inf"


def test_the_folder_follows_set_folder_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELKIT_LEDGER", str(tmp_path / "env"))
    assert ledger.folder() == str(tmp_path / "env")
    ledger.set_folder(tmp_path / "set")
    try:
        assert ledger.Ledger().directory == str(tmp_path / "set")
    finally:
        ledger.set_folder(None)
    monkeypatch.delenv("KERNELKIT_LEDGER")
    assert ledger.folder() == os.path.join(os.getcwd(), ".kernelkit")
