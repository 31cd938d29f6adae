"""The live progress view in a real JupyterLab + Chromium: renders, streams, stops, saves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.browser

SETUP = """import numpy as np, keras, kernelkit
keras.utils.set_random_seed(0)
x = np.random.rand(20000, 8).astype("float32"); y = x.sum(axis=1, keepdims=True)
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)], name="m")
m.compile("sgd", "mse")
print("ready")"""

CURVE_POINTS = """(n) => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const line = panel && panel.querySelector('.kk-curves polyline');
  return !!line && line.getAttribute('points').trim().split(/\\s+/).length > n;
}"""


def test_live_view_streams_stops_and_saves_static(lab, page, lab_server, tmp_path):
    lab.new_notebook("live.ipynb", cells=["", "", ""])
    assert "ready" in lab.run_cell(0, SETUP, timeout_s=120)
    cell = lab.start_cell(
        1, "h = kernelkit.fit(m, x, y, epochs=50, batch_size=8, validation_split=0.1)"
    )

    # The view renders: a bar and the Stop button.
    cell.locator(".kk-progress .kk-bar").wait_for(timeout=120_000)
    stop = cell.locator("button", has_text="Stop")
    stop.wait_for()

    # The curve gains points while the fit runs.
    page.wait_for_function(CURVE_POINTS, arg=1, timeout=120_000)
    first = cell.locator(".kk-curves polyline").first.get_attribute("points")
    page.wait_for_function(CURVE_POINTS, arg=len(first.split()), timeout=120_000)

    # The Stop button stops the running fit mid-run, gracefully.
    stop.click()
    lab.wait_output(cell, "stopped by user at epoch", timeout_s=120)
    lab.wait_cell_done(cell, timeout_s=120)
    assert "Traceback" not in lab.output_text(cell)
    assert lab.run_cell(2, "print(len(h.history.get('loss', [])) < 50)").strip() == "True"

    # Saved, the notebook keeps a static result that reads without a kernel.
    page.keyboard.press("ControlOrMeta+s")
    # Saved once the notebook's tab is no longer marked dirty.
    page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").wait_for(state="detached")
    nb = lab_server.api("GET", "/api/contents/live.ipynb?content=1")["content"]
    outputs = nb["cells"][1]["outputs"]
    # The result (header, table) and, as their own output, the curves (plotly over SVG).
    data = [o["data"] for o in outputs if "kk-table" in o.get("data", {}).get("text/html", "")]
    assert "stopped by user at epoch" in data[-1]["text/plain"]
    curves = [o["data"] for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert "<svg" in curves[-1]["text/html"]

    path = tmp_path / "live.ipynb"
    path.write_text(json.dumps(nb))
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(path)],
        check=True,
        capture_output=True,
    )
    page.goto((tmp_path / "live.html").as_uri())
    page.locator(".kk-result-curves svg").first.wait_for()
    assert "stopped by user at epoch" in page.locator(".kk-result").first.inner_text()
