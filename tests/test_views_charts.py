"""The progress result's curves and table: round ticks, log losses, marks, size, plotly JSON.

Everything is driven by hand-made events (no fit, no widgets, no sleeps) and
checked as a reader sees it: tick labels and their pixel positions in the
SVG, the table's rows, the plotly figure as plotly itself validates it, and
the size of the notebook that saves the final bundle.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

import pytest

from kernelkit import events as ev
from kernelkit.history import RunHistory
from kernelkit.status import FitStatus
from kernelkit.views import _plotly, _svg
from kernelkit.views.progress import (
    BATCH_LABEL,
    LIVE_ROWS,
    ProgressView,
    table_html,
)

SVG = "{http://www.w3.org/2000/svg}"
PLOTLY = "application/vnd.plotly.v1+json"


# ------------------------------------------------------------------ a fake run


def run_events(
    epochs: int = 20,
    steps: int = 50,
    *,
    decades: float = 4.0,
    start: int = 0,
    resumed_at: int | None = None,
    end: tuple[str, str] = ("finished", ""),
    stop_at: tuple[int, int] | None = None,
    with_validation: bool = True,
) -> tuple[list[ev.Event], list[float]]:
    """Events of a fit whose loss falls ``decades`` decades; returns them and val_loss.

    Step logs are running means over the epoch, as Keras reports them. The
    validation loss bottoms out at epoch 14 (1-based) and then rises.
    """
    events: list[ev.Event] = [
        ev.TrainBegin(
            epochs=epochs,
            initial_epoch=start,
            steps=steps,
            batch_size=32,
            model_name="demo",
            resumed_at=resumed_at,
            time=0.0,
        )
    ]
    t, val_losses = 0.0, []
    for epoch in range(start, epochs):
        events.append(ev.EpochBegin(epoch=epoch, time=t))
        total = 0.0
        for step in range(1, steps + 1):
            progress = (epoch + step / steps) / epochs
            total += 2.3 * 10 ** (-decades * progress) * (1 + 0.3 * ((step * 7919) % 13) / 13)
            accuracy = 1 - 0.9 * 10 ** (-2 * progress)
            t += 0.01
            logs = {"loss": total / step, "accuracy": accuracy}
            events.append(ev.Step(epoch=epoch, step=step, logs=logs, time=t))
            if stop_at == (epoch, step):
                break
        loss = total / step
        logs = {"loss": loss, "accuracy": accuracy}
        if with_validation:
            val = 1.3 * loss + 1e-2 * max(0, epoch - 13) ** 1.5
            val_losses.append(val)
            logs |= {"val_loss": val, "val_accuracy": accuracy - 0.02}
        events.append(ev.EpochEnd(epoch=epoch, logs=logs, steps=step, time=t))
        if stop_at is not None and stop_at[0] == epoch:
            break
    state, reason = end
    events.append(
        ev.TrainEnd(state=state, reason=reason, epoch=epoch, step=step, time=t)  # type: ignore[arg-type]
    )
    return events, val_losses


def feed(
    events: list[ev.Event], history: RunHistory | None = None
) -> tuple[FitStatus, RunHistory]:
    state, history = FitStatus(), history if history is not None else RunHistory()
    for event in events:
        history.apply(event)
        state.apply(event)
    return state, history


class FakeHandle:
    """Stands in for IPython's DisplayHandle: records the bundles it is given."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        assert raw
        self.updates.append(bundle)


def finished_outputs(
    events: list[ev.Event], history: RunHistory | None = None, interactive: bool = True
) -> list[dict[str, Any]]:
    """What ProgressView.finish leaves: the bundle in place of the live widgets, then more."""
    view = ProgressView(history=history, interactive=interactive)
    for event in events[:-1]:
        view.history.apply(event)
        view.state.apply(event)
    handle = view._handle = FakeHandle()
    shown: list[dict[str, Any]] = []
    view._display_more = shown.append  # type: ignore[method-assign]
    view.handle(events[-1])  # TrainEnd: finish() updates the display handle
    assert len(handle.updates) == 1
    return handle.updates + shown


def finished_curves(events: list[ev.Event], history: RunHistory | None = None) -> dict[str, Any]:
    """The curves output that follows the result: plotly figure, SVG, one text line."""
    _, curves = finished_outputs(events, history)
    return curves


# ------------------------------------------------------------------ reading an SVG


def charts(html: str) -> dict[str, ET.Element]:
    """The chart SVGs of a result by metric name (the legend's swatches left out)."""
    found = {}
    for text in re.findall(r"<svg[^>]*role=\"img\".*?</svg>", html, flags=re.S):
        svg = ET.fromstring(text)
        found[svg.get("aria-label")] = svg
    return found


def ticks(svg: ET.Element, axis: str) -> list[tuple[str, float]]:
    """(label, pixel position) of each tick on ``axis`` ("x" or "y")."""
    return [
        (t.text or "", float(t.get("x" if axis == "x" else "y")))
        for t in svg.iter(f"{SVG}text")
        if t.get("class") == f"kk-{axis}tick"
    ]


def is_125(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


def assert_round_linear(values: list[float]) -> None:
    assert len(values) >= 2, values
    steps = {round(b - a, 12) for a, b in itertools.pairwise(values)}
    assert len(steps) == 1, f"uneven ticks {values}"
    step = steps.pop()
    assert is_125(step), f"step {step} of {values} is not 1, 2 or 5 x 10^k"
    for v in values:
        assert math.isclose(v / step, round(v / step), abs_tol=1e-9), (v, step)


def evenly_spaced(positions: list[float]) -> bool:
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    return max(gaps) - min(gaps) < 0.25  # pixels, after rounding to 0.1


# ------------------------------------------------------------------ nice_ticks


@pytest.mark.parametrize(
    ("lo", "hi", "n", "expected"),
    [
        (0.13, 0.87, 4, [0.2, 0.4, 0.6, 0.8]),
        (0, 1, 5, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 30, 6, [0, 5, 10, 15, 20, 25, 30]),
        (0.3, 0.7, 4, [0.3, 0.4, 0.5, 0.6, 0.7]),
        (-3, 7, 5, [-2, 0, 2, 4, 6]),
        (1e-5, 4.2e-5, 4, [1e-5, 2e-5, 3e-5, 4e-5]),
        (1e-5, 4.2e-5, 3, [2e-5, 4e-5]),
    ],
)
def test_nice_ticks_are_round_multiples(lo, hi, n, expected) -> None:
    assert _svg.nice_ticks(lo, hi, n) == pytest.approx(expected)


def test_nice_ticks_over_many_ranges() -> None:
    for lo in (0.0, 0.013, 0.5, 3.0, 117.0, -0.4):
        for span in (0.0007, 0.03, 0.9, 1.0, 4.5, 23.0, 999.0):
            hi = lo + span
            inside = _svg.nice_ticks(lo, hi, 5)
            assert_round_linear(inside)
            assert 2 <= len(inside) <= 6
            assert lo - 1e-12 <= inside[0] and inside[-1] <= hi + 1e-12
            # No float noise: each tick prints as a short decimal.
            assert all(len(repr(t)) <= 12 for t in inside), inside
            covering = _svg.nice_ticks(lo, hi, 5, cover=True)
            assert_round_linear(covering)
            assert covering[0] <= lo + 1e-12 and covering[-1] >= hi - 1e-12
            if lo >= 0:
                assert covering[0] >= 0  # a loss axis never reaches below zero


def test_nice_ticks_for_epochs_are_whole() -> None:
    for hi in range(1, 120):
        got = _svg.nice_ticks(0, hi, 6, integer=True)
        assert all(t == int(t) for t in got), got
        assert got[0] == 0 and len(got) >= 2
        assert_round_linear(got)


def test_log_ticks_are_1_2_5_values() -> None:
    assert _svg.log_ticks(3e-4, 2.3) == [0.001, 0.01, 0.1, 1]
    assert _svg.log_ticks(0.2, 3) == [0.2, 0.5, 1, 2]
    assert _svg.log_ticks(1e-9, 10) == [1e-8, 1e-6, 1e-4, 1e-2, 1]
    assert _svg.log_ticks(2e-5, 2.3) == [1e-4, 1e-2, 1]  # 5 decades: every other one
    assert [_svg.tick_label(t) for t in _svg.log_ticks(2e-5, 2.3, 6)] == [
        "0.0001", "0.001", "0.01", "0.1", "1"]  # fmt: skip
    assert [_svg.tick_label(t) for t in (1e-5, 2e-7, 5e6)] == ["1e-5", "2e-7", "5e6"]


# ------------------------------------------------------------------ the final bundle


def test_the_curves_are_their_own_output_with_plotly_over_the_svg() -> None:
    events, _ = run_events(3, 5)
    result, curves = finished_outputs(events)
    # The result keeps the header and table; the curves follow, where a plotly
    # renderer (which outranks text/html) hides only the SVG it replaces.
    assert set(result) == {"text/html", "text/plain"}
    assert "kk-table" in result["text/html"] and "<svg" not in result["text/html"]
    assert set(curves) == {PLOTLY, "text/html", "text/plain"}
    assert "kk-curves" in curves["text/html"] and "kk-table" not in curves["text/html"]
    assert curves["text/plain"].startswith("kernelkit demo: curves of loss, accuracy")
    # interactive=False: one static output holds it all, as before.
    (single,) = finished_outputs(events, interactive=False)
    assert set(single) == {"text/html", "text/plain"}
    assert "<svg" in single["text/html"] and "kk-table" in single["text/html"]


def test_final_outputs_of_20_epochs_are_small_and_complete(tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    events, _ = run_events(20, 50)
    result, curves = finished_outputs(events)
    assert result["text/plain"].startswith("kernelkit demo: finished (20 epochs) - loss ")
    sizes = {key: len(json.dumps(value)) for key, value in [*result.items(), *curves.items()]}
    # Saved as notebook outputs, as Jupyter writes them (JupyterLab adds a PNG
    # snapshot of the figure: tests/browser/test_views_in_lab.py measures that).
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("kernelkit.fit(model, x, y, epochs=20)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=b) for b in (result, curves)]
    nb.cells = [cell]
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    saved = path.stat().st_size
    print(f"\nsizes of a 20-epoch x 50-step result: {sizes}, saved notebook {saved} bytes")
    assert sum(sizes.values()) < 50_000, sizes
    assert saved < 60_000


def test_the_loss_chart_of_a_4_decade_run() -> None:
    events, val_losses = run_events(20, 50, decades=4)
    html = finished_curves(events)["text/html"]
    loss = charts(html)["loss"]

    # A log axis: the y ticks are consecutive decades, equally spaced in pixels.
    y = ticks(loss, "y")
    values = [float(label) for label, _ in y]
    exponents = [math.log10(v) for v in values]
    assert all(math.isclose(e, round(e)) for e in exponents), values
    assert [round(e) for e in exponents] == list(
        range(round(exponents[0]), round(exponents[0]) + len(values))
    )
    assert len(values) >= 4  # the 4 decades are all labelled
    assert evenly_spaced(sorted(p for _, p in y))
    assert "log scale" in "".join(loss.itertext())

    # Whole epochs on x at a round step, from the start of the fit to its end.
    x = ticks(loss, "x")
    assert [int(label) for label, _ in x] == [0, 5, 10, 15, 20]
    assert evenly_spaced([p for _, p in x])

    # The best validation epoch is ringed, on the validation point of that epoch.
    best = min(range(len(val_losses)), key=val_losses.__getitem__)
    assert 0 < best < len(val_losses) - 1  # the fake run bottoms out mid-run
    rings = [c for c in loss.iter(f"{SVG}circle") if c.get("class") == "kk-best"]
    assert len(rings) == 1
    ring = rings[0]
    assert ring.find(f"{SVG}title").text == (
        f"best val_loss {val_losses[best]:.4g} at epoch {best + 1}"
    )
    dots = [
        (c.get("cx"), c.get("cy")) for c in loss.iter(f"{SVG}circle") if c.get("fill") == _svg.VALID
    ]
    assert (ring.get("cx"), ring.get("cy")) == dots[best]

    # The accuracy chart stays linear, with round ticks.
    accuracy = charts(html)["accuracy"]
    assert_round_linear([float(label) for label, _ in ticks(accuracy, "y")])
    assert "log scale" not in "".join(accuracy.itertext())


def test_a_loss_near_zero_gets_no_negative_tick() -> None:
    # One decade only: a linear axis, whose data comes close to 0.
    events, _ = run_events(10, 20, decades=1.5)
    loss = charts(finished_curves(events)["text/html"])["loss"]
    values = [float(label) for label, _ in ticks(loss, "y")]
    assert "log scale" not in "".join(loss.itertext())
    assert_round_linear(values)
    assert values[0] == 0 and min(values) >= 0
    # The lowest tick is the plot's bottom edge: the axis is not padded below it.
    rect = next(loss.iter(f"{SVG}rect"))
    bottom = float(rect.get("y")) + float(rect.get("height"))
    assert math.isclose(ticks(loss, "y")[0][1], bottom + 3, abs_tol=0.1)  # label baseline


def test_legend_names_the_batch_curve_honestly() -> None:
    events, _ = run_events(3, 10)
    html = finished_curves(events)["text/html"]
    legend = html[html.index("kk-curves") : html.index('role="img"')]
    for label in ("running mean (Keras batch logs)", "epoch", "validation", "best validation"):
        assert f"</svg> {label}</span>" in legend
    assert BATCH_LABEL == "running mean (Keras batch logs)"


def mark_xs(svg: ET.Element) -> dict[str, float]:
    """Mark label -> the mark line's x in pixels."""
    found = {}
    for group in svg.iter(f"{SVG}g"):
        if group.get("class") == "kk-mark":
            line = group.find(f"{SVG}line")
            found[group.find(f"{SVG}text").text] = float(line.get("x1"))
    return found


def x_pixel(svg: ET.Element, epoch: float) -> float:
    """Where ``epoch`` (an x value) falls, read from two x ticks."""
    (l0, p0), (l1, p1) = ticks(svg, "x")[:2]
    return p0 + (epoch - float(l0)) / (float(l1) - float(l0)) * (p1 - p0)


def test_early_stopping_resume_and_stop_marks() -> None:
    # Epochs 1-6 done before; the resumed fit runs 7-12 and EarlyStopping ends it.
    earlier, _ = run_events(6, 10)
    _, history = feed(earlier)
    reason = "EarlyStopping: val_loss did not improve for 2 epochs (best 0.05 at epoch 10)"
    events, _ = run_events(12, 10, start=6, resumed_at=6, end=("stopped_by_callback", reason))
    html = finished_curves(events, history)["text/html"]
    loss = charts(html)["loss"]
    marks = mark_xs(loss)
    assert set(marks) == {"resumed", "early stop"}
    assert marks["resumed"] == pytest.approx(x_pixel(loss, 6), abs=0.1)  # epoch 7 begins
    assert marks["early stop"] == pytest.approx(x_pixel(loss, 12), abs=0.1)  # epoch 12 ends
    assert set(mark_xs(charts(html)["accuracy"])) == {"resumed", "early stop"}

    # A stop asked for mid-epoch is marked where it took effect: epoch 3, step 4 of 10.
    events, _ = run_events(
        10, 10, stop_at=(2, 4), end=("stopped_by_user", "stopped by user at epoch 3, step 4")
    )
    loss = charts(finished_curves(events)["text/html"])["loss"]
    assert mark_xs(loss) == {"stop asked": pytest.approx(x_pixel(loss, 2.4), abs=0.1)}
    # The cut epoch's point sits where it stopped, not at an end it never reached.
    circles = loss.iter(f"{SVG}circle")
    epoch_dots = [float(c.get("cx")) for c in circles if c.get("fill") == _svg.TRAIN]
    assert epoch_dots[-1] == pytest.approx(x_pixel(loss, 2.4), abs=0.1)
    assert epoch_dots[-2] == pytest.approx(x_pixel(loss, 2), abs=0.1)


# ------------------------------------------------------------------ the table


def table_rows(html: str) -> list[str]:
    """The first cell of each body row: epoch numbers, '★' for the best, '…' for gaps."""
    body = html[html.index("<tbody") : html.index("</tbody>")]
    return [
        re.sub(r"<[^>]+>", "", row) for row in re.findall(r"<tr[^>]*><td[^>]*>(.*?)</td>", body)
    ]


def test_final_table_keeps_every_epoch_in_a_scrolling_box() -> None:
    events, val_losses = run_events(20, 5)
    html = finished_outputs(events)[0]["text/html"]
    table = html[html.index("kk-table-box") - 12 :]
    style = re.search(r"class='kk-table-box' style='([^']*)'", table).group(1)
    assert "overflow:auto" in style
    height = int(re.search(r"max-height:(\d+)px", style).group(1))
    assert 11 * 16 <= height <= 14 * 18  # about 12 rows of 16-18 px, and the header
    best = min(range(20), key=val_losses.__getitem__) + 1
    assert table_rows(table) == [f"★{e}" if e == best else str(e) for e in range(1, 21)]


def test_live_view_shows_the_last_epochs_and_the_best() -> None:
    events, val_losses = run_events(20, 5)
    best = min(range(20), key=val_losses.__getitem__) + 1
    assert best < 20 - LIVE_ROWS  # not among the last rows by chance
    view = ProgressView(curve_refresh=0.0)
    view.body = SimpleNamespace(value="")  # the widget's HTML, without ipywidgets
    view._handle = FakeHandle()
    view.history.apply(events[0])
    view.state.apply(events[0])
    for event in events[1:-1]:
        view.history.apply(event)
        view._apply(event)
    live = view.body.value

    def gap(n: int) -> str:
        return f"… {n} epoch{'s' if n != 1 else ''}"

    assert table_rows(live) == [
        gap(best - 1), f"★{best}", gap(20 - LIVE_ROWS - best),
        *[str(e) for e in range(21 - LIVE_ROWS, 21)],
    ]  # fmt: skip
    # The live curves are SVG redraws; the plotly figure only comes at the end.
    assert "kk-curves" in live and "<svg" in live and "plotly" not in live
    assert view._handle.updates == []


def test_table_html_without_validation_stars_the_lowest_loss() -> None:
    events, _ = run_events(8, 5, with_validation=False)
    _, history = feed(events)
    html = table_html(history, last=3)
    rows = table_rows(html)
    assert rows[-3:] == ["6", "7", "★8"]  # the loss only falls: the last epoch is best
    assert "lowest loss" in html and "val_loss" not in html


# ------------------------------------------------------------------ the plotly figure


def test_plotly_figure_validates_and_offers_log_and_linear() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    events, val_losses = run_events(20, 50, decades=4)
    fig = finished_curves(events)[PLOTLY]
    json.dumps(fig, allow_nan=False)  # valid JSON: a notebook can save it
    figure = go.Figure({"data": fig["data"], "layout": fig["layout"]})  # raises if invalid
    layout = figure.layout

    scatter = [t for t in figure.data if t.type == "scatter"]
    names = [t.name for t in scatter if t.showlegend]
    # One legend entry per kind: a click toggles that kind in every chart.
    assert sorted(names) == sorted([BATCH_LABEL, "epoch", "validation", "best validation"])
    assert {t.legendgroup for t in scatter} == set(names)

    assert layout.yaxis.type == "log" and layout.yaxis.rangemode == "nonnegative"
    assert layout.yaxis2.type == "linear"  # accuracy
    for axis in (layout.xaxis, layout.xaxis2):
        assert axis.tickmode == "linear" and axis.tick0 == 0 and axis.dtick == 5
    (menu,) = layout.updatemenus
    labels = [b.label for b in menu.buttons]
    assert labels == ["log loss", "linear loss"] and menu.active == 0
    log_args, linear_args = (b.args[0] for b in menu.buttons)
    assert log_args == {"yaxis.type": "log", "yaxis.autorange": True}
    assert linear_args == {"yaxis.type": "linear", "yaxis.autorange": True}

    best = min(range(20), key=val_losses.__getitem__)
    rings = [t for t in figure.data if t.name == "best validation" and t.yaxis == "y"]
    assert rings[0].x == (best + 1,)
    assert rings[0].y[0] == pytest.approx(val_losses[best], rel=1e-4)

    # Curves only, short: the title and table are the HTML output above it, and
    # JupyterLab saves a PNG snapshot as tall as the figure.
    assert not layout.title.text and {t.type for t in figure.data} == {"scatter"}
    assert layout.height <= 260


def test_plotly_marks_and_nan_safe_json() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    events, _ = run_events(
        10, 10, stop_at=(2, 4), end=("stopped_by_user", "stopped by user at epoch 3, step 4")
    )
    # A NaN in the logs must not make the notebook's JSON invalid.
    events.insert(5, ev.Step(epoch=0, step=4, logs={"loss": float("nan")}, time=0.0))
    fig = finished_curves(events)[PLOTLY]
    json.dumps(fig, allow_nan=False)
    figure = go.Figure({"data": fig["data"], "layout": fig["layout"]})
    shapes = [(s.xref, s.x0) for s in figure.layout.shapes]
    assert shapes == [("x", pytest.approx(2.4)), ("x2", pytest.approx(2.4))]
    texts = [a.text for a in figure.layout.annotations]
    assert texts.count("stop asked") == 2


def test_without_plot_no_curves_and_no_figure() -> None:
    events, _ = run_events(3, 5)
    view = ProgressView(plot=False)
    for event in events[:-1]:
        view.history.apply(event)
        view.state.apply(event)
    view._handle = FakeHandle()
    view._display_more = pytest.fail  # type: ignore[method-assign]  # no curves output
    view.handle(events[-1])
    (bundle,) = view._handle.updates
    assert set(bundle) == {"text/html", "text/plain"}
    assert "<svg" not in bundle["text/html"] and "kk-table" in bundle["text/html"]


def test_views_do_not_import_plotly() -> None:
    code = (
        "import sys, kernelkit.views.progress, kernelkit.views._plotly\n"
        "print(any(m.split('.')[0] == 'plotly' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_figure_of_one_chart_uses_the_full_width() -> None:
    chart = _svg.Chart("loss", [_svg.Line([1.0, 2.0], [0.5, 0.25], markers=True)], loss_like=True)
    fig = _plotly.figure([chart])
    assert fig["layout"]["xaxis"]["domain"] == [0, 1]
    assert "updatemenus" in fig["layout"]  # a positive loss can switch to log
    assert fig["layout"]["yaxis"]["type"] == "linear"  # less than two decades


def test_plotly_labels_every_decade_of_a_wide_log_axis() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    events, _ = run_events(20, 50, decades=4)
    figure = go.Figure(finished_curves(events)[PLOTLY])
    assert figure.layout.yaxis.dtick == 1 and figure.layout.yaxis.exponentformat == "e"
    assert figure.layout.yaxis2.type == "linear" and figure.layout.yaxis2.dtick is None


def test_the_previous_run_is_drawn_as_a_faint_ghost_from_this_fits_first_epoch() -> None:
    from kernelkit.ledger import Run
    from kernelkit.views.progress import chart_specs, curves_html

    ghost = Run(
        id=7, model="m", fingerprint="f", started=0.0, ended=1.0, state="finished", reason="",
        config={}, device="default", replicas=1, initial_epoch=0, versions={}, timing={},
        epochs=tuple({"epoch": float(e), "loss": 3.0 - e, "val_loss": 3.5 - e} for e in range(3)),
    )
    # This fit runs Keras epochs 3-5 (initial_epoch=3): the ghost's 3 epochs line up with them.
    events, _ = run_events(6, 10, start=3)
    view = ProgressView()
    view.state.ghost = ghost
    for event in events[:-1]:
        view.history.apply(event)
        view.state.apply(event)
    loss = chart_specs(view.history, view.state)[0]
    ghosts = [line for line in loss.lines if line.label == "previous run (#7)"]
    first = view.history.epoch_series("loss")[0][0]  # where this fit's first epoch is drawn
    assert [list(line.xs) for line in ghosts] == [[first, first + 1, first + 2]] * 2
    assert sorted(list(line.ys) for line in ghosts) == [[3.0, 2.0, 1.0], [3.5, 2.5, 1.5]]
    assert all(line.opacity < 1 and line.color == "#9e9e9e" for line in ghosts)
    assert loss.lines[0].label == "previous run (#7)"  # drawn first: under this run
    assert "</svg> previous run (#7)</span>" in curves_html(view.history, state=view.state)
    view.state.ghost = None  # no previous run: no ghost
    assert not any(
        "previous run" in line.label
        for c in chart_specs(view.history, view.state)
        for line in c.lines
    )
