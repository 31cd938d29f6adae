"""The registered models as a table: what ``%kmodel`` (no arguments) shows.

A view: it renders the registry entries it is given (``text/plain`` and a static
``text/html``) and changes nothing.
"""

from __future__ import annotations

import html
from typing import Any


class ModelTable:
    """The registered models, as ``%kmodel`` shows them."""

    columns = ("name", "class", "parameters", "trainable", "strategy", "runs", "last loss")

    def __init__(self, entries: list[Any]) -> None:
        self.rows = [self._row(e) for e in entries]

    @staticmethod
    def _row(entry: Any) -> tuple[str, ...]:
        model = entry.model
        from ..freezing import parameter_counts

        trainable, frozen = parameter_counts(model)
        total = trainable + frozen
        loss = entry.history.last().get("loss")
        return (
            entry.name,
            type(model).__name__,
            f"{total:,}",
            f"{trainable:,}",
            entry.strategy_text,
            str(entry.runs),
            "" if loss is None else f"{loss:.4g}",
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return "No models registered yet: run a %%kmodel NAME cell or kernelkit.register()."
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in self.rows]
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(repr(self))}</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in self.rows
        )
        return (
            f"<table class='kk-models'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
