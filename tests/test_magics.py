"""%%kmodel and %kmodel in a real IPython shell whose cells raise."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError

import kernelkit
from kernelkit import session

SETUP = """
import numpy as np, keras, kernelkit
rng = np.random.default_rng(0)
x4 = rng.normal(size=(128, 4)).astype("float32")
y1 = x4.sum(axis=1, keepdims=True)
"""


@pytest.fixture
def shell(ip):
    ip.run_cell_raising(SETUP)
    yield ip
    for name in list(session.registry._REGISTRY):
        session.unregister(name)


def run_magic(shell, line, cell):
    """Runs a %%kmodel cell as IPython does; misuse raises UsageError."""
    return shell.run_cell_magic("kmodel", line, cell)


def test_sequential_list_and_add(shell, capsys):
    run_magic(shell, "seq --no-card", """
seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
seq.add(keras.layers.Dense(1))
seq.compile("sgd", "mse")
seq.fit(x4, y1, epochs=2, batch_size=32)
""")
    model = shell.user_ns["seq"]
    assert kernelkit.get("seq") is model
    assert len(model.history.history["loss"]) == 2
    table = repr(kernelkit.models())
    assert "seq" in table and "Sequential" in table
    assert session.entry_for(model).runs == 1
    out = capsys.readouterr().out
    assert "kernelkit seq: finished (2 epochs)" in out  # the text view outside a kernel


def test_functional_multi_io_dict_inputs_loss_weights(shell):
    run_magic(shell, "fn --no-card", """
a = keras.Input((4,), name="a"); b = keras.Input((2,), name="b")
h = keras.layers.Dense(4, activation="relu")(keras.layers.concatenate([a, b]))
main = keras.layers.Dense(1, name="main")(h); aux = keras.layers.Dense(1, name="aux")(h)
fn = keras.Model({"a": a, "b": b}, {"main": main, "aux": aux})
fn.compile("adam", loss={"main": "mse", "aux": "mse"}, loss_weights={"main": 1.0, "aux": 0.3})
hist = fn.fit({"a": x4, "b": x4[:, :2]}, {"main": y1, "aux": y1 * 2}, epochs=2, batch_size=32)
""")
    hist = shell.user_ns["hist"]
    assert {"loss", "main_loss", "aux_loss"} <= set(hist.history)


def test_subclass_with_training_flag_and_later_fit(shell):
    run_magic(shell, "sub --no-card --seed 3", """
class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(8, activation="relu")
        self.drop = keras.layers.Dropout(0.5)
        self.d2 = keras.layers.Dense(1)
    def call(self, x, training=False):
        return self.d2(self.drop(self.d1(x), training=training))
sub = Net()
sub.compile("adam", "mse")
sub.fit(x4, y1, epochs=1, batch_size=32)
""")
    sub = shell.user_ns["sub"]
    before = session.entry_for(sub).runs
    shell.run_cell_raising("h2 = sub.fit(x4, y1, epochs=2, batch_size=32)")
    assert session.entry_for(sub).runs == before + 1
    assert len(shell.user_ns["h2"].history["loss"]) == 2


def test_seed_reproduces_identical_weights(shell):
    cell = """
rep = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(1)])
rep.compile("sgd", "mse")
"""
    run_magic(shell, "rep --seed 7 --no-card", cell)
    first = [w.copy() for w in shell.user_ns["rep"].get_weights()]
    run_magic(shell, "rep --seed 7 --no-card", cell)
    second = shell.user_ns["rep"].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert list(session.registry._REGISTRY).count("rep") == 1  # replaced cleanly


def test_card_is_returned_with_summary(shell):
    card = run_magic(shell, "carded", """
carded = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="c")
carded.compile("sgd", "mse")
""")
    text = repr(card)
    assert "carded" in text and "10 trainable / 0 non-trainable" in text
    html = card.summary_html()
    assert "<td>d</td>" in html and "Dense" in html and "(None, 2)" in html
    bundle = card._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert repr(shell.run_line_magic("kmodel", "carded")) == text


def expect_usage(shell, line, cell, needle):
    with pytest.raises(UsageError) as info:
        if cell is None:
            shell.run_line_magic("kmodel", line)
        else:
            run_magic(shell, line, cell)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message.strip()
    assert type(info.value) is UsageError  # a subclass would print a traceback
    return message


def test_usage_errors_lose_nothing(shell):
    run_magic(shell, "keep --no-card", """
keep = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
keep.compile("sgd", "mse")
""")
    keep = shell.user_ns["keep"]
    weights = [w.copy() for w in keep.get_weights()]
    good = "keep = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])"
    expect_usage(shell, "keep --bogus", good, "unrecognized arguments: --bogus")
    expect_usage(shell, "", good, "%%kmodel needs a NAME")
    expect_usage(shell, "2fast", good, "is not a valid Python identifier")
    expect_usage(shell, "keep", "other = 1", "the cell did not assign keep")
    expect_usage(shell, "keep", "keep = 42", "keep is a int, not a keras.Model")
    expect_usage(shell, "keep --seed abc", good, "--seed 'abc' is not an integer")
    expect_usage(shell, "keep --strategy warp", good, "warp")
    expect_usage(shell, "keep --strategy tpu", good, "Runtime > Change runtime type")
    expect_usage(shell, "keep --strategy gpu", good, "GPU")
    expect_usage(shell, "keep", "   \n", "cell is empty")
    expect_usage(shell, "nosuchmodel", None, "no model is registered as 'nosuchmodel'")
    # the earlier model under the name, its weights and its registration are intact
    assert shell.user_ns["keep"] is keep
    assert kernelkit.get("keep") is keep
    assert all(np.array_equal(a, b) for a, b in zip(weights, keep.get_weights(), strict=True))


def test_user_code_error_keeps_its_traceback_and_changes_nothing(shell):
    result = shell.run_cell("%%kmodel broken\nbroken = keras.Sequential()\n1 / 0\n")
    assert isinstance(result.error_in_exec, (UsageError, ZeroDivisionError))
    assert "broken" not in session.registry._REGISTRY


def test_help_documents_every_option(shell):
    doc = kernelkit.magics.KernelkitMagics.kmodel.__doc__
    for option in ("--strategy", "--seed", "--deterministic", "--no-card", "--devices",
                   "--workers", "--resume", "--checkpoint", "--tensorboard"):
        assert option in doc


def test_python_api_register_models_card(tiny_model):
    entry = kernelkit.register("api_model", tiny_model)
    try:
        assert kernelkit.get("api_model") is tiny_model
        assert "api_model" in repr(kernelkit.models())
        assert "api_model" in repr(kernelkit.card("api_model"))
        with pytest.raises(TypeError, match=r"kernelkit.register\(\) expects a keras.Model; got"):
            kernelkit.register("bad", object())
        with pytest.raises(ValueError, match="not a valid Python identifier"):
            kernelkit.register("no good", tiny_model)
        assert entry.model.fit.__kernelkit__
    finally:
        kernelkit.unregister("api_model")
    assert "fit" not in tiny_model.__dict__


def test_a_cell_ending_in_fit_shows_the_card_not_the_history(shell, capsys):
    capsys.readouterr()
    result = shell.run_cell(
        "%%kmodel echo\n"
        "echo = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name='echo')\n"
        "echo.compile('sgd', 'mse')\n"
        "echo.fit(x4, y1, epochs=1, batch_size=32)\n"
    )
    result.raise_error()
    out = capsys.readouterr().out
    assert "History" not in out, out  # not echoed by the displayhook
    card = repr(kernelkit.card("echo"))
    assert out.count(card) == 1, out  # the card is the cell's result, shown once
    assert shell.user_ns["echo"].history.history["loss"]  # the fit ran and kept its History


def test_a_cell_ending_in_another_value_still_echoes_it(shell, capsys):
    capsys.readouterr()
    result = shell.run_cell(
        "%%kmodel other --no-card\n"
        "other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
        "other.compile('sgd', 'mse')\n"
        "h = other.fit(x4, y1, epochs=1, batch_size=32)\n"
        "len(h.history['loss']) * 1234\n"
    )
    result.raise_error()
    assert "1234" in capsys.readouterr().out
    assert not any(type(t).__name__ == "_QuietHistory" for t in shell.ast_transformers)
