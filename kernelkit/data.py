"""What kernelkit reads of a fit's data: sample counts and Keras's split arithmetic.

One count of rows for every check that needs it (the batch checks of a
distribution, stateful-RNN rules, sharding for workers), so they agree with
each other and with Keras. Pure: it imports neither Keras nor NumPy, and reads
only ``shape`` (datasets, generators and ``PyDataset`` have no row count here).

Example:
    >>> import numpy as np
    >>> num_samples({"a": np.zeros((8, 3)), "b": np.zeros((8,))})
    8
    >>> num_samples(iter([1, 2])) is None
    True
    >>> split_samples(1500, 0.1)
    (1350, 150)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any


def _leaves(structure: Any) -> Iterator[Any]:
    if isinstance(structure, Mapping):
        for value in structure.values():
            yield from _leaves(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            yield from _leaves(value)
    elif structure is not None:
        yield structure


def _rows(leaf: Any) -> int | None:
    shape = getattr(leaf, "shape", None)
    if shape is None or hasattr(leaf, "element_spec"):  # a tf.data dataset has a shape-less spec
        return None
    try:
        return int(shape[0]) if len(shape) else -1
    except (TypeError, ValueError, IndexError):
        return None  # an unknown first dimension


def num_samples(*structures: Any, strict: bool = False) -> int | None:
    """Rows in array-like input (arrays, tensors, and dicts, lists and tuples of them).

    Args:
        *structures: ``x``, and ``y`` and ``sample_weight`` where they matter.
        strict: raise when the leaves disagree or one is a scalar (what
            training on workers needs), instead of reading the first leaf.

    Returns:
        The row count, or None for data with none (a dataset, a generator,
        a ``PyDataset``) or no data.

    Raises:
        ValueError: with ``strict``, for scalars or differing row counts.
    """
    counts = [_rows(leaf) for structure in structures for leaf in _leaves(structure)]
    if not counts or counts[0] is None:
        return None
    if not strict:
        return counts[0] if counts[0] >= 0 else None
    if -1 in counts:
        raise ValueError("fit on workers needs arrays with a batch dimension, not scalars")
    known = {c for c in counts if c is not None}
    if len(known) != 1:
        raise ValueError(
            f"x, y and sample_weight must have the same number of samples, got {sorted(known)}"
        )
    return known.pop()


def split_samples(samples: int, validation_split: float = 0.0) -> tuple[int, int]:
    """How Keras splits ``samples`` rows for ``validation_split``: (training, validation).

    Keras keeps the first ``floor(samples * (1 - validation_split))`` rows for
    training and validates on the rest
    (``keras/src/trainers/data_adapters/array_slicing.py``,
    ``train_validation_split``).

    Example:
        >>> split_samples(1500, 0.1)
        (1350, 150)
        >>> split_samples(89, 0.2)
        (71, 18)

    """
    if not validation_split:
        return samples, 0
    train = math.floor(samples * (1.0 - validation_split))
    return train, samples - train
