"""A conversion's variant: dtype, precision mode, quantization; its name in cache keys, reports and model cards."""

from __future__ import annotations

import dataclasses
from typing import Any

from mlx_diar.conversion import precision, quantize as quantize_module
from mlx_diar.errors import OptionError


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a conversion is asked for: dtype, precision mode, quantization (None: as converted / defaults)."""

    dtype: str | None = None
    quantize: int | None = None
    group_size: int | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in (None, *precision.DTYPES):
            raise OptionError(f"dtype must be one of {tuple(precision.DTYPES)}, got {self.dtype!r}")
        if self.quantize not in (None, *quantize_module.BITS):
            raise OptionError(f"quantize must be 4 or 8 bits, got {self.quantize!r}")
        if self.group_size not in (None, *quantize_module.GROUP_SIZES):
            raise OptionError(f"q_group_size must be 32, 64 or 128, got {self.group_size!r}")
        if self.precision not in (None, *precision.MODES):
            raise OptionError(f"precision must be one of {precision.MODES}, got {self.precision!r}")

    def conversion(self) -> dict[str, Any]:
        """`convert_pyannote_model` arguments, defaults filled in."""
        return {"dtype": self.dtype or "float32", "quantize": self.quantize, "q_group_size": self.group_size or 64,
                "precision_mode": self.precision or "default"}

    @property
    def name(self) -> str:
        """`float32`, `float16-pure`, `bfloat16-q8g64`, ...: the conversion's name in cache keys and reports."""
        args = self.conversion()
        pure = "-pure" if args["precision_mode"] == "pure" and args["dtype"] != "float32" else ""
        return args["dtype"] + pure + (f"-q{self.quantize}g{args['q_group_size']}" if self.quantize else "")

    def check(self, config: dict[str, Any], where: str) -> None:
        """OptionError when a converted model's config.json is not what was asked (a converted model is not re-converted)."""
        quantization = config.get("quantization") or {}
        mode = "pure" if str((config.get("precision") or {}).get("name", "")).endswith("-pure") else "default"
        found = {"dtype": config.get("dtype"), "quantize": quantization.get("bits"),
                 "group_size": quantization.get("group_size"), "precision": mode}
        for field, asked in dataclasses.asdict(self).items():
            if asked is not None and asked != found[field]:
                raise OptionError(f"{where}: a converted model with {field} {found[field]!r}, not {asked!r}; a converted "
                                  "model is loaded as it is: convert the pyannote pipeline to get another variant")
