"""The run ledger as users meet it: ``%%kmodel``, ``NAME.fit``, ``kernelkit.runs``/``compare``.

Each test gets its own ledger folder. The real-kernel test kills a kernel in the
middle of a fit and reads the ledger from the test process afterwards.
"""

from __future__ import annotations

import os
import signal

import pytest
from IPython.core.error import UsageError

import kernelkit
from kernelkit import ledger, session

SETUP = """
import numpy as np, keras, kernelkit
rng = np.random.default_rng(0)
x4 = rng.normal(size=(128, 4)).astype("float32")
y1 = x4 @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
def make(rate):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    return m
"""

CELL = """
reg = make({rate})
reg.fit(x4, y1, epochs=2, batch_size=32, validation_split=0.25)
"""


@pytest.fixture
def shell(ip, tmp_path):
    ledger.set_folder(tmp_path / "ledger")
    ip.run_cell_raising(SETUP)
    try:
        yield ip
    finally:
        ledger.set_folder(None)
        for name in list(session.registry._REGISTRY):
            session.unregister(name)


def test_three_cells_and_a_later_fit_are_four_runs_with_their_settings(shell):
    for rate in (1e-1, 1e-2, 1e-3):
        shell.run_cell_magic("kmodel", "reg --seed 3 --no-card", CELL.format(rate=rate))
    shell.run_cell_raising("reg.fit(x4, y1, epochs=1, batch_size=32, verbose=0)")
    table = kernelkit.runs("reg")
    assert len(table) == 4
    assert [r.learning_rate for r in table] == pytest.approx([1e-1, 1e-2, 1e-3, 1e-3])
    assert [len(r.epochs) for r in table] == [2, 2, 2, 1]
    assert {r.state for r in table} == {"finished"}
    assert [r.config["seed"] for r in table] == [3, 3, 3, 3]
    assert len({r.fingerprint for r in table}) == 1
    # The same table for the model itself, and choosing by a recorded setting.
    assert [r.id for r in kernelkit.runs(shell.user_ns["reg"])] == [r.id for r in table]
    assert [r.id for r in kernelkit.runs("reg", which={"learning_rate": 1e-2})] == [table[1].id]
    text = repr(kernelkit.compare("reg", which=[0 - 4, -3]))
    assert text.splitlines()[0] == "2 runs compared: loss, val_loss"
    assert f"#{table[0].id} lr 0.1" in text


def test_the_live_view_is_given_the_previous_run_as_a_ghost(shell):
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    first = kernelkit.runs("reg")[-1]
    shell.run_cell_raising("live = kernelkit.LiveProgress(display='none')")
    shell.run_cell_raising("reg.fit(x4, y1, epochs=1, batch_size=32, callbacks=[live])")
    ghost = shell.user_ns["live"].ghost
    assert ghost is not None and ghost.id == first.id
    assert [int(r["epoch"]) for r in ghost.epochs] == [0, 1]


def test_deleting_and_exporting_runs(shell, tmp_path):
    pytest.importorskip("tensorboard")
    for rate in (1e-2, 1e-3):
        shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=rate))
    folders = kernelkit.export_runs("reg", str(tmp_path / "tb"))
    assert len(folders) == 2
    assert kernelkit.delete_runs("reg", -1) == 1
    assert len(kernelkit.runs("reg")) == 1


def test_runs_of_a_model_that_is_not_registered_is_one_line(shell):
    model = shell.user_ns["make"](0.1)
    with pytest.raises(ValueError, match="runs are kept for registered models"):
        kernelkit.runs(model)


def test_nothing_is_recorded_when_the_ledger_is_off(shell, tmp_path):
    ledger.set_folder(False)
    assert not ledger.enabled()
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    ledger.set_folder(tmp_path / "ledger")
    assert len(kernelkit.runs("reg")) == 0
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    assert len(kernelkit.runs("reg")) == 1


def test_watch_records_activation_statistics_for_the_card(shell):
    shell.run_cell_magic("kmodel", "reg --watch --no-card", CELL.format(rate=1e-2))
    watch = session.entry_for(shell.user_ns["reg"]).watch
    assert [s.epoch for s in watch.epochs] == [0, 1]
    assert watch.samples == 32 and len(watch.labels) == 2
    # A later NAME.fit keeps watching.
    shell.run_cell_raising("reg.fit(x4, y1, epochs=1, batch_size=32, verbose=0)")
    assert [s.epoch for s in session.entry_for(shell.user_ns["reg"]).watch.epochs] == [0]


def test_watch_is_refused_on_the_line_magic(shell):
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    with pytest.raises(UsageError, match="--watch is a %%kmodel cell option"):
        shell.run_line_magic("kmodel", "reg --watch")


def _in_kernel_with_ledger(kernel, folder, code):
    """Runs SETUP and ``code`` in ``kernel``, kernelkit loaded, its ledger in ``folder``."""
    reply, _ = kernel.execute(
        f"import kernelkit\nkernelkit.ledger.set_folder({str(folder)!r})\n%load_ext kernelkit\n"
        + SETUP
        + code
    )
    return reply


@pytest.mark.kernel
def test_a_kernel_killed_mid_fit_leaves_its_run_marked_interrupted(kernel, tmp_path):
    folder = tmp_path / "ledger"
    reply = _in_kernel_with_ledger(
        kernel,
        folder,
        """
import threading
class Hold(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:  # every callback has ended epochs 0 and 1
            print("TWO EPOCHS DONE", flush=True)
            threading.Event().wait()  # hold the fit here until the kernel is killed
""",
    )
    assert reply["status"] == "ok", reply
    msg_id = kernel.kc.execute(
        "%%kmodel reg --no-card\nreg = make(0.01)\n"
        "reg.fit(x4, y1, epochs=5, batch_size=32, callbacks=[Hold()])"
    )
    kernel.wait_for(
        msg_id,
        lambda m: m["msg_type"] == "stream" and "TWO EPOCHS DONE" in m["content"]["text"],
    )
    os.kill(kernel.km.provisioner.pid, signal.SIGKILL)
    assert kernel.km.provisioner.process.wait(timeout=30) == -signal.SIGKILL
    (run,) = ledger.Ledger(folder).runs("reg")
    assert run.state == "interrupted"
    assert [int(r["epoch"]) for r in run.epochs] == [0, 1]
    assert run.ended is None


def test_the_card_gets_a_runs_tab_and_under_watch_an_activations_tab(shell):
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    titles = [title for title, _ in kernelkit.card(shell.user_ns["reg"]).tabs()]
    assert "Runs" in titles and "Activations" not in titles
    shell.run_cell_magic("kmodel", "reg --watch --no-card", CELL.format(rate=1e-3))
    tabs = dict(kernelkit.card(shell.user_ns["reg"]).tabs())
    runs_html = _html_in(tabs["Runs"])
    assert "runs of reg" in runs_html and runs_html.count("<svg") >= 2
    assert "the last 2 of 2 runs overlaid" in runs_html
    assert "dense" in tabs["Activations"].value and "dead units" in tabs["Activations"].value
    stats = repr(kernelkit.activation_stats("reg"))
    assert stats.startswith("ActivationWatch: 2 layers over 2 epochs")


def _html_in(widget):
    """The HTML a widget tree shows: its HTML widgets' values, in order."""
    import ipywidgets

    own = widget.value if isinstance(widget, ipywidgets.HTML) else ""
    return own + "".join(_html_in(child) for child in getattr(widget, "children", ()))


RUNS_IN_KERNEL = """
for rate in (1e-1, 1e-3):
    get_ipython().run_cell_magic(
        "kmodel", "reg --no-card", f"reg = make({rate})\\nreg.fit(x4, y1, epochs=2, verbose=0)")
"""


@pytest.mark.kernel
def test_runs_shows_a_sortable_widget_and_keeps_the_static_table(kernel, tmp_path):
    """In a real kernel: the output carries the live widget and the static table beside it."""
    reply = _in_kernel_with_ledger(kernel, tmp_path / "ledger", RUNS_IN_KERNEL)
    assert reply["status"] == "ok", reply
    reply, messages = kernel.execute('kernelkit.runs("reg")')
    assert reply["status"] == "ok", reply
    (result,) = [m["content"]["data"] for m in messages if m["msg_type"] == "execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in result
    assert "runs of reg" in result["text/html"] and "<table" in result["text/html"]
    assert result["text/plain"].splitlines()[0] == "runs of reg"


def test_activation_stats_without_watch_is_one_line(shell):
    shell.run_cell_magic("kmodel", "reg --no-card", CELL.format(rate=1e-2))
    with pytest.raises(ValueError, match="reg was not trained under --watch: add --watch"):
        kernelkit.activation_stats("reg")
