"""What a panel widget shows where no widget manager runs (saved notebooks, nbval)."""

from __future__ import annotations

from typing import Any


class StaticFallback:
    """Mixin for widget panels: full ``text/plain`` and a static ``text/html``.

    ipywidgets cuts ``text/plain`` at 110 characters and offers no HTML; a
    saved notebook read without a kernel (GitHub, nbviewer, nbconvert) or
    compared by nbval then shows a widget id. Put this mixin before the
    widget class; the panel defines ``__repr__`` and ``static_html``.
    """

    def static_html(self) -> str:
        """The panel as static HTML."""
        raise NotImplementedError

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata)
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
            data["text/html"] = self.static_html()
        return bundle
