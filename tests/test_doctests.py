"""The docstring examples of the pure modules run, so they stay true.

Modules whose examples need a trained model or a notebook keep ``+SKIP`` on
those lines; every example here runs as written.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

PURE = [
    "kernelkit.data",
    "kernelkit.display",
    "kernelkit.reporting",
    "kernelkit.status",
    "kernelkit.strategy",
    "kernelkit.devices",
    "kernelkit.ledger",
    "kernelkit.freezing",
    "kernelkit.transport.labcomm",
    "kernelkit.views._svg",
]


@pytest.mark.parametrize("name", PURE)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    failed, tried = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True
    )
    assert tried > 0, f"{name} has no examples left to run"
    assert failed == 0, f"{failed} of {tried} examples in {name} failed (printed above)"
