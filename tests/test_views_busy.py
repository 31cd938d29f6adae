"""Long calls show progress: extract, a weights load, a card tab of many layers.

The core reports through ``kernelkit.reporting`` (no UI import); the
notebook line (``kernelkit.views._busy.BusyLine``) shows after a delay, is
throttled to the live view's rate and is removed when the call ends.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kernelkit import reporting
from kernelkit.views import _busy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeHandle:
    def __init__(self, first: dict[str, Any]) -> None:
        self.bundles = [first]

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        assert raw
        self.bundles.append(bundle)


class Recorder:
    """A reporting factory that keeps every task's calls."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def __call__(self, label: str, total: int | None, unit: str = "") -> Any:
        record: dict[str, Any] = {"label": label, "total": total, "unit": unit, "done": []}
        self.tasks.append(record)
        return type(
            "T",
            (),
            {
                "update": lambda _self, done: record["done"].append(done),
                "close": lambda _self: record.setdefault("closed", 0) or record.update(closed=1),
            },
        )()


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    previous = reporting.set_factory(recorder)
    try:
        yield recorder
    finally:
        reporting.set_factory(previous)


def test_the_line_waits_throttles_and_goes_away() -> None:
    clock = Clock()
    handles: list[FakeHandle] = []
    line = _busy.BusyLine(
        "extract clf", 63, "batches", delay=1.0, refresh=0.5, clock=clock,
        display=lambda bundle: handles.append(FakeHandle(bundle)) or handles[-1],
    )  # fmt: skip
    for done in range(1, 4):  # a quick call: nothing shows
        clock.now = done * 0.3
        line.update(done)
    assert handles == []
    for done in range(4, 40):  # 0.1 s a batch from here
        clock.now = 0.9 + (done - 3) * 0.1
        line.update(done)
    (handle,) = handles
    assert line.redraws == 8  # 3.6 s at most one redraw per 0.5 s, from 1.0 s on
    assert handle.bundles[0]["text/plain"] == "extract clf · batch 4/63 · 0:01 elapsed · ETA 0:15"
    shown = handle.bundles[0]["text/html"]
    assert "kk-busy" in shown and "width:6%" in shown
    line.close()
    line.close()
    assert handle.bundles[-1] == {}  # an output with no data: nothing shows, nbval skips it
    line.update(50)
    assert handle.bundles[-1] == {}


def test_outside_a_notebook_kernel_nothing_draws() -> None:
    task = _busy.notebook_task("extract clf", 10, "batches")
    task.update(3)
    task.close()
    assert not isinstance(task, _busy.BusyLine)


def tiny_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="hidden"), keras.layers.Dense(1)],
        name="tiny",
    )
    model.compile("sgd", "mse")
    return model


def test_extract_and_scan_report_each_batch_and_close() -> None:
    import kernelkit
    from kernelkit import extraction

    model = tiny_model()
    x = np.zeros((50, 4), "float32")
    with recording() as recorder:
        kernelkit.extract(model, x, batch_size=8)
        extraction.scan(model, x, batch_size=10)
        with pytest.raises(ValueError):
            kernelkit.extract(model, np.zeros((9, 5), "float32"), batch_size=2)
    first, second, *failed = recorder.tasks
    assert first == {
        "label": "extract tiny", "total": 7, "unit": "batches", "done": list(range(7)), "closed": 1,
    }  # fmt: skip
    assert second["total"] == 5 and second["done"] == list(range(5)) and second["closed"] == 1
    assert all(task.get("closed") == 1 for task in failed)  # a refused call leaves no line


def test_a_weights_load_reports_its_layers(tmp_path) -> None:
    import kernelkit

    source = tiny_model()
    path = str(tmp_path / "w.weights.h5")
    source.save_weights(path)
    with recording() as recorder:
        kernelkit.load_weights(tiny_model(), path)
    (task,) = recorder.tasks
    assert task["label"] == "load weights into tiny" and task["unit"] == "layers"
    assert task["done"] == [0, 1, 2] and task["total"] == 3 and task["closed"] == 1


def test_a_card_tab_of_many_layers_says_how_far_its_build_is(monkeypatch) -> None:
    import keras

    from kernelkit.views.card import ModelCard

    model = keras.Sequential(
        [keras.Input((4,))] + [keras.layers.Dense(4, name=f"d{i}") for i in range(40)], name="deep"
    )
    card = ModelCard(model)
    card.build()
    placeholder = card._tab_widgets[1]
    seen: list[str] = []
    placeholder.observe(lambda change: seen.append(change["new"]), names="value")
    clock = Clock()
    real = _busy.BusyLine.__init__

    def ticking(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs, clock=clock)
        inner = self.update

        def update(done: int) -> None:
            clock.now += 0.3  # each row "takes" 0.3 s
            inner(done)

        self.update = update

    monkeypatch.setattr(_busy.BusyLine, "__init__", ticking)
    card.widget.selected_index = 1  # the user opens the Layers tab
    assert seen and all("layers of deep · layer " in value for value in seen)
    assert len(seen) >= 10 and "layer 38/40" in seen[-1]  # 0.3 s a row, a redraw per 0.5 s
    assert card._tab_widgets[1] is not placeholder  # replaced by the panel
    assert reporting._factory is not None and "into_widget" not in repr(reporting._factory)


@pytest.mark.kernel
def test_in_a_kernel_extract_shows_a_line_then_removes_it(kernel) -> None:
    reply, out = kernel.execute(
        "import numpy as np, keras, kernelkit\n"
        "from kernelkit.views import _busy\n"
        "_busy.DELAY, _busy.REFRESH = 0.0, 0.0  # show every batch: no waiting in a test\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name='d')], name='m')\n"
        "x = np.zeros((40, 4), 'float32')"
    )
    assert reply["status"] == "ok", kernel.text(out)
    reply, out = kernel.execute("acts = kernelkit.extract(m, x, batch_size=4)\nprint(len(acts))")
    assert reply["status"] == "ok", kernel.text(out)
    shown = [m["content"] for m in out if m["msg_type"] == "display_data"]
    updates = [m["content"] for m in out if m["msg_type"] == "update_display_data"]
    # One HTML widget, its output the widget's id only (nbval skips it, no text/plain).
    (first,) = shown
    assert set(first["data"]) == {"application/vnd.jupyter.widget-view+json"}
    values = [
        m["content"]["data"]["state"]["value"]
        for m in out
        if m["msg_type"] == "comm_msg" and "value" in m["content"]["data"].get("state", {})
    ]
    texts = [re.sub("<[^>]+>", "", value) for value in values]
    assert [t.split(" · ")[1] for t in texts if t.startswith("extract m")] == [
        f"batch {k}/10" for k in range(1, 10)
    ], texts
    # Removed when the call ended: the output emptied (and the widget closed).
    (last,) = updates
    assert last["data"] == {} and last["transient"] == first["transient"]
    assert kernel.text(out).strip().endswith("1")  # the one layer's activations
