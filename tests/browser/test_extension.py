"""kernelkit's JupyterLab extension in a real browser: the status item's life cycle."""

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


def test_status_item_appears_after_load_ext(lab, page):
    lab.new_notebook("load_ext.ipynb", cells=["", "", ""])
    # The extension asks every new kernel for kernelkit on connect; this kernel
    # closes that comm. A cell that ran proves the kernel handled the request
    # (shell messages are handled in order), so "hidden" is a settled state.
    assert lab.run_cell(0, "print(1 + 1)").strip() == "2"
    assert lab.status_item.is_hidden()

    lab.run_cell(1, "%load_ext kernelkit")

    lab.status_item.wait_for(state="visible")
    assert re.match(r"^kernelkit\b", lab.status_item.inner_text())
    assert "kernelkit" in (lab.status_item.get_attribute("title") or "")

    # The device message reaches the item (the session sends the detected one).
    lab.run_cell(2, "from kernelkit.transport import labcomm\nlabcomm.set_device('GPU: test')")
    expect(lab.status_item).to_have_text("kernelkit · GPU: test · idle")

    ours = [line for line in page.kk_console if "kernelkit" in line.lower()]
    assert not [line for line in ours if line.startswith(("[error]", "[pageerror]"))], ours


def test_status_item_survives_reload_and_goes_with_restart(lab):
    lab.new_notebook("reload.ipynb", cells=["", ""])
    lab.run_cell(0, "%load_ext kernelkit")
    lab.status_item.wait_for(state="visible")

    # After a reload the page opens its own comm; the kernel's target answers.
    lab.open_notebook("reload.ipynb")
    lab.status_item.wait_for(state="visible")

    # A restarted kernel has no kernelkit: the item goes.
    lab.restart_kernel()
    lab.status_item.wait_for(state="hidden")
    lab.wait_idle()
    assert lab.run_cell(1, "print('fresh')").strip() == "fresh"
    assert lab.status_item.is_hidden()
