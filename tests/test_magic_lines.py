"""Bad magic lines: one UsageError line that names the problem and the fix."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "clf --bogus",
            "%kmodel: unrecognized arguments: --bogus; see %kmodel? for every option and its "
            "values",
        ),
        (
            "clf --workers abc",
            "%kmodel: argument --workers: invalid int value: 'abc'; see %kmodel? for every option "
            "and its values",
        ),
        (
            "clf --seed",
            "%kmodel: argument --seed: expected one argument; see %kmodel? for every option and "
            "its values",
        ),
    ],
)
def test_argparse_errors_name_the_fix(ip, line, expected):
    ip.user_ns["ran"] = False
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("kmodel", line, "ran = True\n")
    assert str(err.value) == expected
    assert ip.user_ns["ran"] is False


@pytest.mark.parametrize("option", ["--seed 3", "--strategy cpu", "--tensorboard", "--no-card"])
def test_the_line_magic_refuses_cell_options(ip, option):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("kmodel", f"clf {option}")
    flag = option.split()[0]
    assert str(err.value) == (
        f"{flag} is a %%kmodel cell option, which the line magic does not use: put it on a "
        "%%kmodel clf cell (the line magic takes NAME or --devices)"
    )
