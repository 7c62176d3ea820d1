"""Typed, validated parameters (what pyannote.pipeline's `Parameter`s and `instantiate` give a pipeline).

A `Parameters` subclass is a frozen dataclass: its field annotations are the types (a float
field takes any real number but not a bool, an int field takes an integer, a bool field takes
True/False only), every float must be finite, and `__post_init__` of the subclass adds the
ranges. Each failure is an `OptionError` naming the parameter and the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, ClassVar, Mapping, TypeVar

from mlx_diar.errors import OptionError

P = TypeVar("P", bound="Parameters")


@dataclasses.dataclass(frozen=True)
class Parameters:
    """Base of the typed parameter groups; `group` prefixes the names in messages."""

    group: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        object.__setattr__(self, "_given", {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for field in dataclasses.fields(self):
            value = self._typed(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)

    @classmethod
    def name(cls, field: str) -> str:
        """The parameter as a user names it, e.g. `clustering.Fa`."""
        return f"{cls.group}.{field}" if cls.group else field

    def _typed(self, field: str, value: Any, kind: type) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise OptionError(f"{self.name(field)} = {value!r}: expected true or false")
        if kind is int:
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return int(value)
            raise OptionError(f"{self.name(field)} = {value!r}: expected an integer")
        if kind is float:
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                if math.isfinite(value):
                    return float(value)
                raise OptionError(f"{self.name(field)} = {value!r}: expected a finite number")
            raise OptionError(f"{self.name(field)} = {value!r}: expected a number")
        if kind is str:
            if isinstance(value, str):
                return value
            raise OptionError(f"{self.name(field)} = {value!r}: expected a string")
        raise TypeError(f"{type(self).__name__}.{field}: unsupported parameter type {kind!r}")

    def require(self, field: str, ok: bool, what: str) -> None:
        """Raise `OptionError` naming `field` and its value as given unless `ok`."""
        if not ok:
            raise OptionError(f"{self.name(field)} = {self._given[field]!r}: {what}")

    @classmethod
    def known(cls) -> list[str]:
        """Names of the parameters, as `name` writes them."""
        return [cls.name(f.name) for f in dataclasses.fields(cls)]

    def update(self: P, values: Mapping[str, Any]) -> P:
        """A copy with `values` replaced; unknown names raise `OptionError` listing the known ones."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = [self.name(k) for k in values if k not in fields]
        if unknown:
            raise OptionError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(self.known())}")
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
