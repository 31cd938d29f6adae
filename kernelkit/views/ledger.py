"""Runs from the ledger, in the notebook: a table of a model's runs and their curves overlaid.

Both are plain objects with a ``text/plain`` and a static ``text/html``, so a
saved notebook shows them in GitHub, nbviewer and nbconvert with no kernel and
no server. In a live kernel the table also comes as a widget that sorts by
any column (``RunTable.sorter``); the static HTML stays in the same output for
every reader without widgets. The data comes from :mod:`kernelkit.ledger`;
nothing here writes.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .. import ledger as _ledger
from ..status import format_duration, format_value
from . import _svg
from .progress import _swatch, in_notebook_kernel, metric_goal

#: One colour per run, in the order chosen (matplotlib's tab10, most distinct first).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_STATE_WORD = {
    "finished": "finished",
    "stopped_by_user": "stopped",
    "stopped_by_callback": "stopped early",
    "failed": "failed",
    "running": "running",
    "interrupted": "interrupted",
}


def _best(run: _ledger.Run, metric: str) -> float | None:
    goal = metric_goal(metric)
    values = [
        float(r[metric])
        for r in run.epochs
        if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
    ]
    if not values or goal is None:
        return None
    return min(values) if goal == "min" else max(values)


def _metric_names(runs: Sequence[_ledger.Run]) -> list[str]:
    """The metrics the runs recorded per epoch, in the order first seen."""
    names: dict[str, None] = {}
    for run in runs:
        for row in run.epochs:
            names.update((k, None) for k in row if k not in ("epoch", "learning_rate"))
    return list(names)


def _when(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(started))


def _rate(run: _ledger.Run) -> str:
    rate = run.learning_rate
    return f"{rate:.3g}" if rate is not None else "schedule" if run.config.get("compile") else ""


class RunTable(Sequence[_ledger.Run]):
    """A model's runs as a table: one row per fit, oldest first.

    Index it, iterate it or ``sort`` it like a list of :class:`kernelkit.ledger.Run`.

    Args:
        runs: the runs to show.
        title: what they are the runs of.
    """

    def __init__(self, runs: Sequence[_ledger.Run], title: str = "") -> None:
        self.runs = list(runs)
        self.title = title

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return RunTable(self.runs[index], self.title)
        return self.runs[index]

    def __iter__(self) -> Iterator[_ledger.Run]:
        return iter(self.runs)

    def sort(self, by: str = "id", *, reverse: bool = False) -> RunTable:
        """A new table of these runs, sorted by one column; runs without that value go last.

        Args:
            by: "id", "started", "state", "model", "epochs", a metric's best
                ("val_loss") or a recorded setting ("learning_rate").
            reverse: largest first.

        Returns:
            A new :class:`RunTable` with the same title.
        """

        def key(run: _ledger.Run) -> tuple[bool, Any]:
            value: Any
            if by in ("id", "started", "state", "model"):
                value = getattr(run, by)
            elif by == "epochs":
                value = len(run.epochs)
            elif by == "learning_rate":
                value = run.learning_rate
            else:
                value = _best(run, by)
            return (value is None, value if value is not None else 0)

        # Runs without the value go last in either order.
        have = [r for r in self.runs if not key(r)[0]]
        lack = [r for r in self.runs if key(r)[0]]
        return RunTable([*sorted(have, key=key, reverse=reverse), *lack], self.title)

    def sort_choices(self) -> list[tuple[str, str]]:
        """The columns the table sorts by: (label, ``sort``'s key), as the sorter offers them."""
        choices = [("run", "id"), ("epochs", "epochs"), ("lr", "learning_rate")]
        choices += [(f"best {m}", m) for m in self._metrics()]
        return choices

    def sorter(self) -> Any:
        """The table as a live widget: a column to sort by and the order, above the table.

        Choosing a metric puts its best runs first (lowest loss, highest
        accuracy); "reversed" flips the order. Sorting is the view's own
        state: nothing is written, and the static ``text/html`` of the output
        keeps the recorded order.
        """
        import ipywidgets as w

        by = w.Dropdown(
            options=self.sort_choices(),
            value="id",
            description="sort by",
            layout=w.Layout(width="240px"),
        )
        flip = w.ToggleButton(value=False, description="reversed", layout=w.Layout(width="90px"))
        shown = w.HTML(self._repr_html_())

        def redraw(_change: Any = None) -> None:
            key = by.value
            best_first = metric_goal(key) == "max"  # highest accuracy first; lowest loss first
            shown.value = self.sort(key, reverse=best_first != flip.value)._repr_html_()

        by.observe(redraw, names="value")
        flip.observe(redraw, names="value")
        return w.VBox([w.HBox([by, flip]), shown])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if len(self.runs) > 1 and in_notebook_kernel():
            try:
                widget = self.sorter()
            except ImportError:  # no ipywidgets: the static table is the whole output
                return bundle
            # The widget where a front end renders widgets, the static table everywhere else
            # (and in the saved notebook).
            bundle.update(
                {k: v for k, v in widget._repr_mimebundle_().items() if k != "text/plain"}
            )
        return bundle

    # --- columns ---------------------------------------------------------------------------

    def _metrics(self) -> list[str]:
        names = _metric_names(self.runs)
        # Losses first, then the rest, each with its validation value beside it.
        base = [n for n in names if not n.startswith("val_")]
        base.sort(key=lambda n: (n != "loss", names.index(n)))
        ordered = []
        for n in base:
            ordered.append(n)
            if f"val_{n}" in names:
                ordered.append(f"val_{n}")
        return ordered[:6]

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        metrics = self._metrics()
        head = ["run", "started", "state", "epochs", "lr", *[f"best {m}" for m in metrics]]
        head += ["wall", "steps/s", "on"]
        rows = []
        for run in self.runs:
            timing = run.timing
            speed = timing.get("steps_per_second")
            cells = [
                f"#{run.id}",
                _when(run.started),
                _STATE_WORD.get(run.state, run.state),
                str(len(run.epochs)),
                _rate(run),
                *[
                    format_value(v) if (v := _best(run, m)) is not None else ""
                    for m in metrics
                ],
                format_duration(timing.get("wall")) if "wall" in timing else "",
                f"{speed:.1f}" if isinstance(speed, (int, float)) else "",
                run.device,
            ]
            rows.append(cells)
        return head, rows

    # --- output ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        if not self.runs:
            return f"no runs recorded{' for ' + self.title if self.title else ''} yet"
        head, rows = self._rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines = [f"runs of {self.title}" if self.title else "runs"]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.runs:
            return (
                "<div style='font-family:sans-serif;font-size:12px'>"
                f"{html.escape(repr(self))}</div>"
            )
        head, rows = self._rows()
        pad = "padding:1px 8px"
        th = "".join(f"<th style='{pad};text-align:left'>{html.escape(h)}</th>" for h in head)
        body = []
        for run, cells in zip(self.runs, rows, strict=True):
            reason = html.escape(run.reason, quote=True)
            # The state cell (column 2) carries the end reason as its tooltip.
            tds = "".join(
                f"<td style='{pad}'"
                f"{f' title={chr(39)}{reason}{chr(39)}' if i == 2 and reason else ''}>"
                f"{html.escape(c)}</td>"
                for i, c in enumerate(cells)
            )
            body.append(f"<tr>{tds}</tr>")
        title = html.escape(f"runs of {self.title}" if self.title else "runs")
        return (
            "<div class='kk-runs' style='font-family:sans-serif;font-size:12px'>"
            f"<div style='font-weight:600;margin:2px 0'>{title}</div>"
            "<div style='max-height:212px;overflow:auto;display:inline-block;max-width:100%'>"
            "<table style='border-collapse:collapse'>"
            f"<thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div></div>"
        )


class Comparison:
    """Chosen runs' curves overlaid: one chart per metric, one colour per run.

    Args:
        runs: the runs, in legend order.
        metrics: the metrics to draw (default: loss, val_loss and the first other metric).
    """

    def __init__(self, runs: Sequence[_ledger.Run], metrics: Sequence[str] | None = None) -> None:
        self.runs = list(runs)
        self.metrics = list(metrics) if metrics is not None else self._default_metrics()

    def _default_metrics(self) -> list[str]:
        seen = _metric_names(self.runs)
        chosen = [m for m in ("loss", "val_loss") if m in seen]
        others = [m for m in seen if m not in chosen]
        return chosen + others[:2]

    def _label(self, run: _ledger.Run) -> str:
        rate = _rate(run)
        return f"#{run.id}" + (f" lr {rate}" if rate else "")

    def charts(self) -> list[_svg.Chart]:
        """The charts, one per metric; x is the absolute epoch (1-based), as the live view's."""
        charts = []
        for metric in self.metrics:
            lines = []
            for i, run in enumerate(self.runs):
                color = PALETTE[i % len(PALETTE)]
                points = [
                    (row["epoch"] + 1.0, float(row[metric]))
                    for row in run.epochs
                    if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    lines.append(
                        _svg.Line(list(xs), list(ys), color, self._label(run), 1.5, 1.0, True)
                    )
            if not lines:
                continue
            loss_like = metric_goal(metric) == "min"
            finite = [y for line in lines for y in line.ys if y > 0]
            log_y = bool(loss_like and finite and max(finite) / min(finite) > 100.0)
            charts.append(_svg.Chart(metric, lines, log_y=log_y, loss_like=loss_like))
        return charts

    def __repr__(self) -> str:
        if not self.runs:
            return "no runs to compare"
        lines = [f"{len(self.runs)} runs compared: {', '.join(self.metrics) or 'no metrics'}"]
        for run in self.runs:
            finals = " · ".join(
                f"{m} {format_value(v)}" for m in self.metrics if (v := run.final(m)) is not None
            )
            lines.append(f"{self._label(run)}: {_STATE_WORD.get(run.state, run.state)}; {finals}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        charts = self.charts()
        if not charts:
            return (
                "<div style='font-family:sans-serif;font-size:12px'>"
                f"{html.escape(repr(self))}</div>"
            )
        legend = "".join(
            f"<span>{_swatch(PALETTE[i % len(PALETTE)], dot=True)} "
            f"{html.escape(self._label(run))}</span>"
            for i, run in enumerate(self.runs)
        )
        return (
            "<div class='kk-compare' style='font-family:sans-serif;font-size:11px'>"
            "<div style='color:#444;display:flex;flex-wrap:wrap;gap:2px 12px;margin:2px 0'>"
            f"{legend}</div><div style='display:flex;flex-wrap:wrap;gap:6px'>"
            + "".join(f"<div>{_svg.line_chart(c)}</div>" for c in charts)
            + "</div></div>"
        )


def runs(name: str | None = None, which: Any = None) -> RunTable:
    """The recorded runs of ``name`` (every model's when None) as a table.

    See ``kernelkit.runs``.
    """
    found = _ledger.Ledger().runs(name)
    return RunTable(_ledger.select(found, which), name or "")


def compare(
    name: str | RunTable | None = None, which: Any = None, metrics: Sequence[str] | None = None
) -> Comparison:
    """Chosen runs overlaid; see ``kernelkit.compare``."""
    if isinstance(name, RunTable):
        return Comparison(_ledger.select(name.runs, which), metrics)
    return Comparison(runs(name, which).runs, metrics)


def tab(model: Any, submit: Any, entry: Any = None) -> Any:
    """The card's Runs tab: the model's recorded runs and the last few overlaid."""
    import ipywidgets as w

    if entry is None:
        return None
    try:
        table = runs(entry.name)
    except _ledger.LedgerError as err:
        return w.HTML(f"<i>{html.escape(str(err))}</i>")
    if not len(table):
        return None
    latest = Comparison(table.runs[-5:])
    note = (
        "<div style='font-family:sans-serif;font-size:11px;color:#666;margin-top:4px'>"
        f"the last {len(latest.runs)} of {len(table)} runs overlaid; "
        f"kernelkit.compare({entry.name!r}, which=[...]) chooses others</div>"
    )
    chart = w.HTML(latest._repr_html_() + note)
    head = table.sorter() if len(table) > 1 else w.HTML(table._repr_html_())
    return w.VBox([head, chart])
