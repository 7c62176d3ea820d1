"""Weight quantization of the MLX models: Linear, LSTM and convolution weights (affine, per group).

A quantized unit is stored as ``P.weight`` (packed uint32), ``P.scales`` and ``P.biases``:
- Linear layer at module path P (``linear.0``): runs as `Float32QuantizedLinear`;
- LSTM weight at parameter path P (``lstm.0.forward.Wh``): its layer runs as
  `QuantizedBiLSTMLayer`, every product with that weight a `mx.quantized_matmul`;
- convolution at module path P (``resnet.layer3.0.conv1``): the weight flattened to
  (out, kernel x in); it is dequantized at load and runs as a float convolution
  ("saves size, not compute": on CPU, quantized matmuls over im2col patches were slower
  than MLX's float convolution, see docs/precision.md).

`plan` chooses the units (every weight whose flattened input size the group size divides;
`bits_for` gives per-block bit widths), `quantize_arrays` writes them at conversion, and
`rebuild` turns a float model into the quantized one that the saved keys describe: which
units are quantized, and their bits and group size, are read back from the ``.scales`` keys
and the packed shapes, never re-derived by a rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_diar.models.kernels import lstm_recurrence
from mlx_diar.conversion.precision import block_of

GROUP_SIZES = (32, 64, 128)
BITS = (4, 8)
LSTM_WEIGHTS = ("Wx", "Wh")
# Blocks that a 4-bit model keeps at 8 bits: those whose weights alone at 4 bits (the rest 8) miss the
# 8-bit target in the sensitivity map (docs/precision.md; worst of the sample's first 10 s and the speakrs
# short clip): lstm and classifier each cost 0.54 DER point, layer3, layer4 and the embedding layer bring the
# embedding cosine to 0.968, 0.961 and 0.901. Only linear (0.00 pt) and layer2 (0.992) go to 4 bits.
KEEP_8BIT: dict[str, frozenset[str]] = {"segmentation": frozenset({"lstm", "classifier"}),
                                        "embedding": frozenset({"layer3", "layer4", "embedding"})}
# Blocks that a quantized model keeps in float (its precision policy's dtype), whatever the bits: at 8 bits
# the segmentation LSTM and classifier each moved 0.4-0.6 % of the frames' argmax on a held-out clip (the
# sample's first 11 s: 98.6 % of frames equal with them quantized, the float32 model's 99.9 % without;
# target 99.5 %), and they are 1.4 of the 1.5 M segmentation parameters: ~4 MB of a 33 MB model.
KEEP_FLOAT: dict[str, frozenset[str]] = {"segmentation": frozenset({"lstm", "classifier"})}


@dataclasses.dataclass(frozen=True)
class Unit:
    """One quantizable weight: where it is, what it belongs to, and how many parameters it has."""

    path: str  # module path (linear, conv) or parameter path (lstm)
    kind: str  # "linear", "lstm" or "conv"
    block: str
    size: int  # number of parameters
    in_features: int  # flattened input size (the quantized axis)

    @property
    def float_key(self) -> str:
        """The float model's parameter holding this weight."""
        return self.path if self.kind == "lstm" else f"{self.path}.weight"

    @property
    def execution(self) -> str:
        return "dequantized at load (saves size, not compute)" if self.kind == "conv" else "quantized matmul"


def units(model: nn.Module, role: str) -> list[Unit]:
    """Every Linear, LSTM and convolution weight of `model` (a float model), in parameter order."""
    modules = dict(model.named_modules())
    out = []
    for key, value in tree_flatten(model.parameters()):
        parent, _, name = key.rpartition(".")
        module = modules.get(parent)
        if name == "weight" and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            kind = "linear" if isinstance(module, nn.Linear) else "conv"
            path = parent
        elif name in LSTM_WEIGHTS and value.ndim == 2 and parent.startswith("lstm."):
            kind, path = "lstm", key
        else:
            continue
        out.append(Unit(path, kind, block_of(role, key), value.size, math.prod(value.shape[1:])))
    return out


def plan(model: nn.Module, role: str, bits: int, group_size: int,
         keep_8bit: Mapping[str, frozenset[str]] | None = None,
         keep_float: Mapping[str, frozenset[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Units to quantize: path -> {"kind", "block", "bits", "group_size", "execution"}.

    A unit is quantized when `group_size` divides its flattened input size and `keep_float` does not
    name its block for `role`; the blocks that `keep_8bit` names get 8 bits whatever `bits` says.
    """
    if bits not in BITS or group_size not in GROUP_SIZES:
        raise ValueError(f"quantization needs bits in {BITS} and group size in {GROUP_SIZES}, got {bits}, {group_size}")
    kept = (keep_8bit or {}).get(role, frozenset())
    floats = (keep_float or {}).get(role, frozenset())
    return {u.path: {"kind": u.kind, "block": u.block, "bits": 8 if u.block in kept else bits,
                     "group_size": group_size, "execution": u.execution}
            for u in units(model, role) if u.in_features % group_size == 0 and u.block not in floats}


def quantize_arrays(arrays: Mapping[str, mx.array], chosen: Mapping[str, dict[str, Any]]) -> dict[str, mx.array]:
    """Float arrays of one model -> the same with every chosen unit stored as weight/scales/biases."""
    out = dict(arrays)
    for path, spec in chosen.items():
        key = path if spec["kind"] == "lstm" else f"{path}.weight"
        weight = out.pop(key).astype(mx.float32)  # float32 scales and biases, from the unrounded weight
        packed, scales, biases = mx.quantize(weight.reshape(weight.shape[0], -1), spec["group_size"], spec["bits"])
        out.update({f"{path}.weight": packed, f"{path}.scales": scales, f"{path}.biases": biases})
    return out


def saved_units(model: nn.Module, role: str, weights: Mapping[str, mx.array]) -> dict[str, dict[str, Any]]:
    """What the saved keys say is quantized: path -> {"kind", "block", "bits", "group_size", "execution"}.

    Bits and group size come from the shapes: packed width = in x bits / 32, scales = in / group.
    Raises ValueError for a ``.scales`` key that names no quantizable weight or inconsistent shapes.
    """
    known = {u.path: u for u in units(model, role)}
    out = {}
    for key in sorted(k for k in weights if k.endswith(".scales")):
        path = key[: -len(".scales")]
        unit = known.get(path)
        packed = weights.get(f"{path}.weight")
        if unit is None or packed is None or f"{path}.biases" not in weights:
            raise ValueError(f"{key}: no quantizable weight {path!r} with .weight/.scales/.biases")
        bits, rest = divmod(packed.shape[-1] * 32, unit.in_features)
        group_size, rest2 = divmod(unit.in_features, weights[key].shape[-1])
        if rest or rest2 or bits not in BITS or group_size not in GROUP_SIZES:
            raise ValueError(f"{path}: packed shape {packed.shape} / scales {weights[key].shape} do not fit "
                             f"{unit.in_features} inputs at {BITS} bits and groups of {GROUP_SIZES}")
        out[path] = {"kind": unit.kind, "block": unit.block, "bits": bits, "group_size": group_size,
                     "execution": unit.execution}
    return out


def rebuild(model: nn.Module, found: Mapping[str, dict[str, Any]],
            weights: dict[str, mx.array]) -> tuple[nn.Module, dict[str, mx.array]]:
    """Make `model` (float) take the quantized `weights` that `found` (`saved_units`) describes.

    Linear layers become `Float32QuantizedLinear`, LSTM layers with a quantized weight
    `QuantizedBiLSTMLayer`, and quantized convolutions are dequantized into `weights`.
    """
    linear = {p: s for p, s in found.items() if s["kind"] == "linear"}
    if linear:
        modules = dict(model.named_modules())
        model.update_modules(tree_unflatten([
            (p, Float32QuantizedLinear.from_linear(modules[p], s["group_size"], s["bits"])) for p, s in linear.items()]))
    layers: dict[str, dict[str, dict[str, Any]]] = {}
    for path, spec in found.items():
        if spec["kind"] == "lstm":
            layer, direction, name = path.rsplit(".", 2)
            layers.setdefault(layer, {})[f"{direction}.{name}"] = spec
    for layer, specs in layers.items():
        index = int(layer.rsplit(".", 1)[1])
        model.lstm[index] = QuantizedBiLSTMLayer(model.lstm[index], specs)
    return model, expand(model, {p: s for p, s in found.items() if s["kind"] == "conv"}, weights)


def expand(model: nn.Module, found: Mapping[str, dict[str, Any]], weights: Mapping[str, mx.array]) -> dict[str, mx.array]:
    """`weights` with the units `found` names dequantized into the float parameters of `model`
    (whose float shapes they take): what a quantized unit computes with, as a plain weight."""
    shapes = dict(tree_flatten(model.parameters()))
    out = dict(weights)
    for path, spec in found.items():
        key = path if spec["kind"] == "lstm" else f"{path}.weight"
        packed, scales, biases = (out.pop(f"{path}.{n}") for n in ("weight", "scales", "biases"))
        flat = mx.dequantize(packed, scales, biases, spec["group_size"], spec["bits"])
        out[key] = flat.reshape(shapes[key].shape)
    return out


def parameter_share(model: nn.Module, quantized: Mapping[str, dict[str, Any]], role: str) -> tuple[int, int]:
    """(parameters in quantized units, all parameters) of the float `model`."""
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    return sum(u.size for u in units(model, role) if u.path in quantized), total


def quantized_matmul_t(x: mx.array, weight: mx.array, scales: mx.array, biases: mx.array,
                       group_size: int, bits: int) -> mx.array:
    """``x @ W.T`` for a packed (affine) W, accumulated in float32 whatever x's dtype; result in x's dtype.

    MLX's CPU kernel accumulates in its input dtype: over 5120 inputs (the embedding layer's
    size) bfloat16 gave a relative error of 7.9e-2 against the dequantized float32 product and
    float16 1.1e-2, where a dense matmul in the same dtypes gives 2.9e-3 / 3.7e-4 (MLX 0.32, CPU).
    So the product runs on float32 activations; scales and biases are float32 already (the
    converter stores them so and `precision.cast_arrays` keeps them so at load).
    """
    out = mx.quantized_matmul(x.astype(mx.float32), weight, scales, biases, transpose=True,
                              group_size=group_size, bits=bits)
    return out.astype(x.dtype)


class Float32QuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` whose product accumulates in float32 (`quantized_matmul_t`)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = quantized_matmul_t(x, self["weight"], self["scales"], self["biases"], self.group_size, self.bits)
        return y + self["bias"] if "bias" in self else y


class QuantizedWeight(nn.Module):
    """A packed (out, in) weight; calling it computes ``x @ W.T`` with `mx.quantized_matmul`."""

    def __init__(self, weight: mx.array, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.weight, self.scales, self.biases = mx.quantize(weight, group_size, bits)
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        return quantized_matmul_t(x, self.weight, self.scales, self.biases, self.group_size, self.bits)


def _matmul_t(x: mx.array, w: mx.array | QuantizedWeight) -> mx.array:
    """x @ w.T for a float or quantized weight."""
    return w(x) if isinstance(w, QuantizedWeight) else x @ w.T


class QuantizedLSTM(nn.Module):
    """One LSTM direction whose Wx and/or Wh is a `QuantizedWeight` (same names as `pyannet.LSTM`)."""

    def __init__(self, lstm: nn.Module, specs: Mapping[str, dict[str, Any]]):
        super().__init__()
        for name in LSTM_WEIGHTS:
            weight = getattr(lstm, name)
            spec = specs.get(name)
            setattr(self, name, weight if spec is None else QuantizedWeight(weight, spec["bits"], spec["group_size"]))
        self.bias = lstm.bias

    def input_projection(self, x: mx.array) -> mx.array:
        return _matmul_t(x, self.Wx) + self.bias


class QuantizedBiLSTMLayer(nn.Module):
    """`pyannet.BiLSTMLayer` with quantized weights; ``forward`` and ``backward`` as there.

    The input projections (every time step at once) are quantized matmuls. The recurrence runs on
    the recurrent weights dequantized once per call: a step's product with a 4H x H weight is
    small, and a quantized matmul per step (what this layer ran before) made each step several
    times slower on the CPU for the same values; `kernels.lstm_recurrence` then runs it as it runs
    a float layer's (the NumPy recurrence on the CPU's accelerated route, compiled MLX steps
    elsewhere).
    """

    def __init__(self, layer: nn.Module, specs: Mapping[str, dict[str, Any]]):
        super().__init__()
        directions = [d for d in ("forward", "backward") if d in layer]
        for d in directions:
            setattr(self, d, QuantizedLSTM(layer[d], {k.split(".")[1]: s for k, s in specs.items()
                                                       if k.startswith(d + ".")}))

    def _recurrent(self) -> mx.array:
        """(D,H,4H): each direction's Wh^T, dequantized where it is quantized."""
        whs = []
        for d in ("forward", "backward"):
            if d in self:
                wh = self[d].Wh
                if isinstance(wh, QuantizedWeight):
                    wh = mx.dequantize(wh.weight, wh.scales, wh.biases, wh.group_size, wh.bits)
                whs.append(wh.T)
        return mx.stack(whs)

    def time_major(self, x: mx.array) -> mx.array:
        """Time-major (T,B,D) -> (T,B,2H), or (T,B,H) when not bidirectional, as `pyannet.BiLSTMLayer`."""
        xp = [self.forward.input_projection(x)]
        if "backward" in self:
            xp.append(self.backward.input_projection(x[::-1]))
        hidden = lstm_recurrence(mx.stack(xp, axis=1), self._recurrent().astype(xp[0].dtype))  # (T,D,B,H)
        if "backward" not in self:
            return hidden[:, 0]
        return mx.concatenate([hidden[:, 0], hidden[::-1, 1]], axis=-1)

    def __call__(self, x: mx.array) -> mx.array:
        """Batch-first (B,T,D) -> (B,T,2H)."""
        return self.time_major(x.transpose(1, 0, 2)).transpose(1, 0, 2)
