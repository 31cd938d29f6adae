"""A pytest plugin: every test's ``Model.fit`` goes through kernelkit, as in a ``%%kmodel`` cell.

Used by ``tests/test_keras_own_fit.py`` to run Keras's own tests (they ship in the
keras wheel) with ``fit`` routed, next to a plain baseline run.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _kernelkit_routes_fit():
    from kernelkit import session

    with session.cell._fits_get_progress():
        yield
