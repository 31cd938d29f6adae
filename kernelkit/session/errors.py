"""The session's errors, and how a refusal reaches the notebook user.

Every module of the session raises these; this one imports nothing of the
session, so each can.
"""

from __future__ import annotations

import contextlib


class KernelkitError(ValueError):
    """Misuse of kernelkit: one line naming the problem and the fix."""


class FitRefused(KernelkitError):
    """A fit kernelkit refused before Keras started it: nothing changed."""


def refusal(message: str) -> Exception:
    """A refusal as the notebook user should see it: IPython's one-line UsageError in a shell.

    For the calls that stand in for Keras's own (``Model.fit`` in a cell,
    ``NAME.fit``/``evaluate``/``predict``): IPython prints exactly
    ``UsageError`` (not a subclass) as one line. Outside IPython it is a
    :class:`FitRefused`; an explicit ``kernelkit.fit`` always raises that.

    Args:
        message: the one line to show.

    Returns:
        The exception to raise (``from None``).
    """
    shell = None
    with contextlib.suppress(ImportError):
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return FitRefused(message)
    from IPython.core.error import UsageError

    return UsageError(message)
