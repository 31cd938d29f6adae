"""The catalogue's table: bad inputs and faults a user meets, one row each.

Each row names the shared objects it uses (``setup``), what the user does
(``action``) and the line class the user must see (``expect``):

* :class:`Usage`: a magic; IPython shows exactly one ``UsageError: ...`` line
  (only the user's own traceback may stand above it, when their cell raised);
* :class:`Raises`: a Python call; one exception line of the given class that
  names the fix;
* :class:`Says`: no error; the printed text holds the given words (a queued
  operation, a NaN stop that restored the weights...).

``tests/test_catalogue.py`` runs every row against one shared world of tiny
models and checks that nothing was lost: every model's weights hash,
trainable flags, optimizer iterations, history and registry entry are the
same after the row as before it.

Rows marked ``pending`` describe behaviour that issue 15 asks for and that
lands with the fixes in kernelkit/ (they fail until it does); rows marked
``bug`` are known defects found by the catalogue (strict xfail: they start
failing once fixed, so the mark gets removed).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from IPython.core.error import UsageError

# --- the line classes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """A magic shows one ``UsageError`` line holding ``words`` (a tuple inside: any of them)."""

    words: tuple[Any, ...]
    traceback_above: bool = False  # the user's cell raised: its traceback is shown first
    cell_runs: bool = False  # the error is about the cell, so the cell ran
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Raises:
    """A call raises ``error`` with a one-line message holding ``words``."""

    error: type | tuple[type, ...]
    words: tuple[Any, ...]
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Says:
    """No error; the printed text holds ``words``; the action asserts the rest itself."""

    words: tuple[Any, ...] = ()
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    setup: str  # the shared objects the row uses (see World in test_catalogue.py)
    action: Callable[[Any], Any]  # takes the World; a magic row returns the code to run
    expect: Usage | Raises | Says
    prepare: Callable[[Any], Any] | None = None  # makes files/state before the snapshot
    legs: tuple[str, ...] = ("jax", "tensorflow")  # backends the row applies to
    pending: str = ""  # issue-15 behaviour still being added in kernelkit/
    bug: str = ""  # a defect the catalogue found: strict xfail until fixed
    bug_legs: tuple[str, ...] = ("jax", "tensorflow")  # where the defect shows
    bug_strict: bool = True  # False for a defect that depends on timing


def kk() -> Any:
    import kernelkit

    return kernelkit



# --- the one snapshot helper ------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a user would lose: hashes and values that must not change after a refusal."""

    weights: str  # every weight, BatchNormalization statistics and RNN states included
    optimizer: str  # the optimizer's variables (slots, learning rate) and its identity
    iterations: int | None
    flags: tuple[tuple[str, bool], ...]  # trainable, the model itself and every layer inside
    history: str  # kernelkit's curves and epoch table, and Keras's model.history
    registry: tuple[Any, ...]  # the model's registry entry, and NAME still naming it


def _digest(variables: Any) -> str:
    import keras

    h = hashlib.sha256()
    for v in variables:
        h.update(str(getattr(v, "path", "")).encode())
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()[:16]


def snapshot(model: Any, namespace: dict[str, Any] | None = None) -> Snapshot:
    """Hashes a model's weights, flags, optimizer iterations, history and registry entry."""
    from kernelkit import callback, session

    optimizer = getattr(model, "optimizer", None)
    iterations = None
    if optimizer is not None:
        iterations = int(keras_value(optimizer.iterations))
    ours = callback._HISTORIES.get(model)  # read, never create
    theirs = getattr(model, "history", None)
    history = repr((
        list(ours.rows()) if ours is not None else None,
        (theirs.epoch, sorted(theirs.history.items())) if hasattr(theirs, "history") else None,
    ))
    entry = session.entry_for(model)
    registry: tuple[Any, ...] = ()
    if entry is not None:
        registry = (
            entry.name, entry.runs, entry.last_state, entry.last_summary, entry.auto_reset,
            len(entry.pending), repr(sorted(entry.fit_options.items())), entry.strategy_text,
            namespace.get(entry.name) is model if namespace is not None else None,
        )
    return Snapshot(
        weights=_digest(model.weights),
        optimizer=(
            _digest([v for v in optimizer.variables if v is not optimizer.iterations])
            + f"@{id(optimizer)}"
        ) if optimizer else "",
        iterations=iterations,
        flags=tuple(
            (layer.name, bool(layer.trainable))
            for layer in model._flatten_layers(include_self=True, recursive=True)
        ),
        history=hashlib.sha256(history.encode()).hexdigest()[:16],
        registry=registry,
    )


def keras_value(variable: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(variable)


# --- magic rows ----------------------------------------------------------------------------

#: A cell that would build a model; option rows check that it never ran.
GOOD = """_cat_ran.append(1)
{name} = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
{name}.compile("sgd", "mse")
"""


def _name_of(line: str) -> str:
    first = line.split()[0] if line.split() else ""
    return first if first.isidentifier() and not first.startswith("-") else "cat_new"


def cell(line: str, body: str | None = None) -> Callable[[Any], str]:
    """A ``%%kmodel`` cell: the magic line and a body (default: GOOD, under the line's NAME)."""

    def code(w: Any) -> str:
        text = GOOD.format(name=_name_of(line)) if body is None else body
        return f"%%kmodel {line.format(tmp=w.tmp)}\n{text.format(tmp=w.tmp)}"

    return code


def line(text: str) -> Callable[[Any], str]:
    """A ``%kmodel`` line magic."""
    return lambda w: f"%kmodel {text.format(tmp=w.tmp)}"


ARGPARSE = "see %kmodel? for every option and its values"

MAGIC: list[Case] = [
    Case("magic-unknown-option", "none", cell("cat_new --bogus"),
         Usage(("unrecognized arguments: --bogus", ARGPARSE))),
    Case("magic-unknown-option-on-registered-name", "cat_clf", cell("cat_clf --epochs 3"),
         Usage(("unrecognized arguments: --epochs 3", ARGPARSE))),
    Case("magic-unknown-short-option", "none", cell("cat_new -x"),
         Usage(("unrecognized arguments: -x", ARGPARSE))),
    Case("magic-misspelled-option", "none", cell("cat_new --no_card"),
         Usage(("--no_card", ARGPARSE))),
    Case("magic-bad-int-workers", "none", cell("cat_new --workers abc"),
         Usage(("argument --workers: invalid int value: 'abc'", ARGPARSE))),
    Case("magic-float-workers", "none", cell("cat_new --workers 2.5"),
         Usage(("invalid int value: '2.5'", ARGPARSE))),
    Case("magic-missing-seed", "none", cell("cat_new --seed"),
         Usage(("argument --seed: expected one argument", ARGPARSE))),
    Case("magic-missing-strategy", "none", cell("cat_new --strategy"),
         Usage(("argument --strategy: expected one argument", ARGPARSE))),
    Case("magic-missing-resume", "none", cell("cat_new --resume"),
         Usage(("argument --resume: expected one argument", ARGPARSE))),
    Case("magic-missing-checkpoint", "none", cell("cat_new --checkpoint"),
         Usage(("argument --checkpoint: expected one argument", ARGPARSE))),
    Case("magic-missing-workers", "none", cell("cat_new --workers"),
         Usage(("argument --workers: expected one argument", ARGPARSE))),
    Case("magic-two-names", "none", cell("cat_new other"),
         Usage(("unrecognized arguments: other", ARGPARSE))),
    Case("magic-bad-strategy", "none", cell("cat_new --strategy bogus"),
         Usage(("Unknown strategy 'bogus'", "auto, cpu, gpu, mirrored, tpu"))),
    Case("magic-bad-strategy-on-registered-name", "cat_clf", cell("cat_clf --strategy tpuu"),
         Usage(("Unknown strategy 'tpuu'",))),
    Case("magic-strategy-tpu-without-tpu", "none", cell("cat_new --strategy tpu"),
         Usage(("No TPU", "strategy 'tpu'"))),
    Case("magic-strategy-gpu-without-gpu", "none", cell("cat_new --strategy gpu"),
         Usage(("No GPU", "strategy 'gpu'"))),
    Case("magic-seed-not-int", "none", cell("cat_new --seed abc"),
         Usage(("--seed 'abc' is not an integer", "--seed 42"))),
    Case("magic-seed-float", "none", cell("cat_new --seed 1.5"),
         Usage(("--seed '1.5' is not an integer", "--seed 42"))),
    Case("magic-workers-zero", "none", cell("cat_new --workers 0"),
         Usage(("--workers 0 must be 1 or more",))),
    Case("magic-workers-negative", "cat_clf", cell("cat_clf --workers -2"),
         Usage(("--workers -2 must be 1 or more",))),
    Case("magic-workers-with-resume", "none", cell("cat_new --workers 2 --resume {tmp}/r1"),
         Usage(("--resume cannot run in workers yet", "train without --workers"))),
    Case("magic-workers-with-checkpoint", "none",
         cell("cat_new --workers 2 --checkpoint {tmp}/b.weights.h5"),
         Usage(("--checkpoint cannot run in workers yet",))),
    Case("magic-workers-with-tensorboard", "none", cell("cat_new --workers 2 --tensorboard"),
         Usage(("--tensorboard cannot run in workers yet",))),
    Case("magic-lr-find-with-resume", "none", cell("cat_new --lr-find --resume {tmp}/r2"),
         Usage(("--lr-find trains nothing to resume", "drop --workers, --resume"))),
    Case("magic-lr-find-with-workers", "none", cell("cat_new --lr-find --workers 2"),
         Usage(("--lr-find", "drop --workers"))),
    Case("magic-lr-find-with-tensorboard", "none", cell("cat_new --lr-find --tensorboard"),
         Usage(("--lr-find", "--tensorboard"))),
    Case("magic-name-starts-with-digit", "none", cell("1x"),
         Usage(("'1x' is not a valid Python identifier", "%%kmodel my_model"))),
    Case("magic-name-is-keyword", "none", cell("class"),
         Usage(("'class' is not a valid Python identifier",))),
    Case("magic-name-with-dash", "none", cell("my-model"),
         Usage(("'my-model' is not a valid Python identifier",))),
    Case("magic-cell-without-name", "none", cell(""),
         Usage(("%%kmodel needs a NAME", "%%kmodel clf"))),
    Case("magic-cell-only-options", "none", cell("--seed 1"),
         Usage(("%%kmodel needs a NAME",))),
    Case("magic-empty-cell", "none", cell("cat_new", ""),
         Usage(("cell body is empty", "line magic %kmodel"))),  # IPython's own line
    Case("magic-blank-cell", "cat_clf", cell("cat_clf", "   \n\n  \n"),
         Usage(("the %%kmodel cat_clf cell is empty",))),
    Case("magic-cell-raises", "none", cell("cat_new", "1 / 0\n"),
         Usage(("the %%kmodel cat_new cell raised (traceback above)", "nothing was registered"),
               traceback_above=True, cell_runs=True)),
    Case("magic-cell-raises-name-error", "cat_clf", cell("cat_clf", "undefined_thing\n"),
         Usage(("cell raised (traceback above)",), traceback_above=True, cell_runs=True)),
    Case("magic-cell-syntax-error", "none", cell("cat_new", "cat_new = (\n"),
         Usage(("cell raised (traceback above)",), traceback_above=True, cell_runs=True)),
    Case("magic-cell-keras-error", "none",
         cell("cat_new",
              "cat_new = keras.Sequential([keras.Input((4,)), keras.layers.Dense(-3)])\n"),
         Usage(("cell raised (traceback above)",), traceback_above=True, cell_runs=True)),
    Case("magic-cell-fit-unknown-keyword", "none",
         cell("cat_new", GOOD.format(name="cat_new") + "cat_new.fit(cat_x, cat_y, bogus=1)\n"),
         Usage(("cell raised (traceback above)",), traceback_above=True, cell_runs=True)),
    Case("magic-cell-fit-uncompiled", "none",
         cell("cat_new", "cat_new = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
              "cat_new.fit(cat_x, cat_y, batch_size=8)\n"),
         Usage(("cell raised (traceback above)",), traceback_above=True, cell_runs=True)),
    Case("magic-cell-assigns-nothing", "none", cell("cat_new", "z = 1\n"),
         Usage(("the cell did not assign cat_new", "cat_new = keras.Sequential"), cell_runs=True)),
    Case("magic-cell-leaves-registered-name", "cat_clf", cell("cat_clf", "z = 2\n"),
         Usage(("the cell did not assign cat_clf",), cell_runs=True)),
    Case("magic-cell-assigns-int-to-registered-name", "cat_clf", cell("cat_clf", "cat_clf = 3\n"),
         Usage(("cat_clf is a int, not a keras.Model", "(the earlier model was kept)"),
               cell_runs=True)),
    Case("magic-cell-assigns-layer", "none",
         cell("cat_new", "cat_new = keras.layers.Dense(2)\n"),
         Usage(("cat_new is a Dense, not a keras.Model", "assign the model itself"),
               cell_runs=True)),
    Case("magic-cell-assigns-a-class", "none",
         cell("cat_new", "cat_new = keras.Sequential\n"),
         Usage(("not a keras.Model",), cell_runs=True)),
    Case("magic-checkpoint-bad-suffix", "none", cell("cat_new --checkpoint {tmp}/best.txt"),
         Usage(("must end in .weights.h5 (weights only) or .keras",))),
    Case("magic-checkpoint-parent-is-file", "cat_clf",
         cell("cat_clf --checkpoint {tmp}/a_file/best.weights.h5"),
         Usage(("is a file: pass a directory path",))),
    Case("magic-checkpoint-is-existing-folder", "cat_clf",
         cell("cat_clf --checkpoint {tmp}/folder.weights.h5"),
         Usage(("folder.weights.h5", "name a file")),
         pending="--checkpoint naming an existing folder: one UsageError line before the cell"),
    Case("magic-resume-is-file", "none", cell("cat_new --resume {tmp}/a_file"),
         Usage(("The resume directory", "is a file: pass a directory path"))),
    Case("magic-resume-damaged-backup", "cat_clf", cell("cat_clf --resume {tmp}/damaged"),
         Usage(("damaged", "delete")),
         pending="--resume on a damaged backup: one UsageError line before the cell"),
    # The backup is compared with the model when the cell's fit is about to restore it.
    Case("magic-resume-other-architecture", "cat_clf",
         cell("cat_clf --resume {tmp}/other_arch",
              GOOD.format(name="cat_clf") + "cat_clf.fit(cat_x, cat_y, batch_size=8, verbose=0)\n"),
         Usage(("other_arch", "another architecture", "nothing was restored"), cell_runs=True),
         pending="--resume on another architecture's backup: one UsageError line before the cell"),
    Case("magic-tensorboard-folder-cannot-be-made", "cat_clf", cell("cat_clf --tensorboard"),
         Usage(("runs", "is a file")), prepare=lambda w: w.block_runs_folder(),
         pending="--tensorboard whose folder cannot be made: one UsageError line before the cell"),
    Case("magic-tensorboard-package-missing", "cat_clf", cell("cat_clf --tensorboard"),
         Usage(("--tensorboard needs the tensorboard package", "pip install tensorboard")),
         prepare=lambda w: w.hide("tensorboard")),
    Case("magic-workers-engine-missing", "cat_clf", cell("cat_clf --workers 2"),
         Usage(("JAX", "not installed", "pip install")), prepare=lambda w: w.hide("jax"),
         pending="--workers without its engine (JAX): one UsageError line before the cell"),
    Case("magic-fit-workers-keyword-in-cell", "none",
         cell("cat_new", GOOD.format(name="cat_new") + "cat_new.fit(cat_x, cat_y, workers=2)\n"),
         Usage(("workers= is not a Model.fit argument", "--workers 2", "kernelkit.fit"),
               cell_runs=True)),
    Case("magic-fit-resume-keyword-in-cell", "none",
         cell("cat_new", GOOD.format(name="cat_new")
              + "cat_new.fit(cat_x, cat_y, resume='{tmp}/r3')\n"),
         Usage(("resume= is not a Model.fit argument", "--resume"), cell_runs=True)),
    Case("magic-fit-checkpoint-keyword-in-cell", "none",
         cell("cat_new", GOOD.format(name="cat_new")
              + "cat_new.fit(cat_x, cat_y, checkpoint='b.weights.h5')\n"),
         Usage(("checkpoint= is not a Model.fit argument", "--checkpoint"), cell_runs=True)),
    Case("magic-fit-tensorboard-keyword-in-cell", "none",
         cell("cat_new", GOOD.format(name="cat_new")
              + "cat_new.fit(cat_x, cat_y, tensorboard=True)\n"),
         Usage(("tensorboard= is not a Model.fit argument", "--tensorboard"), cell_runs=True)),
    Case("magic-fit-keras2-use-multiprocessing-in-cell", "none",
         cell("cat_new", GOOD.format(name="cat_new")
              + "cat_new.fit(cat_x, cat_y, workers=4, use_multiprocessing=True)\n"),
         Usage(("workers= is not a Model.fit argument",), cell_runs=True)),
    Case("magic-fit-batch-not-split-over-8-devices", "none",
         cell("cat_new", GOOD.format(name="cat_new")
              + "cat_new.fit(cat_x, cat_y, batch_size=6, verbose=0)\n"),
         Usage(("batch_size 6 does not split evenly", "multiple of 8", "nothing was registered"),
               cell_runs=True),
         legs=("jax",)),
    Case("magic-stateful-fit-shuffles-in-cell", "none",
         cell("cat_new", "cat_new = keras.Sequential([keras.Input(batch_shape=(8, 5, 3)), "
              "keras.layers.LSTM(4, stateful=True, name='lstm'), keras.layers.Dense(1)])\n"
              "cat_new.compile('sgd', 'mse')\n"
              "cat_new.fit(cat_seq_x, cat_seq_y, batch_size=8)\n"),
         Usage(("shuffle=True is Keras's default", "pass shuffle=False"), cell_runs=True)),
    Case("magic-strategy-conflicts-with-users-distribution", "none",
         cell("cat_new --strategy cpu"),
         Usage(("--strategy cpu conflicts with the distribution already in force",
                "set_distribution(None)")),
         prepare=lambda w: w.set_user_distribution(), legs=("jax",)),
]

LINE: list[Case] = [
    Case("line-unknown-name", "cat_clf", line("nosuch"),
         Usage(("no model is registered as 'nosuch'", "cat_clf"))),
    Case("line-bad-identifier", "none", line("1x"),
         Usage(("no model is registered as '1x'",))),
    Case("line-unknown-option", "none", line("--bogus"),
         Usage(("unrecognized arguments: --bogus", ARGPARSE))),
    Case("line-two-names", "cat_clf", line("cat_clf extra"),
         Usage(("unrecognized arguments: extra", ARGPARSE))),
    *[
        Case(f"line-cell-option{option.split()[0][1:]}", "cat_clf", line(f"cat_clf {option}"),
             Usage((f"{option.split()[0]} is a %%kmodel cell option", "%%kmodel cat_clf cell")))
        for option in (
            "--seed 3",
            "--strategy cpu",
            "--workers 2",
            "--resume {tmp}/r4",
            "--checkpoint {tmp}/c.weights.h5",
            "--tensorboard",
            "--no-card",
            "--deterministic",
        )
    ],
    Case("line-cell-option-lr-find", "cat_clf", line("cat_clf --lr-find"),
         Usage(("--lr-find is a %%kmodel cell option",))),
    Case("line-bad-int-on-line-magic", "cat_clf", line("cat_clf --workers x"),
         Usage(("invalid int value: 'x'", ARGPARSE))),
]


# --- public functions ----------------------------------------------------------------------

MODEL_WORDS = (("keras.Model", "Keras model"),)  # any of the two spellings


def _wrong_model(fn: str, call: Callable[[Any, Any], Any], value: Any, shown: str,
                 pending: str = "", error: type = TypeError) -> Case:
    return Case(
        f"{fn}-model-is-{shown}",
        "none",
        lambda w: call(w, value),
        Raises(error, (*MODEL_WORDS, shown)),
        pending=pending,
    )


_PENDING_MODEL = "every public function checks its model argument in one line"

WRONG_MODEL_CALLS: dict[str, tuple[Callable[[Any, Any], Any], str]] = {
    "fit": (lambda w, m: kk().fit(m, w.x, w.y), ""),
    "register": (lambda w, m: kk().register("cat_bad", m), ""),
    "card": (lambda w, m: kk().card(m), ""),
    "freeze": (lambda w, m: kk().freeze(m), ""),
    "unfreeze": (lambda w, m: kk().unfreeze(m), ""),
    "set_trainable": (lambda w, m: kk().set_trainable(m, None, False), ""),
    "recompile": (lambda w, m: kk().recompile(m), ""),
    "freeze_to": (lambda w, m: kk().freeze_to(m, 1), ""),
    "layer_lrs": (lambda w, m: kk().layer_lrs(m, {"d1": 1e-3}), ""),
    "lr_find": (lambda w, m: kk().lr_find(m, w.x, w.y), ""),
    "extract": (lambda w, m: kk().extract(m, w.x), ""),
    "reset_states": (lambda w, m: kk().reset_states(m), _PENDING_MODEL),
    "state_summary": (lambda w, m: kk().state_summary(m), _PENDING_MODEL),
    "load_weights": (lambda w, m: kk().load_weights(m, w.files["good"]), _PENDING_MODEL),
    "to_yaml": (lambda w, m: kk().to_yaml(m), _PENDING_MODEL),
    "FeatureView": (lambda w, m: kk().FeatureView(m), _PENDING_MODEL),
}

FUNCTIONS: list[Case] = [
    *[
        _wrong_model(fn, call, 42, "int", pending)
        for fn, (call, pending) in WRONG_MODEL_CALLS.items()
    ],
    # A registered NAME where the model itself is wanted (card takes names, on purpose).
    *[
        _wrong_model(fn, WRONG_MODEL_CALLS[fn][0], "cat_clf", "str", WRONG_MODEL_CALLS[fn][1])
        for fn in ("freeze", "recompile", "extract", "reset_states", "state_summary", "to_yaml")
    ],
    Case("freeze-model-is-a-layer", "none", lambda w: kk().freeze(w.layer),
         Raises(TypeError, (*MODEL_WORDS, "Dense"))),
    Case("fit-model-is-none", "none", lambda w: kk().fit(None, w.x, w.y),
         Raises(TypeError, (*MODEL_WORDS, "None"))),
    # Layer arguments: every name is checked before any flag changes.
    Case("freeze-unknown-layer", "cat_clf", lambda w: kk().freeze(w.clf, "d3"),
         Raises(ValueError, ("no layer 'd3' in model 'cat_clf'", "closest: 'd2', 'd1'"))),
    Case("freeze-index-out-of-range", "cat_clf", lambda w: kk().freeze(w.clf, 9),
         Raises(ValueError, ("layer index 9 is out of range", "indices 0..1"))),
    Case("freeze-negative-index-out-of-range", "cat_clf", lambda w: kk().freeze(w.clf, -5),
         Raises(ValueError, ("layer index -5 is out of range",))),
    Case("freeze-float-layer", "cat_clf", lambda w: kk().freeze(w.clf, 3.5),
         Raises(TypeError, ("a name, an index", "float"))),
    Case("freeze-bool-layer", "cat_clf", lambda w: kk().freeze(w.clf, True),
         Raises(TypeError, ("bool",))),
    Case("freeze-glob-matches-nothing", "cat_clf", lambda w: kk().freeze(w.clf, "zz*"),
         Raises(ValueError, ("no layer of model 'cat_clf' matches 'zz*'", "layers: d1, d2"))),
    Case("freeze-up-to-matches-several", "cat_clf", lambda w: kk().freeze(w.clf, up_to="d*"),
         Raises(ValueError, ("up_to='d*' must name one layer", "d1, d2"))),
    Case("freeze-layer-of-another-model", "cat_clf", lambda w: kk().freeze(w.clf, w.layer),
         Raises(ValueError, ("is not part of model 'cat_clf'",))),
    Case("freeze-one-good-one-bad-name", "cat_clf", lambda w: kk().freeze(w.clf, ["d1", "d9"]),
         Raises(ValueError, ("no layer 'd9'",))),
    Case("freeze-one-good-one-bad-type", "cat_clf", lambda w: kk().freeze(w.clf, ["d1", 2.0]),
         Raises(TypeError, ("float",))),
    Case("freeze-nested-path-unknown", "nested", lambda w: kk().freeze(w.nested, "base/zz"),
         Raises(ValueError, ("no layer 'base/zz'", "closest"))),
    Case("freeze-dict-layer", "cat_clf", lambda w: kk().freeze(w.clf, {"d1": True}),
         Raises(TypeError, ("dict",))),
    Case("unfreeze-unknown-layer", "plain", lambda w: kk().unfreeze(w.plain, "p3"),
         Raises(ValueError, ("no layer 'p3' in model 'plain'", "closest"))),
    Case("unfreeze-up-to-unknown", "plain", lambda w: kk().unfreeze(w.plain, up_to="zz"),
         Raises(ValueError, ("up_to='zz'", "no layer 'zz'"))),
    Case("set-trainable-flag-is-int", "cat_clf", lambda w: kk().set_trainable(w.clf, "d1", 1),
         Raises(TypeError, ("trainable must be True or False; got 1",))),
    Case("set-trainable-flag-is-str", "cat_clf",
         lambda w: kk().set_trainable(w.clf, "d1", "False"),
         Raises(TypeError, ("trainable must be True or False; got 'False'",))),
    Case("set-trainable-unknown-layer", "plain", lambda w: kk().set_trainable(w.plain, "x", False),
         Raises(ValueError, ("no layer 'x' in model 'plain'",))),
    Case("recompile-bad-optimizer-state", "cat_clf",
         lambda w: kk().recompile(w.clf, optimizer_state="bogus"),
         Raises(ValueError, ("optimizer_state must be 'keep' or 'reset'; got 'bogus'",))),
    Case("recompile-never-compiled", "uncompiled", lambda w: kk().recompile(w.uncompiled),
         Raises(ValueError, ("was never compiled", "call model.compile(...) first"))),
    Case("freeze-to-past-the-end", "cat_clf", lambda w: kk().freeze_to(w.clf, 99),
         Raises(ValueError, ("freeze_to(99): model 'cat_clf' has 2 layers", "use -2..2"))),
    Case("freeze-to-bool", "cat_clf", lambda w: kk().freeze_to(w.clf, True),
         Raises(TypeError, ("freeze_to() takes a layer count or a layer; got a bool",))),
    Case("freeze-to-bad-bn-policy", "cat_clf", lambda w: kk().freeze_to(w.clf, 1, bn="bogus"),
         Raises(ValueError, ("bn='bogus' is not a policy", "frozen, train, inference"))),
    Case("freeze-to-bad-optimizer-state", "cat_clf",
         lambda w: kk().freeze_to(w.clf, 1, optimizer_state="x"),
         Raises(ValueError, ("optimizer_state must be 'keep' or 'reset'",))),
    Case("freeze-to-unknown-layer", "plain", lambda w: kk().freeze_to(w.plain, "zz"),
         Raises(ValueError, ("zz",))),
    Case("layer-lrs-rates-not-a-mapping", "cat_clf", lambda w: kk().layer_lrs(w.clf, ["d1"]),
         Raises(TypeError, ("rates must be a mapping {group: rate}; got list",))),
    Case("layer-lrs-unknown-group", "cat_clf", lambda w: kk().layer_lrs(w.clf, {"zz": 1e-3}),
         Raises(ValueError, ("no layer 'zz' in model 'cat_clf'", "layers: d1, d2"))),
    Case("layer-lrs-bad-optimizer-state", "cat_clf",
         lambda w: kk().layer_lrs(w.clf, {"d1": 1e-3}, optimizer_state="x"),
         Raises(ValueError, ("optimizer_state must be 'keep' or 'reset'",))),
    Case("layer-lrs-negative-rate", "plain", lambda w: kk().layer_lrs(w.plain, {"p1": -1.0}),
         Raises(ValueError, ("-1.0",))),
    Case("layer-lrs-uncompiled", "uncompiled",
         lambda w: kk().layer_lrs(w.uncompiled, {"u1": 1e-3}),
         Raises(ValueError, ("compile",))),
    Case("lr-find-too-few-steps", "cat_clf", lambda w: kk().lr_find(w.clf, w.x, w.y, steps=3),
         Raises(ValueError, ("steps=3 is too few", "at least 10 steps"))),
    Case("lr-find-rates-reversed", "cat_clf",
         lambda w: kk().lr_find(w.clf, w.x, w.y, start_lr=1.0, end_lr=0.1),
         Raises(ValueError, ("the sweep needs 0 < start_lr < end_lr",))),
    Case("lr-find-diverge-not-above-one", "cat_clf",
         lambda w: kk().lr_find(w.clf, w.x, w.y, diverge=1),
         Raises(ValueError, ("diverge=1 must be more than 1",))),
    Case("lr-find-uncompiled", "uncompiled", lambda w: kk().lr_find(w.uncompiled, w.x, w.y),
         Raises(ValueError, ("is not compiled", "compile(optimizer=..., loss=...) first"))),
    Case("lr-find-bad-display", "cat_clf",
         lambda w: kk().lr_find(w.clf, w.x, w.y, display="bogus"),
         Raises(ValueError, ("display='bogus' is not allowed", "auto, widget, text, none"))),
    Case("lr-find-unknown-keyword", "cat_clf", lambda w: kk().lr_find(w.clf, w.x, w.y, bogus=1),
         Raises(TypeError, ("unexpected keyword argument(s): bogus",))),
    Case("lr-find-batch-not-split-over-8-devices", "cat_clf",
         lambda w: kk().lr_find(w.clf, w.x, w.y, batch_size=6),
         Raises(ValueError, ("does not split evenly", "multiple of 8")), legs=("jax",)),
    Case("extract-unknown-layer", "cat_clf", lambda w: kk().extract(w.clf, w.x, "d9"),
         Raises(ValueError, ("model 'cat_clf' has no layer 'd9'", "layer_names(model)"))),
    Case("extract-wrong-input-shape", "cat_clf",
         lambda w: kk().extract(w.clf, np.zeros((8, 5), "float32")),
         Raises(ValueError, ("x has shape (8, 5) but model 'cat_clf' expects (None, 4)",))),
    Case("extract-batch-size-zero", "cat_clf", lambda w: kk().extract(w.clf, w.x, batch_size=0),
         Raises(ValueError, ("batch_size must be a positive int, got 0",))),
    Case("extract-batch-size-bool", "cat_clf",
         lambda w: kk().extract(w.clf, w.x, batch_size=True),
         Raises(ValueError, ("batch_size must be a positive int, got True",))),
    Case("extract-max-samples-zero", "cat_clf",
         lambda w: kk().extract(w.clf, w.x, max_samples=0),
         Raises(ValueError, ("max_samples must be a positive int or None, got 0",))),
    Case("extract-empty-layer-list", "cat_clf", lambda w: kk().extract(w.clf, w.x, []),
         Raises(ValueError, ("layers is empty", "layers=None for every layer"))),
    Case("extract-no-samples", "cat_clf", lambda w: kk().extract(w.clf, w.x[:0]),
         Raises(ValueError, ("x is empty (0 samples)",))),
    Case("extract-unbuilt-model", "unbuilt", lambda w: kk().extract(w.unbuilt, w.x),
         Raises(ValueError, ("has not been built yet", "model(x[:1])"))),
    Case("extract-layer-is-float", "cat_clf", lambda w: kk().extract(w.clf, w.x, 2.5),
         Raises(TypeError, ("float",))),
    Case("reset-states-model-not-stateful", "cat_clf", lambda w: kk().reset_states(w.clf),
         Raises(ValueError, ("has no stateful recurrent layer", "stateful=True"))),
    Case("reset-states-stateless-rnn", "rnn", lambda w: kk().reset_states(w.rnn),
         Raises(ValueError, ("model 'rnn' has no stateful recurrent layer",))),
    Case("reset-states-layers-is-int", "stateful", lambda w: kk().reset_states(w.stateful, 3),
         Raises(TypeError, ("int",), absent=("not iterable",)),
         pending="reset_states(model, 3) names what it expected"),
    Case("reset-states-layer-not-stateful", "stateful",
         lambda w: kk().reset_states(w.stateful, "out"),
         Raises(ValueError, ("layer 'out' is not a stateful recurrent layer", "['lstm']"))),
    Case("reset-states-misspelled-layer", "stateful",
         lambda w: kk().reset_states(w.stateful, "lstmm"),
         Raises(ValueError, ("no stateful layer named 'lstmm'", "closest names: ['lstm']"))),
    Case("reset-states-name-of-wrong-type", "stateful",
         lambda w: kk().reset_states(w.stateful, ["lstm", 3]),
         Raises(TypeError, ("names or paths (str)", "int"))),
    Case("reset-states-layer-object", "stateful",
         lambda w: kk().reset_states(w.stateful, w.stateful.get_layer("lstm")),
         Raises(TypeError, ("LSTM",)),
         pending="reset_states(model, layer) names what it expected"),
    Case("reset-states-callback-bad-every", "none", lambda w: kk().ResetStates(every="bogus"),
         Raises(ValueError, ("every must be one of ['never', 'epoch', 'fit'], got 'bogus'",))),
    Case("live-progress-bad-display", "none", lambda w: kk().LiveProgress(display="bogus"),
         Raises(ValueError, ("LiveProgress(display='bogus') is not allowed",
                             "auto, widget, text, none"))),
    Case("live-progress-refresh-zero", "none", lambda w: kk().LiveProgress(refresh=0),
         Raises(ValueError, ("LiveProgress(refresh=0) is not allowed", "refresh=0.5"))),
    Case("live-progress-refresh-bool", "none", lambda w: kk().LiveProgress(refresh=True),
         Raises(ValueError, ("LiveProgress(refresh=True) is not allowed",))),
    Case("live-progress-plot-str", "none", lambda w: kk().LiveProgress(plot="yes"),
         Raises(ValueError, ("LiveProgress(plot='yes') is not allowed", "True or False"))),
    Case("live-progress-restore-on-nan-int", "none",
         lambda w: kk().LiveProgress(restore_on_nan=1),
         Raises(ValueError, ("LiveProgress(restore_on_nan=1) is not allowed",))),
    Case("live-progress-sink-not-callable", "none", lambda w: kk().LiveProgress(sink=[1]),
         Raises(ValueError, ("takes a callable or a list of callables",))),
    Case("strategy-unknown", "none", lambda w: kk().strategy("bogus"),
         Raises(ValueError, ("Unknown strategy 'bogus'", "auto, cpu, gpu, mirrored, tpu"))),
    Case("strategy-tpu-missing", "none", lambda w: kk().strategy("tpu"),
         Raises(ValueError, ("No TPU", "TPU_NAME"))),
    Case("strategy-spec-not-a-string", "none", lambda w: kk().strategy(42),
         Raises(ValueError, ("Unknown strategy 42", "auto, cpu, gpu, mirrored, tpu"))),
    Case("devices-probe-not-a-probe", "none", lambda w: kk().devices(probe=42),
         Raises(TypeError, ("probe", "int", "FakeProbe"))),
    Case("card-model-is-none", "none", lambda w: kk().card(None),
         Raises(TypeError, (*MODEL_WORDS, "None"))),
    Case("models-takes-no-argument", "cat_clf", lambda w: kk().models("cat_clf"),
         Raises(TypeError, ("models() takes 0 positional arguments",))),
    Case("register-bad-name", "cat_clf", lambda w: kk().register("1x", w.plain),
         Raises(ValueError, ("'1x' is not a valid Python identifier",))),
    Case("register-name-not-str", "cat_clf", lambda w: kk().register(42, w.plain),
         Raises(ValueError, ("42 is not a valid Python identifier",))),
    Case("get-unknown-name", "cat_clf", lambda w: kk().get("nosuch"),
         Raises(KeyError, ("no model is registered as 'nosuch'", "cat_clf"))),
    Case("card-unknown-name", "cat_clf", lambda w: kk().card("nosuch"),
         Raises(KeyError, ("no model is registered as 'nosuch'",))),
    Case("unregister-unknown-name-is-harmless", "cat_clf", lambda w: kk().unregister("nosuch"),
         Says()),
    # fit's own arguments, before Keras starts
    Case("fit-uncompiled", "uncompiled", lambda w: kk().fit(w.uncompiled, w.x, w.y, verbose=0),
         Raises(ValueError, ("You must call `compile()`",))),
    Case("fit-unknown-keyword", "plain", lambda w: kk().fit(w.plain, w.x, w.y, bogus=1),
         Raises(TypeError, ("unexpected keyword argument 'bogus'",))),
    Case("fit-checkpoint-bad-suffix", "plain",
         lambda w: kk().fit(w.plain, w.x, w.y, checkpoint=f"{w.tmp}/b.txt", verbose=0),
         Raises(ValueError, ("must end in .weights.h5",))),
    Case("fit-resume-is-file", "plain",
         lambda w: kk().fit(w.plain, w.x, w.y, resume=f"{w.tmp}/a_file", verbose=0),
         Raises(ValueError, ("is a file: pass a directory path",))),
    Case("fit-resume-damaged-backup", "plain",
         lambda w: kk().fit(w.plain, w.x, w.y, resume=f"{w.tmp}/damaged", verbose=0),
         Raises(ValueError, ("is damaged", "to start the run over"))),
    Case("fit-tensorboard-bad-run-name", "plain",
         lambda w: kk().fit(w.plain, w.x, w.y, tensorboard="a/b", verbose=0),
         Raises(ValueError, ("Run name 'a/b' must be one folder name",))),
    Case("fit-workers-zero", "plain", lambda w: kk().fit(w.plain, w.x, w.y, workers=0),
         Raises(ValueError, ("workers=0 is not allowed", ">= 1"))),
    Case("registered-fit-batch-not-split-over-8-devices", "cat_clf",
         lambda w: w.clf.fit(w.x, w.y, batch_size=12, verbose=0),
         Raises(UsageError, ("batch_size 12 does not split evenly", "multiple of 8")),
         legs=("jax",)),
    Case("registered-predict-batch-not-split-over-8-devices", "cat_clf",
         lambda w: w.clf.predict(w.x, batch_size=6, verbose=0),
         Raises(UsageError, ("cat_clf.predict", "does not split evenly")), legs=("jax",)),
    Case("registered-evaluate-batch-not-split-over-8-devices", "cat_clf",
         lambda w: w.clf.evaluate(w.x, w.y, batch_size=10, verbose=0),
         Raises(UsageError, ("cat_clf.evaluate", "does not split evenly")), legs=("jax",)),
]


# --- stateful-RNN rules --------------------------------------------------------------------


def stateful_fit(**kwargs: Any) -> Callable[[Any], Any]:
    def act(w: Any) -> Any:
        args = dict(kwargs)
        x = w.seq_x[: args.pop("n")] if "n" in args else w.seq_x
        return kk().fit(w.stateful, x, w.seq_y[: len(x)], epochs=1, verbose=0, **args)

    return act


STATEFUL: list[Case] = [
    Case("stateful-fit-shuffles", "stateful", stateful_fit(batch_size=8),
         Raises(ValueError, ("shuffle=True is Keras's default", "pass shuffle=False"))),
    Case("stateful-fit-shuffle-batch", "stateful",
         stateful_fit(batch_size=8, shuffle="batch"),
         Raises(ValueError, ("shuffle='batch'", "pass shuffle=False"))),
    Case("stateful-fit-default-batch-size", "stateful", stateful_fit(shuffle=False),
         Raises(ValueError, ("Keras uses 32", "pass batch_size=8"))),
    Case("stateful-fit-other-batch-size", "stateful", stateful_fit(shuffle=False, batch_size=16),
         Raises(ValueError, ("batch_size=16 differs from the fixed batch size 8", "batch_size=8"))),
    Case("stateful-fit-uneven-samples", "stateful",
         stateful_fit(shuffle=False, batch_size=8, n=20),
         Raises(ValueError, ("x[:16]",))),
    Case("stateful-fit-uneven-validation-split", "stateful",
         stateful_fit(shuffle=False, batch_size=8, validation_split=0.3),
         Raises(ValueError, ("validation_split",))),
    Case("stateful-fit-validation-batch-size", "stateful",
         lambda w: kk().fit(w.stateful, w.seq_x, w.seq_y, batch_size=8, shuffle=False,
                            validation_data=(w.seq_x, w.seq_y), validation_batch_size=4,
                            verbose=0),
         Raises(ValueError, ("validation_batch_size=4 differs", "validation_batch_size=8"))),
    Case("stateful-fit-uneven-validation-data", "stateful",
         lambda w: kk().fit(w.stateful, w.seq_x, w.seq_y, batch_size=8, shuffle=False,
                            validation_data=(w.seq_x[:12], w.seq_y[:12]), verbose=0),
         Raises(ValueError, ("validation_data",))),
    Case("stateful-fit-no-fixed-batch", "stateful_unbatched",
         lambda w: kk().fit(w.stateful_unbatched, w.seq_x, w.seq_y, batch_size=8,
                            shuffle=False, verbose=0),
         Raises(ValueError, ("has no fixed batch size", "batch_shape="))),
    Case("stateful-fit-on-jax-backend", "stateful",
         stateful_fit(shuffle=False, batch_size=8),
         Raises(ValueError, ("drops RNN state updates", "KERAS_BACKEND=tensorflow")),
         legs=("jax",)),
]


# --- weights files and YAML ----------------------------------------------------------------


def load(file: str, **kwargs: Any) -> Callable[[Any], Any]:
    return lambda w: kk().load_weights(w.clf, w.files[file], **kwargs)


WEIGHTS: list[Case] = [
    Case("weights-missing-file", "cat_clf", load("missing"),
         Raises(FileNotFoundError, ("No weights file at", "check the path"))),
    Case("weights-path-is-folder", "cat_clf", load("folder"),
         Raises(IsADirectoryError, ("is a directory", "pass a .weights.h5, .keras or .h5 file"))),
    Case("weights-not-hdf5", "cat_clf", load("text"),
         Raises(ValueError, ("is neither an HDF5 file nor a .keras archive",
                             "pass a .weights.h5, .keras or .h5 file"))),
    Case("weights-json-file", "cat_clf", load("json"),
         Raises(ValueError, ("sharded .weights.json files are read by model.load_weights",))),
    Case("weights-truncated", "cat_clf", load("truncated"),
         Raises(ValueError, ("truncated or damaged", "the model is unchanged", "save")),
         pending="a truncated weights file names the fix"),
    Case("weights-truncated-keras-archive", "cat_clf", load("truncated_keras"),
         Raises(ValueError, (("truncated", "damaged"),))),
    Case("weights-zip-without-weights", "cat_clf", load("zip"),
         Raises(ValueError, ("is a zip file without model.weights.h5",
                             "pass a .keras archive saved with model.save()"))),
    Case("weights-hdf5-without-keras-weights", "cat_clf", load("empty_h5"),
         Raises(ValueError, ("holds no Keras weights", "model.save_weights()"))),
    Case("weights-other-architecture", "cat_clf", load("other"),
         Raises(ValueError, ("do not match the model's shapes, so nothing was loaded",
                             "skip_mismatch=True"))),
    Case("weights-other-architecture-by-name", "cat_clf", load("other", by_name=True),
         Raises(ValueError, ("No layer name is shared", "by_name=False"))),
    Case("weights-more-layers-in-model", "cat_clf", load("short"),
         Raises(ValueError, ("nothing was loaded",))),
    Case("weights-unbuilt-model", "unbuilt",
         lambda w: kk().load_weights(w.unbuilt, w.files["good"]),
         Raises(ValueError, ("is not built", "start it with keras.Input"))),
    Case("weights-path-is-int", "cat_clf", lambda w: kk().load_weights(w.clf, 42),
         Raises(TypeError, ("path", "int")),
         pending="every public function checks its arguments in one line"),
]


def _yaml_with_layer(w: Any, module: str, class_name: str) -> str:
    import yaml

    config = yaml.safe_load(w.yaml)
    layer = config["config"]["layers"][-1]
    layer["module"], layer["class_name"] = module, class_name
    layer.pop("registered_name", None)
    return yaml.safe_dump(config)


def from_yaml(text: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda w: kk().model_from_yaml(text(w))


_NO_DANGER = ("custom_objects",)  # no hint that would build os.system and the like

YAML: list[Case] = [
    Case("yaml-bytes", "none", from_yaml(lambda w: w.yaml.encode()),
         Raises(TypeError, ("model_from_yaml expects YAML text, got bytes",))),
    Case("yaml-none", "none", from_yaml(lambda w: None),
         Raises(TypeError, ("expects YAML text, got NoneType",))),
    Case("yaml-malformed", "none", from_yaml(lambda w: "a: [1, 2"),
         Raises(ValueError, ("Not valid YAML",))),
    Case("yaml-bad-indent", "none", from_yaml(lambda w: "a:\n  b: 1\n c: 2\n"),
         Raises(ValueError, ("Not valid YAML",))),
    Case("yaml-top-level-list", "none", from_yaml(lambda w: "- 1\n- 2\n"),
         Raises(ValueError, ("not a Keras model config", "kernelkit.to_yaml(model)"))),
    Case("yaml-top-level-scalar", "none", from_yaml(lambda w: "42"),
         Raises(ValueError, ("not a Keras model config",))),
    Case("yaml-empty", "none", from_yaml(lambda w: ""),
         Raises(ValueError, ("not a Keras model config",))),
    Case("yaml-missing-config", "none", from_yaml(lambda w: "class_name: Sequential\n"),
         Raises(ValueError, ("it needs 'class_name' and 'config'",))),
    Case("yaml-python-tag-os-system", "none",
         from_yaml(lambda w: "!!python/object/apply:os.system ['echo owned']"),
         Raises(ValueError, ("Refused: the YAML holds a Python tag", "never Python objects"))),
    Case("yaml-python-name-tag", "none", from_yaml(lambda w: "!!python/name:builtins.eval ''"),
         Raises(ValueError, ("Refused: the YAML holds a Python tag",))),
    Case("yaml-a-layer-not-a-model", "none", from_yaml(lambda w: w.layer_yaml),
         Raises(ValueError, ("describes a Dense, not a model", "kernelkit.to_yaml(model)"))),
    Case("yaml-misspelled-layer-class", "none",
         from_yaml(lambda w: _yaml_with_layer(w, "keras.layers", "Dnese")),
         Raises((TypeError, ValueError), ("Dnese", "custom_objects")),
         pending="a misspelled layer class carries kernelkit's hint"),
    Case("yaml-unknown-custom-class", "none",
         from_yaml(lambda w: _yaml_with_layer(w, "mylib.layers", "MyBlock")),
         Raises((TypeError, ValueError), ("MyBlock", "custom_objects={'MyBlock': MyBlock}"))),
    *[
        Case(f"yaml-dangerous-class-{module}-{name}", "none",
             from_yaml(lambda w, m=module, n=name: _yaml_with_layer(w, m, n)),
             Raises((TypeError, ValueError), (name,), absent=_NO_DANGER),
             pending="the unknown-class hint never proposes os, subprocess or builtins")
        for module, name in (("os", "system"), ("subprocess", "Popen"), ("builtins", "eval"))
    ],
    Case("yaml-lambda-bytecode-under-safe-mode", "none", from_yaml(lambda w: w.lambda_yaml),
         Raises(ValueError, ("Refused under safe_mode", "safe_mode=False only if you trust"))),
]


# --- NaN and inf: the fit stops, says which, and puts the last good state back ------------------


def nan_fit(value: float, bad_epoch: int) -> Callable[[Any], Any]:
    """Fits a fresh BatchNormalization model whose targets turn ``value`` in one batch."""

    def act(w: Any) -> Any:
        model, data, marks = w.flaky(value, bad_epoch)
        kept = snapshot(model) if bad_epoch == 0 else None
        kk().fit(model, data, epochs=3, shuffle=False, callbacks=[marks])
        after = snapshot(model)
        good = kept if kept is not None else marks.at_epoch_end[bad_epoch - 1]
        # Weights (BN moving statistics among them), optimizer slots and iterations
        # are those of the last finite state; the model trains on.
        assert (after.weights, after.optimizer, after.iterations) == (
            good.weights, good.optimizer, good.iterations)
        assert np.isfinite(np.concatenate([v.ravel() for v in model.get_weights()])).all()
        return None

    return act


def nan_registered(w: Any) -> Any:
    """NAME.fit of a registered model that meets a NaN: restored, entry failed, still registered."""
    model, _, _ = w.flaky(np.nan, 0)
    kk().register("cat_nan", model)
    try:
        before = snapshot(model)
        bad = np.array(w.y)
        bad[9] = np.nan
        model.fit(w.x, bad, batch_size=8, epochs=2, shuffle=False)
        after = snapshot(model)
        assert (after.weights, after.optimizer, after.iterations, after.flags) == (
            before.weights, before.optimizer, before.iterations, before.flags)
        entry = kk().session.entry_for(model)
        assert entry is not None and entry.name == "cat_nan" and entry.last_state == "failed"
    finally:
        kk().unregister("cat_nan")


def nan_no_restore(w: Any) -> Any:
    model, data, marks = w.flaky(np.nan, 0)
    kk().fit(model, data, epochs=2, shuffle=False,
             callbacks=[marks, kk().LiveProgress(restore_on_nan=False)])
    assert not np.isfinite(np.concatenate([v.ravel() for v in model.get_weights()])).all()


def huge_learning_rate(w: Any) -> Any:
    """The issue's case: a huge learning rate makes every weight non-finite."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=1e12), "mse")
    before = snapshot(model)
    kk().fit(model, w.x * 1e6, w.y, epochs=3, batch_size=8)
    assert snapshot(model).weights == before.weights



#: Under JAX, Keras dispatches batch hooks to a pool of threads when every callback allows
#: it, so step 4's hook can run before step 3's. The inf rows hold LiveProgress to the first
#: non-finite step all the same (the batch logs are running means: once inf, inf or NaN).
NAN: list[Case] = [
    Case("nan-loss-first-epoch", "fresh BN model", nan_fit(np.nan, 0),
         Says(("loss became NaN at epoch 1, step 3 of 8",
               "weights restored to the start of the fit"),
              absent=("loss became inf",))),
    Case("inf-loss-first-epoch", "fresh BN model", nan_fit(1e30, 0),
         Says(("loss became inf at epoch 1, step 3 of 8",
               "weights restored to the start of the fit"),
              absent=("NaN",))),
    Case("nan-loss-second-epoch", "fresh BN model", nan_fit(np.nan, 1),
         Says(("loss became NaN at epoch 2, step 3 of 8",
               "weights restored to the end of epoch 1"))),
    Case("inf-loss-second-epoch", "fresh BN model", nan_fit(1e30, 1),
         Says(("loss became inf at epoch 2, step 3 of 8",
               "weights restored to the end of epoch 1"))),
    Case("nan-loss-registered-model", "fresh registered BN model", nan_registered,
         Says(("kernelkit cat_nan: loss became NaN at epoch 1, step",
               "weights restored to the start of the fit"))),
    Case("nan-loss-restore-opted-out", "fresh BN model", nan_no_restore,
         Says(("loss became NaN at epoch 1",), absent=("restored",))),
    Case("huge-learning-rate", "fresh model", huge_learning_rate,
         Says((("loss became NaN", "loss became inf"),
               "weights restored to the start of the fit"))),
]


# --- model operations during a fit: queued, applied when it ends -------------------------------


def during_fit(operation: Callable[[Any, Any], Any], *, check: Callable[[Any, Any], Any],
               thread: bool = False, stateful: bool = False) -> Callable[[Any], Any]:
    """Calls ``operation(world, model)`` from a callback in step 2 of a fresh model's fit."""

    def act(w: Any) -> Any:
        import keras

        model, x, y, kwargs = w.fresh_for_queue(stateful)
        results: list[Any] = []

        class During(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if batch == 1 and not results:
                    if thread:
                        t = threading.Thread(target=lambda: results.append(operation(w, model)))
                        t.start()
                        t.join()
                    else:
                        results.append(operation(w, model))

        history = kk().fit(model, x, y, epochs=2, callbacks=[During()], **kwargs)
        # The fit ran to its end (nothing lost), and the operation waited for it.
        assert len(history.history["loss"]) == 2
        assert results == [None]
        check(w, model)

    return act


def _frozen(name: str) -> Callable[[Any, Any], Any]:
    def check(w: Any, model: Any) -> None:
        assert model.get_layer(name).trainable is False

    return check


def _card_intent(w: Any) -> Any:
    """The card's own toggle during a fit of a registered model: queued as an intent."""
    import keras

    from kernelkit import intents

    model, x, y, kwargs = w.fresh_for_queue(False)
    entry = kk().register("cat_queue", model)
    try:
        answers: list[bool] = []

        class Toggle(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if batch == 1 and not answers:
                    answers.append(entry.submit(intents.SetTrainable(layers=("q1",),
                                                                     trainable=False)))

        history = kk().fit(model, x, y, epochs=2, callbacks=[Toggle()], **kwargs)
        assert answers == [False] and len(history.history["loss"]) == 2
        assert model.get_layer("q1").trainable is False
    finally:
        kk().unregister("cat_queue")


QUEUED_WORDS = ("queued until the running fit of", "applied")

QUEUED: list[Case] = [
    Case("freeze-during-fit", "fresh model", during_fit(
        lambda w, m: kk().freeze(m, "q1"), check=_frozen("q1")),
        Says(("kernelkit: freeze('q1') queued until the running fit of",
              "kernelkit: applied freeze('q1'), queued while the fit ran"))),
    Case("unfreeze-during-fit", "fresh model", during_fit(
        lambda w, m: kk().unfreeze(m, "q2"), check=lambda w, m: None),
        Says(QUEUED_WORDS)),
    Case("set-trainable-during-fit", "fresh model", during_fit(
        lambda w, m: kk().set_trainable(m, "q1", False), check=_frozen("q1")),
        Says(QUEUED_WORDS)),
    Case("recompile-during-fit", "fresh model", during_fit(
        lambda w, m: kk().recompile(m), check=lambda w, m: None),
        Says(("kernelkit: recompile() queued", "applied recompile()"))),
    Case("load-weights-during-fit", "fresh model", during_fit(
        lambda w, m: kk().load_weights(m, w.files["queue"]),
        check=lambda w, m: w.same_as_queue_file(m)),
        Says(("load_weights(", "queued until the running fit of"))),
    Case("freeze-from-another-thread-during-fit", "fresh model", during_fit(
        lambda w, m: kk().freeze(m, "q1"), check=_frozen("q1"), thread=True),
        Says(QUEUED_WORDS)),
    Case("freeze-to-during-fit", "fresh model", during_fit(
        lambda w, m: kk().freeze_to(m, 1), check=_frozen("q1")),
        Says(QUEUED_WORDS)),
    Case("layer-lrs-during-fit", "fresh model", during_fit(
        lambda w, m: kk().layer_lrs(m, {"q1": 1e-4}), check=lambda w, m: None),
        Says(QUEUED_WORDS)),
    Case("reset-states-during-fit", "fresh stateful model", during_fit(
        lambda w, m: kk().reset_states(m), check=lambda w, m: None, stateful=True),
        Says(("reset_states() queued until the running fit of",)),
        legs=("tensorflow",)),
    Case("card-toggle-during-fit", "fresh registered model", _card_intent, Says()),
]

def _cell_echo(w: Any) -> Any:
    """A cell ending in fit: the cell shows the card, not Keras's History object."""
    try:
        out = w.ip.run_cell("%%kmodel cat_echo --no-card\n"
                            "cat_echo = keras.Sequential([keras.Input((4,)), "
                            "keras.layers.Dense(1)])\n"
                            "cat_echo.compile('sgd', 'mse')\n"
                            "cat_echo.fit(cat_x, cat_y, batch_size=8, verbose=0)\n")
        assert out.success
    finally:
        kk().unregister("cat_echo")
        w.ip.user_ns.pop("cat_echo", None)


CELLS: list[Case] = [
    Case("magic-cell-ending-in-fit-does-not-echo-history", "none", _cell_echo,
         Says(absent=("History at",)),
         pending="%%kmodel does not echo the History of a cell's last fit"),
]


# --- fits that must work as Keras's own, and fits that say what they did -----------------------


def in_cell(body: str, check: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
    """Runs a ``%%kmodel cat_fit`` cell whose fits are routed; ``check`` reads the namespace."""

    def act(w: Any) -> Any:
        head = ("cat_fit = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
                "cat_fit.compile('sgd', 'mse')\n")
        try:
            result = w.ip.run_cell(f"%%kmodel cat_fit --no-card\n{head}{body}")
            assert result.success, result.error_in_exec
            check(w.ip.user_ns)
        finally:
            kk().unregister("cat_fit")
            for name in ("cat_fit", "h", "cat_seen"):
                w.ip.user_ns.pop(name, None)

    return act


def _hand_frozen(w: Any) -> Any:
    """layer.trainable = False by hand, then kernelkit.fit on an unregistered model."""
    model = w.fresh_for_queue(False)[0]
    model.fit(w.x, w.y, batch_size=8, verbose=0)
    model.get_layer("q1").trainable = False
    kept = model.get_layer("q1").get_weights()
    kk().fit(model, w.x, w.y, batch_size=8, verbose=0)
    for a, b in zip(kept, model.get_layer("q1").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _checkpoint_without_validation(w: Any) -> Any:
    import os

    model = w.fresh_for_queue(False)[0]
    path = os.path.join(w.tmp, "no_val", "best.weights.h5")
    kk().fit(model, w.x, w.y, batch_size=8, epochs=2, verbose=0, checkpoint=path)
    assert os.path.exists(path)  # it does what it says: the lowest training loss is kept


def _failed_fit_line(w: Any) -> Any:
    import pytest

    model = w.fresh_for_queue(False)[0]
    model.fit(w.x, w.y, batch_size=8, verbose=0)  # built: the failure comes inside the fit
    # Keras raises ValueError (JAX) or InvalidArgumentError (TensorFlow's traced step).
    with pytest.raises(Exception):  # noqa: B017 - the class differs by backend
        kk().fit(model, np.zeros((8, 5), "float32"), w.y[:8], batch_size=8)


FITS: list[Case] = [
    Case("fit-positional-arguments-in-cell", "fresh model in a cell",
         in_cell("h = cat_fit.fit(cat_x, cat_y, 8, 2, 0)\n",
                 lambda ns: len(ns["h"].history["loss"]) == 2 or _fail(ns["h"].history)),
         Says(absent=("Epoch 1/2",))),
    Case("fit-single-callback-in-cell", "fresh model in a cell",
         in_cell("h = cat_fit.fit(cat_x, cat_y, batch_size=8, epochs=2, verbose=0, "
                 "callbacks=keras.callbacks.History())\n",
                 lambda ns: len(ns["h"].history["loss"]) == 2 or _fail(ns["h"])),
         Says()),
    Case("fit-callback-list-in-cell", "fresh model in a cell",
         in_cell("cb = keras.callbacks.CallbackList([keras.callbacks.History()], model=cat_fit)\n"
                 "h = cat_fit.fit(cat_x, cat_y, batch_size=8, epochs=2, verbose=0, callbacks=cb)\n",
                 lambda ns: True),
         Says()),
    Case("fit-stop-asked-in-on-train-begin-in-cell", "fresh model in a cell",
         in_cell("class Stop(keras.callbacks.Callback):\n"
                 "    def on_train_begin(self, logs=None):\n"
                 "        self.model.stop_training = True\n"
                 "h = cat_fit.fit(cat_x, cat_y, batch_size=8, epochs=3, verbose=0, "
                 "callbacks=[Stop()])\n",
                 lambda ns: len(ns["h"].history["loss"]) == 1 or _fail(ns["h"].history)),
         Says()),
    Case("fit-override-runs-once-in-cell", "fresh subclass in a cell",
         in_cell("cat_seen = []\n"
                 "class Mine(keras.Sequential):\n"
                 "    def fit(self, *args, **kwargs):\n"
                 "        cat_seen.append(1)\n"
                 "        return super().fit(*args, **kwargs)\n"
                 "cat_fit = Mine([keras.Input((4,)), keras.layers.Dense(1)])\n"
                 "cat_fit.compile('sgd', 'mse')\n"
                 "h = cat_fit.fit(cat_x, cat_y, batch_size=8, verbose=0)\n",
                 lambda ns: ns["cat_seen"] == [1] or _fail(ns["cat_seen"])),
         Says()),
    Case("fit-signature-is-keras-in-cell", "fresh model in a cell",
         in_cell("import inspect\n"
                 "cat_seen = str(inspect.signature(keras.Model.fit))\n",
                 lambda ns: "batch_size" in ns["cat_seen"] or _fail(ns["cat_seen"])),
         Says()),
    Case("fit-verbose-0-is-quiet-in-cell", "fresh model in a cell",
         in_cell("h = cat_fit.fit(cat_x, cat_y, batch_size=8, epochs=2, verbose=0)\n",
                 lambda ns: True),
         Says(absent=("Epoch", "finished"))),
    Case("fit-early-stopping-on-a-shape-1-metric-in-cell", "fresh model in a cell",
         in_cell("cat_fit = keras.Sequential([keras.Input((4,)), "
                 "keras.layers.Dense(1, activation='sigmoid')])\n"
                 "cat_fit.compile('sgd', 'binary_crossentropy',\n"
                 "                metrics=[keras.metrics.F1Score()])\n"
                 "stop = keras.callbacks.EarlyStopping(monitor='f1_score', mode='max',\n"
                 "                                     patience=0, min_delta=1e9)\n"
                 "h = cat_fit.fit(cat_x, (cat_y > 0).astype('float32'), batch_size=8, epochs=3, "
                 "callbacks=[stop])\n",
                 lambda ns: len(ns["h"].history["loss"]) == 2 or _fail(ns["h"].history)),
         Says(("EarlyStopping: f1_score did not improve",))),
    Case("fit-hand-set-trainable-unregistered", "fresh model", _hand_frozen,
         Says(("kernelkit: recompiled", "because 1 layer changed trainable (q1 frozen)"))),
    Case("fit-checkpoint-without-validation-data", "fresh model", _checkpoint_without_validation,
         Says(("no validation data", "lowest training loss", "validation_split"),
              absent=("Can save best model only with val_loss available",))),
    Case("fit-failed-line-carries-the-reason", "fresh model", _failed_fit_line,
         Says(("ValueError: Input 0", "is incompatible with the layer"),
              absent=("Exception encountered when calling",)), legs=("jax",)),
    Case("fit-failed-line-carries-the-reason-tf", "fresh model", _failed_fit_line,
         Says(("Matrix size-incompatible",), absent=("Graph execution error (",)),
         legs=("tensorflow",)),
]


def _fail(value: Any) -> bool:
    raise AssertionError(value)


#: Every row, in catalogue order.
CASES: list[Case] = [
    *MAGIC, *CELLS, *LINE, *FUNCTIONS, *STATEFUL, *WEIGHTS, *YAML, *NAN, *QUEUED, *FITS,
]

assert len({c.id for c in CASES}) == len(CASES), "row ids are unique"
