"""Weights by position or by layer name, with a report; model configs as YAML.

Keras 3 refuses ``load_weights(by_name=True)`` for ``.weights.h5`` and
``.keras`` files ("`by_name` only supports loading legacy '.h5' or '.hdf5'
files", ``keras/src/saving/saving_api.py``; keras-team/keras#21404, #21676)
and dropped ``to_yaml``/``model_from_yaml``. This module brings both back:

* :func:`load_weights` reads Keras 3 ``.weights.h5`` files, ``.keras``
  archives and legacy Keras 2 ``.h5`` files, matches layers by position or
  by name (layers of nested models included) and returns a
  :class:`LoadReport`. It is atomic: it checks every layer before it changes
  anything, and puts every weight back if Keras fails half-way.
* :func:`to_yaml` and :func:`model_from_yaml` write and read the model's
  ``get_config()`` with ``yaml.safe_dump`` / ``yaml.safe_load``: no Python
  tags, nothing unpickled.

No UI imports here: the magic and the card print the report.

How the Keras 3 formats are matched. Keras 3 stores each object's variables
under a path built from the object tree (``layers/dense/vars/0``,
``layers/sequential/layers/dense_1/vars/1``) and, in recent releases, the layer's name
as the ``name`` attribute of its ``vars`` group. To load into the model we ask
Keras for the model's own layout (``model.save_weights`` to a scratch file),
copy the matching layers' datasets from the source file into it, and hand the
result back to ``model.load_weights``. Keras itself then assigns every
variable, so quantized, LoRA or composite layers load exactly as Keras loads
them, and the layers we did not match get their own values back unchanged.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import h5py
import keras
import numpy as np
import yaml

from ._fitting import queued_during_fit
from .freezing import _a, check_model

PathLike = Union[str, "os.PathLike[str]"]
Shape = tuple[int, ...]

__all__ = [
    "LayerMismatch",
    "LoadReport",
    "load_weights",
    "model_from_yaml",
    "to_yaml",
]

# Where a .keras archive keeps its weights (keras/src/saving/saving_lib.py).
_ARCHIVE_WEIGHTS = "model.weights.h5"
_FORMAT_NAMES = {
    "keras": "Keras 3 weights",
    "archive": ".keras archive",
    "legacy": "legacy Keras 2 HDF5",
}


# --------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class LayerMismatch:
    """A layer present on both sides whose weight shapes differ.

    Attributes:
        name: the layer's name (``outer/inner`` for a layer of a nested model).
        file_shapes: the shapes stored in the file, in order.
        model_shapes: the shapes of the model's weights, in order.

    """

    name: str
    file_shapes: tuple[Shape, ...]
    model_shapes: tuple[Shape, ...]

    def __str__(self) -> str:
        return (
            f"{self.name} (file {_shapes_text(self.file_shapes)}, "
            f"model {_shapes_text(self.model_shapes)})"
        )


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        path: the file that was read.
        format: ``"keras"`` (``.weights.h5``), ``"archive"`` (``.keras``) or
            ``"legacy"`` (Keras 2 style ``.h5``).
        by_name: whether layers were matched by name (else by position).
        loaded: layers that received the file's weights.
        not_in_file: model layers the file has no weights for (kept their own).
        not_in_model: file layers the model has no layer for (ignored).
        mismatched: layers on both sides with different shapes (kept their own;
            only non-empty when ``skip_mismatch=True``).

    """

    path: str
    format: str
    by_name: bool
    loaded: tuple[str, ...] = ()
    not_in_file: tuple[str, ...] = ()
    not_in_model: tuple[str, ...] = ()
    mismatched: tuple[LayerMismatch, ...] = field(default=())

    @property
    def skipped(self) -> tuple[str, ...]:
        """Every layer that was not loaded, whatever the reason."""
        return self.not_in_file + self.not_in_model + tuple(m.name for m in self.mismatched)

    def __str__(self) -> str:
        how = "by name" if self.by_name else "by position"
        layers = "layer" if len(self.loaded) == 1 else "layers"
        lines = [
            f"Loaded {len(self.loaded)} {layers} {how} from {self.path} "
            f"({_FORMAT_NAMES.get(self.format, self.format)}): {_names(self.loaded)}"
        ]
        if self.not_in_file:
            lines.append(f"Not in the file (kept their weights): {_names(self.not_in_file)}")
        if self.not_in_model:
            lines.append(f"In the file but not in the model: {_names(self.not_in_model)}")
        if self.mismatched:
            lines.append(
                "Shape mismatch (kept their weights): " + "; ".join(str(m) for m in self.mismatched)
            )
        return "\n".join(lines)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _shapes_text(shapes: Sequence[Shape]) -> str:
    if not shapes:
        return "no weights"
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


# --------------------------------------------------------------------------
# Public API


@queued_during_fit
def load_weights(
    model: keras.Model,
    path: PathLike,
    *,
    by_name: bool = False,
    skip_mismatch: bool = False,
) -> LoadReport:
    """Load weights into ``model`` by position or by layer name; all or nothing.

    The format is read from the file's content, not its suffix: a Keras 3
    ``.weights.h5`` file, a ``.keras`` archive (only its weights are read; its
    config is never deserialized, so no code from the file runs), or a legacy
    Keras 2 HDF5 file (``save_weights("x.h5")`` or ``model.save("x.h5")``).

    By position, Keras 3 files match the model layer by layer through Keras's
    own object paths, and legacy files match the model's layers that have
    weights, in order. By name, each model layer takes the weights of the
    file's layer with the same name; layers of nested models are matched by
    their own names (``base/conv`` first, then ``conv`` when that name is
    unique on both sides).

    Args:
        model: a built Keras model (``keras.Input`` or one call on data).
        path: the weights file.
        by_name: match layers by name instead of by position. Layers missing
            from either side are skipped and listed in the report.
        skip_mismatch: skip layers whose shapes differ instead of raising.

    Returns:
        A :class:`LoadReport`: the layers loaded, the layers skipped because
        the file or the model lacks them, and the mismatched layers.

    Raises:
        TypeError: ``model`` is not a Keras model, or ``path`` is not a path.
        FileNotFoundError: there is no file at ``path``.
        IsADirectoryError: ``path`` is a directory.
        ValueError: the model is not built; the file is not a Keras weights
            file or is damaged (truncated: the line says to save it again or
            use another copy); the architecture differs (by position); no
            layer name is shared (by name); or shapes differ and
            ``skip_mismatch`` is False (the message lists every mismatched
            layer with both shapes). In every case the model is unchanged.

    Example:
        >>> old = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(2, name="dense_1"), keras.layers.Dense(3, name="dense_2")])
        >>> old.save_weights("old.weights.h5")
        >>> new = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(2, name="dense_1"), keras.layers.Dense(10, name="new_dense")])
        >>> report = kernelkit.load_weights(new, "old.weights.h5", by_name=True)
        >>> report.loaded, report.not_in_file
        (('dense_1',), ('new_dense',))

    """
    check_model(model, "load_weights")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"kernelkit.load_weights(): path is {_a(path)}, not a file path; pass the "
            ".weights.h5, .keras or .h5 file's path as a str"
        )
    path_str = os.fspath(path)
    if not os.path.exists(path_str):
        raise FileNotFoundError(f"No weights file at {path_str!r}: check the path.")
    if os.path.isdir(path_str):
        raise IsADirectoryError(
            f"{path_str!r} is a directory: pass a .weights.h5, .keras or .h5 file."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so it has no weights to load into: "
            "build it first (start it with keras.Input or call it on a batch)."
        )
    with _open_weights(path_str) as (fmt, h5):
        if fmt == "legacy":
            return _load_legacy(model, h5, path_str, by_name, skip_mismatch)
        return _load_keras3(model, h5, path_str, fmt, by_name, skip_mismatch)


def to_yaml(model: keras.Model) -> str:
    """Return the model's architecture as YAML (Keras 3 dropped ``to_yaml``).

    The YAML holds exactly what ``model.to_json()`` holds (the serialized
    ``get_config()``), written with ``yaml.safe_dump``: plain maps, lists,
    strings and numbers, no Python tags. JSON stays Keras's own
    ``model.to_json()`` / ``keras.models.model_from_json``.

    Args:
        model: any Keras model whose layers implement ``get_config()``.

    Returns:
        The YAML text; :func:`model_from_yaml` reads it back.

    Example:
        >>> text = kernelkit.to_yaml(model)
        >>> clone = kernelkit.model_from_yaml(text)

    """
    check_model(model, "to_yaml")
    config = json.loads(model.to_json())
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def model_from_yaml(
    text: str,
    custom_objects: Mapping[str, Any] | None = None,
    *,
    safe_mode: bool = True,
) -> keras.Model:
    """Build a new, freshly initialized model from :func:`to_yaml` text.

    The text is parsed with ``yaml.safe_load``, so a YAML that carries a
    Python tag (``!!python/object...``) is refused and nothing is unpickled.
    Keras's ``safe_mode`` stays on unless you turn it off: a ``Lambda`` layer
    stored as Python bytecode is refused.

    Args:
        text: YAML written by :func:`to_yaml`, or by tf.keras 2's ``to_yaml``
            (such configs have no ``module`` keys; Keras's legacy reader
            builds them, as it does for legacy ``.h5`` files).
        custom_objects: classes or functions the config names that are not
            registered with ``@keras.saving.register_keras_serializable()``.
        safe_mode: pass False only for a file you trust: it lets Keras load
            ``Lambda`` layers stored as bytecode, which runs that code.

    Returns:
        The rebuilt model (weights are new; load them with :func:`load_weights`).

    Raises:
        ValueError: the text is not YAML, holds a Python tag, is not a model
            config, names a function or class of ``os``, ``subprocess``,
            ``builtins`` and the like (refused before Keras reads it), needs
            unsafe deserialization while ``safe_mode`` is on, or holds a value
            Keras refuses (one line: Keras's innermost reason).
        TypeError: the config names a class Keras cannot find: one line with
            the closest Keras name for a misspelling and the fix
            (``register_keras_serializable`` or ``custom_objects``, never
            proposed for a name that is also a function of ``os``,
            ``subprocess`` or ``builtins``).

    Example:
        >>> clone = kernelkit.model_from_yaml(kernelkit.to_yaml(model))

    """
    if not isinstance(text, str):
        raise TypeError(f"model_from_yaml expects YAML text, got {type(text).__name__}.")
    try:
        config = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        tag = getattr(e, "problem", "") or str(e)
        raise ValueError(
            f"Refused: the YAML holds a Python tag ({_first_line(tag)}); "
            "kernelkit reads plain YAML only (yaml.safe_load), never Python objects."
        ) from None
    except yaml.YAMLError as e:
        raise ValueError(f"Not valid YAML: {_first_line(str(e))}.") from None
    if not (isinstance(config, dict) and "class_name" in config and "config" in config):
        raise ValueError(
            "This YAML is not a Keras model config (it needs 'class_name' and 'config'): "
            "write it with kernelkit.to_yaml(model)."
        )
    _refuse_system_functions(config)
    try:
        if "module" in config:
            model = keras.saving.deserialize_keras_object(
                config, custom_objects=dict(custom_objects or {}), safe_mode=safe_mode
            )
        else:  # tf.keras 2 wrote configs without "module" keys
            model = _legacy_model_from_config(config, dict(custom_objects or {}), safe_mode)
    except (TypeError, ValueError) as e:
        text = str(e)
        if isinstance(e, ValueError) and ("safe_mode" in text or "unsafe" in text.lower()):
            raise ValueError(
                "Refused under safe_mode: the YAML holds Python bytecode (a Lambda layer "
                "or function); pass safe_mode=False only if you trust this file."
            ) from None
        # Keras nests each level's failure in the next one's message ("Exception
        # encountered: ..."), config dumps included: say the innermost reason, in one line.
        raise _config_error(e) from None
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"The YAML describes a {type(model).__name__}, not a model: "
            "write it with kernelkit.to_yaml(model)."
        )
    return model


# Modules whose functions a config must never name: the hint would hand Keras
# os.system or builtins.eval through custom_objects.
_SYSTEM_MODULES = frozenset(
    {"os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "importlib", "runpy",
     "pty", "ctypes", "pickle", "marshal", "socket", "code", "codeop"}
)  # fmt: skip


def _system_function(name: str) -> str | None:
    """The module of os, subprocess or builtins that has a function called ``name``, if any."""
    import builtins
    import subprocess

    for module in (os, subprocess, builtins):
        if callable(getattr(module, name, None)):
            return module.__name__
    return None


def _refuse_system_functions(config: Any) -> None:
    """Refuses, in one line, a config entry that names a function of os, subprocess..."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] in _SYSTEM_MODULES:
                inner = node.get("config")
                name = node.get("registered_name") or (
                    inner
                    if node.get("class_name") == "function" and isinstance(inner, str)
                    else node.get("class_name")
                )
                raise ValueError(
                    f"Refused: the YAML names {module}.{name}; kernelkit never builds "
                    "anything of os, subprocess, builtins and the like from a config: "
                    "remove that entry from the YAML."
                )
            stack.extend(node.values())


def _config_error(error: BaseException) -> Exception:
    """Keras's deserialization error as kernelkit's one line with the hint."""
    text = str(error)
    reasons = [r.strip() for r in re.split(r"Exception encountered:", text)]
    innermost = reasons[-1].splitlines()[0] if reasons[-1] else text.splitlines()[0]
    patterns = (
        # Keras 3: a class or function of no known module (a user's own class).
        (r"Could not locate (class|function) '([^']+)'", None),
        # Keras 3: a misspelled class in a keras module.
        (r"Could not deserialize '([\w.]+)\.(\w+)' because it is not a KerasSaveable", "class"),
        # tf.keras 2 configs, read by Keras's legacy reader.
        (
            r"Unknown (layer|activation|initializer|regularizer|constraint|loss|metric|"
            r"optimizer|object)[^:]*: '?([\w.]+)'?",
            None,
        ),
    )
    for pattern, kind in patterns:
        found = re.findall(pattern, text)
        if not found:
            continue
        first, name = found[-1]
        module = first if kind == "class" else _module_in(text)
        what = "class" if kind == "class" else first
        return TypeError(_unknown_hint(what, name, module))
    bad_module = re.findall(
        r"Could not deserialize class '(\w+)' because its parent module "
        r"([\w.]+) cannot be imported",
        text,
    )
    if bad_module:
        name, module = bad_module[-1]
        return TypeError(
            f"Unknown module {module!r} for class {name!r} in the YAML: fix its module "
            "(Keras's own layers are in keras.layers), or import the module that defines it."
        )
    activation = re.findall(r"Could not interpret (\w+) function identifier: (\S+)", text)
    if activation:
        kind, name = activation[-1]
        close = difflib.get_close_matches(name, _keras_names(kind), n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        return ValueError(
            f"Unknown {kind} {name!r} in the YAML{maybe}: fix the name, or pass your own "
            f"function as custom_objects={{{name!r}: {name}}}."
            if _system_function(name) is None
            else f"Unknown {kind} {name!r} in the YAML{maybe}: fix the name."
        )
    return ValueError(
        f"Cannot build a model from this YAML: {_first_line(innermost)} "
        "(fix that entry, or write the YAML again with kernelkit.to_yaml(model))."
    )


def _module_in(text: str) -> str | None:
    """The module an error's config dump names for the failing object, if it names one."""
    found = re.findall(r"'module': '([\w.]+)'", text)
    return found[-1] if found else None


def _keras_names(kind: str) -> list[str]:
    """Keras's own names of a kind, for "did you mean": layers, activations..."""
    source = {"activation": keras.activations}.get(kind, keras.layers)
    return [n for n in dir(source) if not n.startswith("_")]


def _unknown_hint(what: str, name: str, module: str | None) -> str:
    """Unknown class 'Dnese' in the YAML (did you mean 'Dense'?): the fix, never os.system."""
    keras_module = module is None or module.split(".")[0] == "keras"
    kind = "activation" if "activation" in what else "layer"
    close = difflib.get_close_matches(name, _keras_names(kind), n=1) if keras_module else []
    notes = ([f"module {module}"] if module else []) + (
        [f"did you mean {close[0]!r}?"] if close else []
    )
    label = "class or function" if what == "object" else what
    head = f"Unknown {label} {name!r} in the YAML" + (f" ({'; '.join(notes)})" if notes else "")
    system = _system_function(name)
    if system is not None:
        # custom_objects={'system': system} would hand Keras os.system itself.
        return (
            f"{head}: {name!r} is also a function of {system}, which kernelkit never "
            "passes to Keras; if it is your own class, decorate it with "
            "@keras.saving.register_keras_serializable() and import it first."
        )
    fix = "fix its class_name, or for your own class " if close else "for your own class, "
    return (
        f"{head}: {fix}decorate it with @keras.saving.register_keras_serializable() or pass "
        f"custom_objects={{{name!r}: {name}}}."
    )


def _legacy_model_from_config(
    config: dict[str, Any], custom_objects: dict[str, Any], safe_mode: bool
) -> Any:
    """Read a tf.keras 2 config the way Keras 3 reads a legacy ``.h5`` file's."""
    try:  # Keras keeps its legacy reader private; it is what load_model("x.h5") uses.
        from keras.src.legacy.saving import saving_utils
        from keras.src.saving import serialization_lib
    except ImportError:  # pragma: no cover - only if Keras moves it
        raise ValueError(
            "This YAML is a tf.keras 2 config (no 'module' keys) and this Keras version "
            "cannot read those: rebuild the model and write it with kernelkit.to_yaml."
        ) from None
    with serialization_lib.SafeModeScope(safe_mode):
        return saving_utils.model_from_config(config, custom_objects=custom_objects)


def _first_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _damaged(path: str, detail: str, kind: str = "file", where: str = "") -> ValueError:
    """The one line for a weights file that cannot be read: what broke, and the fix."""
    inside = f"{where!r} in " if where else ""
    return ValueError(
        f"Cannot read {inside}{path!r} (truncated or damaged {kind}: {_first_line(detail)}); "
        "the model is unchanged: save the weights again (model.save_weights(...), or "
        "model.save(...) for a .keras file) or use another copy of the file."
    )


# --------------------------------------------------------------------------
# Opening files


class _open_weights:
    """Sniff the format and open the HDF5 weights; close everything on exit.

    Yields ``(format, h5py.Group)``, the group being the root of the weights
    (``model_weights`` for a legacy full-model file).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._archive: zipfile.ZipFile | None = None
        self._member: Any = None
        self._file: h5py.File | None = None

    def __enter__(self) -> tuple[str, h5py.Group]:
        try:
            return self._open()
        except BaseException:
            self.__exit__()
            raise

    def _open(self) -> tuple[str, h5py.Group]:
        path = self.path
        if zipfile.is_zipfile(path):
            try:
                self._archive = zipfile.ZipFile(path, "r")
                names = self._archive.namelist()
                if _ARCHIVE_WEIGHTS not in names:
                    other = [n for n in names if n.startswith("model.weights")]
                    found = f" (it has {other[0]})" if other else ""
                    raise ValueError(
                        f"{path!r} is a zip file without {_ARCHIVE_WEIGHTS}{found}: "
                        "pass a .keras archive saved with model.save(), or a .weights.h5 file."
                    )
                # h5py reads the member in place; .keras archives are stored
                # uncompressed, so seeking is cheap.
                self._member = self._archive.open(_ARCHIVE_WEIGHTS, "r")
                self._file = h5py.File(self._member, "r")
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise _damaged(path, str(e), ".keras archive") from None
            return "archive", self._file
        if not h5py.is_hdf5(path):
            with open(path, "rb") as f:
                if f.read(4) == b"PK\x03\x04":  # a zip's first entry, but no directory at its end
                    raise _damaged(path, "no zip directory at its end", ".keras archive")
            hint = (
                " (sharded .weights.json files are read by model.load_weights)"
                if path.endswith(".json")
                else ""
            )
            raise ValueError(
                f"{path!r} is neither an HDF5 file nor a .keras archive{hint}: pass a "
                ".weights.h5, .keras or .h5 file (a truncated .keras file also reads so)."
            )
        try:
            self._file = h5py.File(path, "r")
        except OSError as e:
            raise _damaged(path, str(e), "HDF5 file") from None
        root: h5py.Group = self._file
        if "layer_names" not in root.attrs and "layer_names0" not in root.attrs:
            inner = root.get("model_weights")
            if isinstance(inner, h5py.Group):
                root = inner  # a legacy full-model file (model.save("x.h5"))
        if "layer_names" in root.attrs or "layer_names0" in root.attrs:
            return "legacy", root
        if (
            "vars" in root
            or "layers" in root
            or any(isinstance(g, h5py.Group) and "vars" in g for g in root.values())
        ):
            return "keras", root
        raise ValueError(
            f"{path!r} is an HDF5 file but holds no Keras weights: pass a file written "
            "by model.save_weights() or model.save()."
        )

    def __exit__(self, *exc: object) -> None:
        for thing in (self._file, self._member, self._archive):
            if thing is not None:
                # Closing a damaged file must not hide the real error.
                with contextlib.suppress(Exception):
                    thing.close()
        self._file = self._member = self._archive = None


def _read(dataset: h5py.Dataset, path: str) -> np.ndarray:
    try:
        return np.asarray(dataset[()])
    except (OSError, ValueError, KeyError) as e:
        raise _damaged(path, str(e), where=dataset.name) from None


def _shape(item: Any, path: str) -> Shape:
    try:
        return tuple(int(d) for d in item.shape)
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise _damaged(path, str(e)) from None


# --------------------------------------------------------------------------
# Keras 3 layout (.weights.h5 and .keras)


@dataclass
class _Unit:
    """A layer's variables in a Keras 3 weights file.

    ``prefix`` is the HDF5 path of the layer's subtree; ``keys`` maps each
    dataset's path relative to that prefix to its shape.
    """

    prefix: str
    name: str
    qualname: str
    keys: dict[str, Shape]
    named: bool

    def shapes(self) -> tuple[Shape, ...]:
        return tuple(self.keys[k] for k in _sorted_keys(self.keys))


def _sorted_keys(keys: Mapping[str, Any]) -> list[str]:
    # "vars/10" after "vars/9": order datasets as Keras numbers them.
    return sorted(keys, key=lambda k: [int(p) if p.isdigit() else p for p in k.split("/")])


def _attr_str(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _keras3_units(root: h5py.Group, path: str) -> list[_Unit]:
    """Split a Keras 3 weights tree into layers, descending into nested models.

    A group with a ``vars`` child is one Keras object. It is a container (a
    Sequential or Functional model, whose layers sit under ``layers/``) when it
    has a ``layers`` group; its own variables, if any, form a unit. Any other
    object is one unit with its whole subtree (an LSTM and its cell, a custom
    layer and its sublayers). The optimizer's variables are not layers.
    """
    units: list[_Unit] = []

    def name_of(group: h5py.Group) -> str | None:
        vars_group = group.get("vars")
        if isinstance(vars_group, h5py.Group) and "name" in vars_group.attrs:
            return _attr_str(vars_group.attrs["name"])
        return None

    def datasets(group: h5py.Group) -> dict[str, Shape]:
        found: dict[str, Shape] = {}

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                found[name] = _shape(item, path)

        try:
            group.visititems(visit)
        except (OSError, KeyError, ValueError) as e:
            raise _damaged(path, str(e)) from None
        return found

    def visit_container(group: h5py.Group, names: tuple[str, ...]) -> None:
        vars_group = group.get("vars")
        if isinstance(vars_group, h5py.Group):
            own = {f"vars/{k}": v for k, v in datasets(vars_group).items()}
            if own:
                name = name_of(group) or group.name.rsplit("/", 1)[-1] or "model"
                units.append(
                    _Unit(
                        prefix=_join(group.name, "vars"),
                        name=name,
                        qualname="/".join((*names, name)) if names else name,
                        keys={k[len("vars/") :]: v for k, v in own.items()},
                        named=name_of(group) is not None,
                    )
                )
        for child_name, child in group.items():
            if child_name in ("vars", "optimizer") or not isinstance(child, h5py.Group):
                continue
            visit_member(child, names)

    def visit_member(group: h5py.Group, names: tuple[str, ...]) -> None:
        name = name_of(group)
        is_object = isinstance(group.get("vars"), h5py.Group)
        if is_object and isinstance(group.get("layers"), h5py.Group):
            visit_container(group, (*names, name or group.name.rsplit("/", 1)[-1]))
            return
        if not is_object:
            # A list or dict attribute ("layers", "extra"), or an old file that
            # wrote no vars group for a weightless object: look inside.
            for child in group.values():
                if isinstance(child, h5py.Group):
                    visit_member(child, names)
            return
        keys = datasets(group)
        if keys:
            label = name or group.name.rsplit("/", 1)[-1]
            units.append(
                _Unit(
                    prefix=group.name,
                    name=label,
                    qualname="/".join((*names, label)),
                    keys=keys,
                    named=name is not None,
                )
            )

    visit_container(root, ())
    return units


def _join(a: str, b: str) -> str:
    return f"{a.rstrip('/')}/{b}"


def _load_keras3(
    model: keras.Model,
    source: h5py.Group,
    path: str,
    fmt: str,
    by_name: bool,
    skip_mismatch: bool,
) -> LoadReport:
    source_units = _keras3_units(source, path)
    with tempfile.TemporaryDirectory(prefix="kernelkit-weights-") as tmp:
        # Keras tells us the model's own layout: the same paths and names it
        # would read back. This also holds the values that unmatched layers keep.
        scratch = os.path.join(tmp, "merged.weights.h5")
        model.save_weights(scratch)
        with h5py.File(scratch, "r") as target_file:
            target_units = _in_model_order(model, _keras3_units(target_file, scratch))
        if by_name:
            if any(not u.named for u in source_units):
                raise ValueError(
                    f"{path!r} stores no layer names (written by an older Keras 3), so it "
                    "cannot be matched by name: load it by position (by_name=False)."
                )
            pairs, not_in_file, not_in_model = _match_by_name(target_units, source_units)
        else:
            pairs, not_in_file, not_in_model = _match_by_path(target_units, source_units)
            if not_in_file or not_in_model:
                raise ValueError(
                    f"{path!r} does not match the model's architecture by position "
                    f"(model layers not in the file: {_names(not_in_file)}; file layers not "
                    f"in the model: {_names(not_in_model)}); nothing was loaded: pass "
                    "by_name=True to load the layers whose names match."
                )
        loaded, mismatched = _check_pairs(pairs)
        _refuse(path, by_name, skip_mismatch, loaded, mismatched, target_units, source_units)
        # Copy the matched layers' datasets (with their attributes: Keras marks
        # bfloat16 data there) into the scratch file. A damaged source fails
        # here, before the model is touched.
        from .reporting import task  # what draws it is injected (a notebook line)

        # Closed at the end, or by the drawing side when the cell ends (an error).
        progress = task(f"load weights into {model.name}", len(loaded) + 1, "layers")
        with h5py.File(scratch, "r+") as merged:
            for done, (target, src) in enumerate(loaded):
                progress.update(done)
                for key in target.keys:
                    dest = _join(target.prefix, key)
                    parent, leaf = dest.rsplit("/", 1)
                    del merged[dest]
                    try:
                        merged.copy(source[_join(src.prefix, key)], merged[parent], name=leaf)
                    except (OSError, KeyError, ValueError, RuntimeError) as e:
                        raise _damaged(path, str(e), where=src.qualname) from None
        progress.update(len(loaded))  # Keras reads the merged file back: the last step
        _atomic(model, lambda: model.load_weights(scratch))
        progress.close()
    return LoadReport(
        path=path,
        format=fmt,
        by_name=by_name,
        loaded=tuple(t.qualname for t, _ in loaded),
        not_in_file=tuple(not_in_file),
        not_in_model=tuple(not_in_model),
        mismatched=tuple(mismatched),
    )


def layout_difference(model: keras.Model, path: PathLike) -> str | None:
    """The first layer where a Keras 3 weights file and ``model`` differ, in words.

    Reads only shapes, and changes nothing: ``kernelkit.checkpoints`` asks it before
    ``BackupAndRestore`` restores a backup into a model that may be of
    another architecture (Keras would fail then with every weight value
    dumped). Layers are paired by position, as Keras loads them.

    Args:
        model: a built Keras model.
        path: a ``.weights.h5`` file (or a ``.keras`` archive).

    Returns:
        None when every layer matches, else e.g. ``"layer 'dense' holds
        [(4, 3), (3,)] there and [(4, 5), (5,)] in this model"``.

    Raises:
        ValueError: the file cannot be read (the message names the fix).

    Example:
        >>> layout_difference(model, "runs/a/backup/latest.weights.h5") is None  # doctest: +SKIP
        True

    """
    check_model(model, "weights.layout_difference")
    path_str = os.fspath(path)
    with _open_weights(path_str) as (fmt, h5):
        if fmt == "legacy":
            return None  # not a file BackupAndRestore writes: Keras says what it thinks
        sources = _keras3_units(h5, path_str)
        with tempfile.TemporaryDirectory(prefix="kernelkit-weights-") as tmp:
            scratch = os.path.join(tmp, "layout.weights.h5")
            model.save_weights(scratch)
            with h5py.File(scratch, "r") as target_file:
                targets = _in_model_order(model, _keras3_units(target_file, scratch))
    by_prefix = {u.prefix: u for u in sources}
    for target in targets:
        source = by_prefix.pop(target.prefix, None)
        if source is None:
            return f"this model's layer {target.qualname!r} is not in it"
        if source.keys != target.keys:
            return (
                f"layer {target.qualname!r} holds {_shapes_text(source.shapes())} there and "
                f"{_shapes_text(target.shapes())} in this model"
            )
    if by_prefix:
        extra = next(iter(by_prefix.values()))
        return f"its layer {extra.qualname!r} is not in this model"
    return None


def _in_model_order(model: keras.Model, units: list[_Unit]) -> list[_Unit]:
    """Sort units as the model lists its layers (HDF5 lists groups alphabetically)."""
    order: dict[str, int] = {}

    def visit(layers: Sequence[keras.layers.Layer], names: tuple[str, ...]) -> None:
        for layer in layers:
            order.setdefault("/".join((*names, layer.name)), len(order))
            if isinstance(layer, keras.Model):
                visit(layer.layers, (*names, layer.name))

    visit(model.layers, ())
    return sorted(units, key=lambda u: order.get(u.qualname, len(order)))


def _match_by_path(
    targets: list[_Unit], sources: list[_Unit]
) -> tuple[list[tuple[_Unit, _Unit]], list[str], list[str]]:
    """Pair layers stored under the same Keras object path (Keras's "by position")."""
    by_prefix = {u.prefix: u for u in sources}
    pairs = [(t, by_prefix[t.prefix]) for t in targets if t.prefix in by_prefix]
    paired = {s.prefix for _, s in pairs}
    not_in_file = [t.qualname for t in targets if t.prefix not in by_prefix]
    not_in_model = [s.qualname for s in sources if s.prefix not in paired]
    return pairs, not_in_file, not_in_model


def _match_by_name(
    targets: Sequence[Any], sources: Sequence[Any]
) -> tuple[list[tuple[Any, Any]], list[str], list[str]]:
    """Pair layers by qualified name (``base/conv``), then by a name unique on both sides."""
    source_by_qual = {s.qualname: s for s in sources}
    pairs: list[tuple[Any, Any]] = []
    used: set[int] = set()
    rest = []
    for t in targets:
        s = source_by_qual.get(t.qualname)
        if s is not None and id(s) not in used:
            pairs.append((t, s))
            used.add(id(s))
        else:
            rest.append(t)
    source_names: dict[str, list[Any]] = {}
    for s in sources:
        if id(s) not in used:
            source_names.setdefault(s.name, []).append(s)
    target_names: dict[str, int] = {}
    for t in rest:
        target_names[t.name] = target_names.get(t.name, 0) + 1
    not_in_file = []
    for t in rest:
        candidates = source_names.get(t.name, [])
        if len(candidates) == 1 and target_names[t.name] == 1:
            pairs.append((t, candidates[0]))
            used.add(id(candidates[0]))
        else:
            not_in_file.append(t.qualname)
    not_in_model = [s.qualname for s in sources if id(s) not in used]
    position = {id(t): i for i, t in enumerate(targets)}
    pairs.sort(key=lambda pair: position[id(pair[0])])  # report in the model's order
    return pairs, not_in_file, not_in_model


def _check_pairs(
    pairs: Sequence[tuple[_Unit, _Unit]],
) -> tuple[list[tuple[_Unit, _Unit]], list[LayerMismatch]]:
    loaded, mismatched = [], []
    for target, source in pairs:
        if target.keys == source.keys:
            loaded.append((target, source))
        else:
            mismatched.append(LayerMismatch(target.qualname, source.shapes(), target.shapes()))
    return loaded, mismatched


def _refuse(
    path: str,
    by_name: bool,
    skip_mismatch: bool,
    loaded: Sequence[Any],
    mismatched: Sequence[LayerMismatch],
    targets: Sequence[Any],
    sources: Sequence[Any],
) -> None:
    """Raise before anything changes when the load cannot go ahead."""
    if mismatched and not skip_mismatch:
        n = len(mismatched)
        raise ValueError(
            f"{n} layer{'s' if n > 1 else ''} in {path!r} "
            f"{'do' if n > 1 else 'does'} not match the model's shapes, so nothing was "
            f"loaded: {'; '.join(str(m) for m in mismatched)}. Pass skip_mismatch=True to "
            "load the other layers."
        )
    if not loaded:
        if mismatched:
            raise ValueError(
                f"Every layer in {path!r} that matches the model differs in shape, so "
                f"nothing was loaded: {'; '.join(str(m) for m in mismatched)}."
            )
        if not targets:
            raise ValueError("The model has no weights to load into.")
        if not sources:
            raise ValueError(f"{path!r} holds no layer weights; nothing was loaded.")
        if by_name:
            raise ValueError(
                f"No layer name is shared by the model and {path!r}, so nothing was "
                f"loaded (file: {_names([s.qualname for s in sources])}; model: "
                f"{_names([t.qualname for t in targets])}): rename the layers or load "
                "by position (by_name=False)."
            )


def _atomic(model: keras.Model, load: Any) -> None:
    """Run ``load``; if it fails, put every weight of ``model`` back first."""
    before = [(v, keras.ops.convert_to_numpy(v)) for v in model.weights]
    try:
        load()
    except BaseException:
        for variable, value in before:
            variable.assign(value)
        raise


# --------------------------------------------------------------------------
# Legacy Keras 2 layout (.h5)


@dataclass
class _LegacyUnit:
    """One layer of a legacy file (source) or of the model (target)."""

    name: str
    qualname: str
    shapes: tuple[Shape, ...]
    datasets: tuple[Any, ...] = ()  # h5py datasets (source only)
    variables: tuple[Any, ...] = ()  # keras variables (target only)


def _legacy_attr_list(group: h5py.Group, name: str) -> list[str]:
    # Keras splits long attribute lists into name0, name1, ... (HDF5 caps an
    # attribute at 64 KiB; see load_attributes_from_hdf5_group in Keras).
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [_attr_str(v) for v in values]


def _legacy_sources(root: h5py.Group, path: str) -> list[_LegacyUnit]:
    units = []
    try:
        for name in _legacy_attr_list(root, "layer_names"):
            group = root.get(name)
            if not isinstance(group, h5py.Group):
                raise ValueError(f"layer {name!r} is listed but has no group")
            weight_names = _legacy_attr_list(group, "weight_names")
            if not weight_names:
                continue
            datasets = tuple(group[w] for w in weight_names)
            shapes = tuple(_shape(d, path) for d in datasets)
            units.append(_LegacyUnit(name, name, shapes, datasets=datasets))
    except (OSError, KeyError, ValueError) as e:
        if "truncated or damaged" in str(e):
            raise  # already the one line, from _shape
        raise _damaged(path, str(e), "legacy HDF5 file") from None
    return units


def _legacy_weights(layer: keras.layers.Layer) -> list[Any]:
    # The order Keras 2 wrote and Keras 3's legacy loader reads
    # (keras/src/legacy/saving/legacy_h5_format.py: _legacy_weights).
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _target(layer: keras.layers.Layer, qualname: str) -> _LegacyUnit:
    variables = tuple(_legacy_weights(layer))
    shapes = tuple(tuple(int(d) for d in v.shape) for v in variables)
    return _LegacyUnit(layer.name, qualname, shapes, variables=variables)


def _legacy_targets_by_name(model: keras.Model, file_names: set[str]) -> list[_LegacyUnit]:
    """List the model's layers for a by-name load.

    A nested model whose name the file lacks is opened up, so that its layers
    can match the file's layers by their own names.
    """
    units: list[_LegacyUnit] = []

    def visit(layers: Sequence[keras.layers.Layer], names: tuple[str, ...]) -> None:
        for layer in layers:
            qual = "/".join((*names, layer.name))
            if isinstance(layer, keras.Model) and layer.name not in file_names:
                visit(layer.layers, (*names, layer.name))
            elif _legacy_weights(layer):
                units.append(_target(layer, qual))

    visit(model.layers, ())
    return units


def _load_legacy(
    model: keras.Model, root: h5py.Group, path: str, by_name: bool, skip_mismatch: bool
) -> LoadReport:
    sources = _legacy_sources(root, path)
    if by_name:
        targets = _legacy_targets_by_name(model, {s.name for s in sources})
        pairs, not_in_file, not_in_model = _match_by_name(targets, sources)
    else:
        targets = [_target(layer, layer.name) for layer in model.layers if _legacy_weights(layer)]
        if len(targets) != len(sources):
            raise ValueError(
                f"{path!r} has {len(sources)} layers with weights and the model has "
                f"{len(targets)}, so they do not match by position; nothing was loaded: "
                "pass by_name=True to load the layers whose names match."
            )
        pairs, not_in_file, not_in_model = list(zip(targets, sources, strict=True)), [], []
    loaded, mismatched = [], []
    for target, source in pairs:
        if target.shapes == source.shapes:
            loaded.append((target, source))
        else:
            mismatched.append(LayerMismatch(target.qualname, source.shapes, target.shapes))
    _refuse(path, by_name, skip_mismatch, [t for t, _ in loaded], mismatched, targets, sources)
    # Read all values first: a truncated file fails here, before any assign.
    plan = [
        (variable, _read(dataset, path))
        for target, source in loaded
        for variable, dataset in zip(target.variables, source.datasets, strict=True)
    ]

    def assign() -> None:
        for variable, value in plan:
            variable.assign(value)

    _atomic(model, assign)
    return LoadReport(
        path=path,
        format="legacy",
        by_name=by_name,
        loaded=tuple(t.qualname for t, _ in loaded),
        not_in_file=tuple(not_in_file),
        not_in_model=tuple(not_in_model),
        mismatched=tuple(mismatched),
    )
