"""Mirrors pyannote.audio.utils.powerset.Powerset

Conversion between powerset predictions (one class per set of active speakers)
and multilabel predictions (one column per speaker). Works on NumPy and MLX arrays.
"""

from __future__ import annotations

from itertools import combinations
from typing import TypeVar

import mlx.core as mx
import numpy as np

Array = TypeVar("Array", np.ndarray, mx.array)


class Powerset:
    """Powerset <-> multilabel conversion for ``num_classes`` classes, sets of at most ``max_set_size``."""

    def __init__(self, num_classes: int, max_set_size: int):
        self.num_classes = num_classes
        self.max_set_size = max_set_size
        # pyannote's order: by set size, then lexicographic (itertools.combinations)
        self.powerset_classes: list[tuple[int, ...]] = [
            subset
            for size in range(max_set_size + 1)
            for subset in combinations(range(num_classes), size)
        ]
        self.mapping = np.zeros((self.num_powerset_classes, num_classes), dtype=np.float32)
        for k, subset in enumerate(self.powerset_classes):
            self.mapping[k, list(subset)] = 1.0
        self.cardinality = self.mapping.sum(axis=1)

    @property
    def num_powerset_classes(self) -> int:
        """Number of powerset classes (sets of size 0 .. max_set_size)."""
        return len(self.powerset_classes)

    def to_multilabel(self, powerset: Array, soft: bool = False) -> Array:
        """(..., num_powerset_classes) log-probabilities -> (..., num_classes) multilabel, float32.

        Hard (default): one-hot of the argmax (first maximum on ties), times the mapping.
        Soft: exp(log-probabilities) times the mapping.
        """
        if isinstance(powerset, mx.array):
            mapping = mx.array(self.mapping)
            if soft:
                return mx.exp(powerset.astype(mx.float32)) @ mapping
            return mapping[mx.argmax(powerset, axis=-1)]
        if soft:
            return np.exp(powerset.astype(np.float32)) @ self.mapping
        return self.mapping[np.argmax(powerset, axis=-1)]

    def to_powerset(self, multilabel: Array) -> Array:
        """(..., num_classes) hard multilabel -> (..., num_powerset_classes) one-hot powerset (int)."""
        if isinstance(multilabel, mx.array):
            scores = multilabel.astype(mx.float32) @ mx.array(self.mapping.T)
            index = mx.argmax(scores, axis=-1)
            return (index[..., None] == mx.arange(self.num_powerset_classes)).astype(mx.int64)
        index = np.argmax(multilabel.astype(np.float32) @ self.mapping.T, axis=-1)
        return np.eye(self.num_powerset_classes, dtype=np.int64)[index]
