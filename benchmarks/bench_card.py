"""How long the model card takes to build, and what its Layers tab leaves in a saved notebook.

The target (issue 18, item 7): the card of a ~300-layer model (ResNet50)
builds in <= 0.5 s, and the widget state a saved notebook carries once the
Layers tab is opened stays under the saved-notebook goal (100 KB) at any
depth.

For each keras.applications model (``weights=None``, so nothing is
downloaded; small inputs), in one process:

  card build    ``ModelCard(model).build()`` (the Summary tab; the others load when opened)
  layers tab    selecting the Layers tab (``selected_index = 1``), which builds it
  models        widget comm models created by the tab (Layout and Style models included),
                counted in ipywidgets' registry of live widgets
  tab KB        the JSON of the tab's models' state with every default kept, as nbclient
                saves it (``Widget.get_manager_state(drop_defaults=False)``)
  lean KB       the same with defaults left out, as JupyterLab saves it (``drop_defaults=True``)
  card KB       full and lean, the whole card: the tab plus the card's Tab and its Summary
                (an HTML table of the top-level layers)

It also times ``%load_ext kernelkit`` in fresh processes (target <= 50 ms: the
extension loads no Keras), the best of ``--repeats``.

Timings are the best of ``--repeats`` fresh cards (a shared machine's slow
spells make the median wander); the counts and sizes do not vary.

Run:
  TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=. .venv/bin/python benchmarks/bench_card.py [--repeats 3]
      [--models ResNet50,MobileNetV2,NASNetMobile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ipywidgets
import keras

from kernelkit.views.card import ModelCard

#: input shapes: the smallest each application accepts, or close to it.
INPUTS = {
    "ResNet50": (64, 64, 3),
    "MobileNetV2": (96, 96, 3),
    "NASNetMobile": (224, 224, 3),  # NASNetMobile wants 224x224 with weights=None too
}


def _live() -> dict[str, ipywidgets.Widget]:
    # ipywidgets 8 keeps every open comm model here (Widget.widgets is its deprecated alias).
    return dict(ipywidgets.widgets.widget._instances)


def measure(model: keras.Model) -> dict[str, float]:
    """One fresh card of ``model``: timings, models created, saved state size."""
    before = set(_live())
    start = time.perf_counter()
    card = ModelCard(model, submit=lambda intent: True)
    tabs = card.build()
    card_s = time.perf_counter() - start
    after_card = set(_live())
    start = time.perf_counter()
    tabs.selected_index = 1  # the Layers tab, as a click on it does
    tab_s = time.perf_counter() - start
    live = _live()
    created = [w for mid, w in live.items() if mid not in before]
    tab = [w for mid, w in live.items() if mid not in after_card]
    figures = {}
    for name, widgets in (("tab", tab), ("card", created)):
        for lean in (False, True):
            state = ipywidgets.Widget.get_manager_state(drop_defaults=lean, widgets=widgets)
            size = len(json.dumps(state, separators=(",", ":")).encode())
            figures[f"{name}_{'lean' if lean else 'full'}_kb"] = size / 1024
    for widget in created:
        widget.close()
    return {
        "card_s": card_s,
        "tab_s": tab_s,
        "tab_models": len(tab),
        "models": len(created),
        **figures,
    }


_LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
began = time.perf_counter()
shell.run_line_magic("load_ext", "kernelkit")
print(time.perf_counter() - began)
"""


def load_ext_seconds() -> float:
    """``%load_ext kernelkit`` in a fresh IPython shell of a fresh process, in seconds."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EXT], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(INPUTS))
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Keras {keras.__version__} ({keras.backend.backend()}), "
        f"ipywidgets {ipywidgets.__version__}"
    )
    load_ext = min(load_ext_seconds() for _ in range(args.repeats))
    print(f"%load_ext kernelkit in a fresh process: {load_ext * 1e3:.0f} ms (target <= 50 ms)")
    print(
        f"{'model':<14}{'layers':>7}{'card build':>12}{'layers tab':>12}"
        f"{'tab models':>12}{'card models':>12}{'tab KB':>8}{'lean KB':>9}{'card KB':>12}"
    )
    for name in args.models.split(","):
        model = getattr(keras.applications, name)(weights=None, input_shape=INPUTS[name])
        runs = [measure(model) for _ in range(args.repeats)]
        last = runs[-1]
        print(
            f"{name:<14}{len(model.layers):>7}"
            f"{min(r['card_s'] for r in runs):>11.3f}s{min(r['tab_s'] for r in runs):>11.3f}s"
            f"{last['tab_models']:>12}{last['models']:>12}{last['tab_full_kb']:>8.0f}"
            f"{last['tab_lean_kb']:>9.0f}{last['card_full_kb']:>7.0f}/{last['card_lean_kb']:<4.0f}"
        )


if __name__ == "__main__":
    main()
