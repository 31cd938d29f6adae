"""A kernelkit fit seen from JupyterLab: progress in the status bar, stop, highlighting."""

from __future__ import annotations

import os
import re

import pytest

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import expect
except ImportError:
    if os.environ.get("KERNELKIT_REQUIRE_BROWSER") == "1":
        raise  # make test installed it: a collection error, never a quiet skip
    pytest.skip("no playwright (pip install playwright)", allow_module_level=True)

# 2500 steps per epoch and 50 epochs: minutes of training, so only a stop ends it
# within the test's timeouts.
FIT = (
    "import kernelkit, keras, numpy as np\n"
    "m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])\n"
    "m.compile('sgd', 'mse')\n"
    "h = kernelkit.fit(m, np.random.rand(20000, 8), np.random.rand(20000, 1), "
    "epochs=50, batch_size=8)\n"
    "print('epochs in history:', len(h.history['loss']))"
)
PROGRESS = re.compile(r"^kernelkit · .+ · epoch (\d+)/50 · (\d+)% · loss \S+$")
FALLBACK_WARNING = "no answer to stop; interrupting the kernel"


def _start_fit(lab, name):
    lab.new_notebook(name, cells=["", ""])
    lab.run_cell(0, "%load_ext kernelkit")
    lab.status_item.wait_for(state="visible")
    cell = lab.start_cell(1, FIT)
    # Epoch progress shows up once the first step is reported.
    expect(lab.status_item).to_have_text(PROGRESS)
    return cell


def _wait_stopped(lab, cell):
    lab.wait_output(cell, "stopped by user")
    lab.wait_cell_done(cell)
    output = lab.output_text(cell)
    assert "KeyboardInterrupt" not in output, output
    match = re.search(r"stopped by user at epoch (\d+), step (\d+)", output)
    assert match, output
    epoch, step = int(match.group(1)), int(match.group(2))
    # Stopped long before the 50 epochs ended, at the end of a step (graceful).
    assert epoch < 50
    assert re.search(r"epochs in history: \d+", output), output
    # The item goes back to idle.
    expect(lab.status_item).to_have_text(re.compile(r"^kernelkit( · [^·]+)? · idle$"))
    return epoch, step


def test_progress_in_status_bar_and_shortcut_stops_fit(lab, page):
    cell = _start_fit(lab, "shortcut.ipynb")
    # The item carries the model's progress and says how stop works here.
    text = lab.status_item.inner_text()
    epoch, percent = (int(g) for g in PROGRESS.match(text).groups())
    assert 1 <= epoch <= 50 and 0 <= percent <= 100
    assert "gracefully" in (lab.status_item.get_attribute("title") or "")
    # The toolbar button shows while the fit runs.
    stop_button = lab.notebook.locator(".kk-StopButton")
    expect(stop_button).to_be_visible()

    # Accel Alt . in command mode (Escape leaves the cell editor).
    page.keyboard.press("Escape")
    page.keyboard.press("ControlOrMeta+Alt+Period")

    _wait_stopped(lab, cell)
    expect(stop_button).to_be_hidden()
    # The stop went over the comm (handled in a subshell while the cell was
    # busy), not through the interrupt fallback.
    assert not [line for line in page.kk_console if FALLBACK_WARNING in line]


def test_palette_command_stops_fit_mid_epoch(lab, page):
    cell = _start_fit(lab, "palette.ipynb")
    lab.run_command_from_palette("Stop training")
    _, step = _wait_stopped(lab, cell)
    assert 1 <= step < 2500, "stopped inside the epoch, not at its end"
    assert not [line for line in page.kk_console if FALLBACK_WARNING in line]


def test_kmodel_cell_highlighting(lab):
    lab.new_notebook(
        "highlight.ipynb",
        cells=[
            "%%kmodel mlp --epochs 3\n"
            "import keras\n"
            "mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
            "print(len(mlp.layers))",
            "x = 1  # %%kmodel only counts on a cell's first line\n%%kmodel y",
        ],
    )
    first = lab.cell(0).locator(".cm-content")
    lines = first.locator(".cm-line")
    expect(lines.first).to_have_class(re.compile(r"\bkk-cellMagic\b"))
    expect(first.locator(".kk-cellMagic")).to_have_count(1)
    # The body is Python: builtins get JupyterLab's Python builtin class ...
    expect(first.locator(".cm-builtin", has_text="print")).to_have_count(1)
    expect(first.locator(".cm-builtin", has_text="len")).to_have_count(1)
    # ... and the keyword "import" is a highlighted token, unlike plain names.
    keyword = lines.nth(1).locator("span", has_text=re.compile(r"^import$"))
    expect(keyword).to_have_count(1)
    assert keyword.evaluate("e => getComputedStyle(e).fontWeight") in ("700", "bold")
    # The magic line reads as one meta token in the meta colour.
    magic_color = lines.first.evaluate("e => getComputedStyle(e).color")
    meta_color = lines.first.evaluate(
        "e => { const p = document.createElement('span');"
        " p.style.color = 'var(--jp-mirror-editor-meta-color)'; e.appendChild(p);"
        " const c = getComputedStyle(p).color; p.remove(); return c; }"
    )
    assert magic_color == meta_color
    # Not on other cells, nor on a %%kmodel that is not on the first line.
    expect(lab.cell(1).locator(".kk-cellMagic")).to_have_count(0)
