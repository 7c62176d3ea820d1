"""Host synchronisations of the MLX route, counted: what makes an MLX graph slow on a GPU.

Every `mx.eval`, every MLX array turned into a NumPy array and every NumPy array turned into an
MLX array makes the host wait for the device (or the device for the host) and moves bytes
between them. `counting()` wraps, for the duration of a block, `mlx.core.eval`,
`mlx.core.async_eval`, the `mlx.core.array` constructor and NumPy's `array` / `asarray` /
`ascontiguousarray` as the code under test calls them (module attributes looked up at call time),
and counts each call that crosses: evaluations, arrays to the host with their bytes, arrays to the
device with their bytes. `.item()`, `.tolist()` and `float()` on an MLX array also synchronise
and cannot be wrapped: `tests/test_syncs.py` keeps them out of the models' code.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import mlx.core as mx
import numpy as np

_NUMPY_CONVERSIONS = ("array", "asarray", "ascontiguousarray")


@dataclasses.dataclass
class Syncs:
    """Host synchronisations counted over a block."""

    evaluations: int = 0  # mx.eval / mx.async_eval calls
    to_host: int = 0  # MLX arrays converted to NumPy
    to_host_bytes: int = 0
    to_device: int = 0  # NumPy arrays (or lists) made into MLX arrays
    to_device_bytes: int = 0

    @property
    def total(self) -> int:
        """Every synchronisation: evaluations and conversions either way."""
        return self.evaluations + self.to_host + self.to_device

    def per(self, batches: int) -> dict[str, float]:
        """These counts divided by `batches` (bytes in MB)."""
        n = max(1, batches)
        return {"syncs": self.total / n, "evaluations": self.evaluations / n, "to_host": self.to_host / n,
                "to_device": self.to_device / n, "to_host_MB": self.to_host_bytes / n / 1e6,
                "to_device_MB": self.to_device_bytes / n / 1e6}

    def __sub__(self, other: "Syncs") -> "Syncs":
        return Syncs(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


_REAL_ARRAY = mx.array


class _CountingArrayType(type):
    """Stands in for `mx.array` while counting: isinstance checks still see the real type; a call
    that makes a device array from host data is counted."""

    syncs: Syncs | None = None

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _REAL_ARRAY)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_ARRAY)

    def __call__(cls, value: Any, *args: Any, **kwargs: Any) -> mx.array:
        out = _REAL_ARRAY(value, *args, **kwargs)
        if cls.syncs is not None and isinstance(value, (np.ndarray, list, tuple)):
            cls.syncs.to_device += 1
            cls.syncs.to_device_bytes += out.nbytes
        return out


class _CountingArray(metaclass=_CountingArrayType):
    pass


@contextlib.contextmanager
def counting() -> Iterator[Syncs]:
    """Count the host synchronisations of the block (see the module docstring); not re-entrant."""
    syncs = Syncs()
    real_eval, real_async = mx.eval, mx.async_eval
    real_numpy = {name: getattr(np, name) for name in _NUMPY_CONVERSIONS}

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        syncs.evaluations += 1
        return real_eval(*args, **kwargs)

    def async_evaluate(*args: Any, **kwargs: Any) -> Any:
        syncs.evaluations += 1
        return real_async(*args, **kwargs)

    def conversion(real):
        def convert(value: Any, *args: Any, **kwargs: Any) -> np.ndarray:
            out = real(value, *args, **kwargs)
            if isinstance(value, _REAL_ARRAY):
                syncs.to_host += 1
                syncs.to_host_bytes += out.nbytes
            return out
        return convert

    _CountingArrayType.syncs = syncs
    mx.eval, mx.async_eval, mx.array = evaluate, async_evaluate, _CountingArray
    for name, real in real_numpy.items():
        setattr(np, name, conversion(real))
    try:
        yield syncs
    finally:
        mx.eval, mx.async_eval, mx.array = real_eval, real_async, _REAL_ARRAY
        for name, real in real_numpy.items():
            setattr(np, name, real)
        _CountingArrayType.syncs = None
