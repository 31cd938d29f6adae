"""Core kernelkit in Jupyter Notebook 7, which never loads the JupyterLab extension's features.

The live view is plain ipywidgets and the final result static HTML, so it must work here too.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CODE = """import numpy as np, keras, kernelkit
keras.utils.set_random_seed(0)
x = np.random.rand(20000, 8).astype("float32"); y = x.sum(axis=1, keepdims=True)
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name="nb7")
m.compile("sgd", "mse")
h = kernelkit.fit(m, x, y, epochs=50, batch_size=8, validation_split=0.1)"""


def test_live_progress_in_notebook7(lab, page, lab_server):
    lab.new_notebook("nb7.ipynb", cells=[CODE])  # written and opened once in Lab
    page.goto(f"{lab_server.url}/notebooks/nb7.ipynb?token={lab_server.token}")
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.locator(".cm-content").wait_for()
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
    # The live widget view renders, with its Stop button, and the button works here too ...
    cell.locator(".kk-progress .kk-bar").wait_for(timeout=120_000)
    cell.locator("button", has_text="Stop").click(timeout=120_000)
    # ... and the run ends as the static result with its state line.
    cell.locator(".kk-result").wait_for(timeout=120_000)
    assert "stopped by user at epoch" in cell.locator(".kk-result").inner_text()
