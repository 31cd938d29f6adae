"""Layer paths: the one walk of a model's layers, and what a path means everywhere.

A path is the chain of layer names from the model down, joined by "/":
``"dense"`` is a layer of the model, ``"base/conv2"`` the layer ``conv2`` of the
nested model (or custom layer) ``base``. ``freeze``, ``extract``,
``reset_states``, the card's tabs and the fine-tuning groups all name layers
this way, so one path is one layer in all of them. The rules:

- Depth first, in the order the container tracks its layers
  (``Model.layers``; for a custom layer that holds layers, Keras's attribute
  tracker, which ``Model.layers`` is built on).
- A layer reachable twice (shared between nested models) appears once, at
  its first path.
- Siblings with the same name (possible in custom models) become
  ``"name"``, ``"name#2"``, ``"name#3"``.
- Input layers are left out, except where asked for (the Layers tab lists
  them, greyed).
- How deep the walk goes is the caller's choice: :func:`into_models` enters
  nested models only (freezing and fine-tuning act on whole custom layers);
  :func:`into_sublayers` also enters custom layers, but never an RNN's cells
  or a wrapper's inner layers (``TimeDistributed``, ``Bidirectional``): they
  run inside a backend loop or as one unit, and are acted on as one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras


@dataclass(frozen=True)
class LayerPath:
    """One layer of a walk.

    Attributes:
        path: its path ("base/conv2").
        layer: the layer.
        depth: how many containers hold it below the model (0: a layer of the model).
        ancestors: the containers between the model and the layer, outermost first.
        is_input: whether it is an input layer.
    """

    path: str
    layer: Any
    depth: int
    ancestors: tuple[Any, ...] = ()
    is_input: bool = False


def into_models(layer: Any) -> bool:
    """Enter nested models only."""
    return isinstance(layer, keras.Model)


def into_sublayers(layer: Any) -> bool:
    """Enter nested models and custom layers, never an RNN's cells or a wrapper's layer."""
    # Bidirectional is not a keras.layers.Wrapper in Keras 3, but wraps the same way.
    units = (keras.layers.RNN, keras.layers.Wrapper, keras.layers.Bidirectional)
    return not isinstance(layer, units)


def _children(layer: Any) -> list[Any]:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if callable(flatten) else []


def walk(
    model: Any, *, enter: Callable[[Any], bool] = into_models, inputs: bool = False
) -> list[LayerPath]:
    """Every layer inside ``model`` once, depth first, with its path (the rules above).

    Args:
        model: a Keras model (or any layer).
        enter: which layers the walk goes into.
        inputs: also list input layers.

    Returns:
        The layers, as :class:`LayerPath`.
    """
    found: list[LayerPath] = []
    seen: set[int] = {id(model)}

    def visit(container: Any, prefix: str, ancestors: tuple[Any, ...]) -> None:
        used: set[str] = set()
        for child in _children(container):
            if id(child) in seen:
                continue
            seen.add(id(child))
            is_input = isinstance(child, keras.layers.InputLayer)
            name = child.name
            suffix = 1
            while name in used:
                suffix += 1
                name = f"{child.name}#{suffix}"
            used.add(name)
            path = prefix + name
            if is_input and not inputs:
                continue
            found.append(LayerPath(path, child, len(ancestors), ancestors, is_input))
            if not is_input and enter(child):
                visit(child, path + "/", (*ancestors, child))

    visit(model, "", ())
    return found
