"""%%kmodel options are checked before the cell runs: one UsageError line, nothing lost.

Each case runs a real ``%%kmodel keep ...`` cell in IPython's shell over an
earlier, registered ``keep`` and asserts the exact line the user sees, that
the cell's code did not run, and that ``keep`` (the variable, its registry
entry and its weights) is exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

import kernelkit
from kernelkit import session

SETUP = """
import numpy as np, keras, kernelkit
rng = np.random.default_rng(0)
x4 = rng.normal(size=(64, 4)).astype("float32")
y1 = x4.sum(axis=1, keepdims=True)
class StopAfter(keras.callbacks.Callback):
    def __init__(self, n): super().__init__(); self.n = n
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.n: self.model.stop_training = True
"""

# A cell that would train if it ran; `ran` tells whether its code ran at all.
CELL = """
ran = True
keep = keras.Sequential([keras.Input((4,)), keras.layers.Dense({units}), keras.layers.Dense(1)])
keep.compile("sgd", "mse")
built = keep
keep.fit(x4, y1, epochs=3, batch_size=16, verbose=0{callbacks})
"""


def cell(units: int = 3, callbacks: str = "") -> str:
    return CELL.format(units=units, callbacks=callbacks)


@pytest.fixture
def shell(ip):
    ip.run_cell_raising(SETUP)
    ip.run_cell_magic("kmodel", "keep --no-card", cell())
    yield ip
    for name in list(session.registry._REGISTRY):
        session.unregister(name)


def digest(model) -> str:
    """A hash of the model's weights and optimizer state."""
    h = hashlib.sha256()
    for value in [*model.get_weights(), *(np.asarray(v) for v in model.optimizer.variables)]:
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def refused(shell, line: str, cell_text: str) -> str:
    """Runs the cell; asserts one plain UsageError line and that nothing was lost."""
    keep = shell.user_ns["keep"]
    entry = session.registry._REGISTRY["keep"]
    before = (digest(keep), entry.runs, entry.last_summary, dict(entry.fit_options))
    shell.user_ns["ran"] = False
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("kmodel", line, cell_text)
    assert type(info.value) is UsageError  # IPython prints exactly this class as one line
    message = str(info.value)
    assert "\n" not in message
    assert shell.user_ns["keep"] is keep  # the earlier model stays under NAME
    assert kernelkit.get("keep") is keep and session.registry._REGISTRY["keep"] is entry
    assert (digest(keep), entry.runs, entry.last_summary, dict(entry.fit_options)) == before
    return message


def test_checkpoint_naming_an_existing_folder(shell, tmp_path):
    folder = tmp_path / "best.weights.h5"
    folder.mkdir()
    message = refused(shell, f"keep --checkpoint {folder}", cell())
    assert message == (
        f"The checkpoint path '{folder}' is an existing folder, and Keras saves the best epoch "
        f"to a file: name a file, e.g. '{folder}/best.weights.h5'."
    )
    assert shell.user_ns["ran"] is False and os.listdir(folder) == []


def test_checkpoint_under_a_regular_file(shell, tmp_path):
    (tmp_path / "a_file").write_text("")
    message = refused(shell, f"keep --checkpoint {tmp_path}/a_file/best.weights.h5", cell())
    assert message == f"The checkpoint folder '{tmp_path}/a_file' is a file: pass a directory path."
    assert shell.user_ns["ran"] is False


def test_tensorboard_folder_under_a_regular_file(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    message = refused(shell, "keep --tensorboard", cell())
    assert message == (
        "Cannot write to the TensorBoard folder 'runs/keep' ('runs' is a file): move or rename "
        "that file, or run the notebook from a folder you can write to (os.chdir)."
    )
    assert shell.user_ns["ran"] is False
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_tensorboard_folder_that_cannot_be_written(shell, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root can write to a read-only directory")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o500)
    monkeypatch.chdir(tmp_path)
    try:
        message = refused(shell, "keep --tensorboard", cell())
    finally:
        (tmp_path / "runs").chmod(0o700)
    assert message == (
        "Cannot write to the TensorBoard folder 'runs/keep' (Permission denied): run the "
        "notebook from a folder you can write to (os.chdir)."
    )
    assert shell.user_ns["ran"] is False


def make_backup(shell, directory, units: int = 3) -> None:
    """A real resumable run, stopped after its first epoch: its backup stays."""
    shell.run_cell_raising(
        "import kernelkit\n"
        f"_m = keras.Sequential([keras.Input((4,)), keras.layers.Dense({units}), "
        "keras.layers.Dense(1)])\n"
        "_m.compile('sgd', 'mse')\n"
        f"kernelkit.fit(_m, x4, y1, epochs=3, batch_size=16, verbose=0,\n"
        f"              resume={str(directory)!r}, callbacks=[StopAfter(1)])\n"
    )
    assert (directory / "backup" / "latest.weights.h5").exists()


def test_resume_on_a_truncated_backup(shell, tmp_path):
    make_backup(shell, tmp_path / "run")
    weights = tmp_path / "run" / "backup" / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:2000])  # the kernel died mid-write
    assert not (tmp_path / "run" / "backup" / "latest.weights.h5.bkp").exists()
    message = refused(shell, f"keep --resume {tmp_path}/run", cell())
    root = f"{tmp_path}/run"
    assert re.fullmatch(
        re.escape(f"The resume backup in '{root}' is damaged (latest.weights.h5: ")
        + r"Unable to .*truncated file.*"
        + re.escape(
            "; no readable previous copy), so it cannot be resumed: delete it with "
            f"kernelkit.checkpoints.clear_resume('{root}') to start the run over, or resume from "
            "another folder."
        ),
        message,
    ), message
    assert shell.user_ns["ran"] is False


def test_resume_on_damaged_metadata(shell, tmp_path):
    make_backup(shell, tmp_path / "run")
    (tmp_path / "run" / "backup" / "training_metadata.json").write_text("{not json")
    message = refused(shell, f"keep --resume {tmp_path}/run", cell())
    root = f"{tmp_path}/run"
    assert message.startswith(
        f"The resume backup in '{root}/backup' is damaged (training_metadata.json: "
    ), message
    assert message.endswith(
        f"): delete it with kernelkit.checkpoints.clear_resume('{root}') to start the run over, or "
        "resume from another folder."
    ), message
    assert shell.user_ns["ran"] is False


def test_resume_on_a_backup_of_another_architecture(shell, tmp_path):
    make_backup(shell, tmp_path / "run", units=3)
    backup = tmp_path / "run" / "backup"
    files = {p.name: p.read_bytes() for p in backup.iterdir()}
    # The cell builds Dense(5) where the backup holds Dense(3): the check runs once the cell
    # built the model, before any restore or step.
    message = refused(shell, f"keep --resume {tmp_path}/run", cell(units=5))
    root = f"{tmp_path}/run"
    built = shell.user_ns["built"]
    assert re.fullmatch(
        re.escape(f"The resume backup in '{root}' is of another architecture (layer '")
        + r"dense_\d+"
        + re.escape(
            "' holds [(4, 3), (3,)] there and [(4, 5), (5,)] in this model), so nothing was "
            "restored or trained: use another resume folder, or start this one over with "
            f"kernelkit.checkpoints.clear_resume('{root}'). (nothing was registered; the earlier "
            "keep was kept)"
        ),
        message,
    ), message
    assert int(built.optimizer.iterations.numpy()) == 0  # nothing trained
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == files  # backup untouched


def test_workers_without_their_engine(shell, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # as if JAX were not installed
    message = refused(shell, "keep --workers 2", cell())
    assert message == (
        "--workers trains in worker processes that run Keras on JAX, which is not installed "
        'in this kernel\'s Python: pip install "jax[cpu]" (or the jax build for your GPUs '
        "or TPU)"
    )
    assert shell.user_ns["ran"] is False


def test_good_options_still_run_and_register(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell.run_cell_magic(
        "kmodel",
        f"keep --no-card --checkpoint {tmp_path}/best.weights.h5 --resume {tmp_path}/r",
        cell(),
    )
    assert shell.user_ns["ran"] is True
    assert kernelkit.get("keep") is shell.user_ns["built"]
    assert (tmp_path / "best.weights.h5").is_file()
