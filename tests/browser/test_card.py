"""The model card in a real JupyterLab + Chromium: tabs load, a freeze toggle takes effect."""

from __future__ import annotations

import re
import time

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


RESNET = """import keras, kernelkit
resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))  # 176 layers
kernelkit.card(resnet)"""


def test_a_deep_models_layers_tab_shows_a_page_and_filters(lab, page):
    from playwright.sync_api import expect

    lab.new_notebook("card_resnet.ipynb", cells=["", ""])
    lab.run_cell(0, "%load_ext kernelkit")
    cell = lab.start_cell(1, RESNET)
    lab.wait_cell_done(cell, timeout_s=180)
    cell.locator(".kk-card").wait_for()

    # The first page's rows, built when the tab is opened; the click-to-rows time is the
    # issue's "renders in <= 1 s" (asserted loosely: the 2-core box runs other jobs).
    start = time.monotonic()
    cell.locator(".lm-TabBar-tab", has_text="Layers").click()
    rows = cell.locator(".kk-layer-cells")
    expect(rows).to_have_count(20, timeout=30_000)
    expect(rows.first.locator("code")).to_have_text("conv1_pad")
    shown_s = time.monotonic() - start
    print(f"ResNet50 Layers tab, click to first page of rows: {shown_s:.2f} s")
    assert shown_s < 5, f"the Layers tab took {shown_s:.2f} s to show its rows"
    pager = cell.locator(".widget-html-content", has_text="rows 1–20 of 176")
    expect(pager).to_be_visible()

    # The filter (applied on Enter): only BatchNormalization rows, 53 of them over 3 pages.
    box = cell.locator("input[placeholder^='filter']")
    box.fill("bn")
    box.press("Enter")
    expect(cell.locator(".widget-html-content", has_text="rows 1–20 of 53")).to_be_visible()
    expect(rows.locator(".kk-type")).to_have_text(["BatchNormalization"] * 20)
    cell.locator("button:has(i.fa-chevron-right)").click()
    expect(cell.locator(".widget-html-content", has_text="rows 21–40 of 53")).to_be_visible()
    expect(rows.first.locator("code")).to_have_text("conv3_block3_3_bn")
