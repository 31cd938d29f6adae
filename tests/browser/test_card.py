"""The model card in a real JupyterLab + Chromium: tabs load, a freeze toggle takes effect."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

CELL = """%%kmodel clf --seed 0
import keras
clf = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
                        keras.layers.Dense(1, name="head")], name="clf")
clf.compile("sgd", "mse")"""


def test_layers_tab_toggle_changes_trainable_count(lab, page):
    lab.new_notebook("card.ipynb", cells=["", "", ""])
    lab.run_cell(0, "%load_ext kernelkit")
    cell = lab.start_cell(1, CELL)
    lab.wait_cell_done(cell, timeout_s=120)
    # The card shows its summary first: 49 trainable parameters.
    cell.locator(".kk-card").wait_for()
    assert "Trainable parameters: 49" in cell.locator(".kk-card").inner_text()

    # Open the Layers tab: it loads on first view.
    cell.locator(".lm-TabBar-tab", has_text="Layers").click()
    totals = cell.locator(".widget-html-content", has_text="trainable params").first
    totals.wait_for()
    assert re.search(r"trainable params\s*49\b", totals.inner_text())

    # Untick "trainable" on the hidden layer's row: the totals follow.
    row = cell.locator(".widget-hbox", has=page.locator("code", has_text=re.compile("^hidden$")))
    row.locator("input[type=checkbox]").first.click()
    cell.locator(".widget-html-content", has_text=re.compile(r"trainable params\s*9\b")).wait_for()
    out = lab.run_cell(2, "print([l.trainable for l in clf.layers], len(clf.trainable_weights))")
    assert out.strip() == "[False, True] 2"
