"""Precision policy as data: per model block, the dtype its weights are stored in and the dtype it computes in.

A policy maps role ("segmentation", "embedding") -> block -> `BlockPrecision`. The blocks are
the stages of the two models (`BLOCKS`); each owns the parameters under its path prefixes.
`config.json` stores the policy (`to_config`), the converter stores each block's weights in
its `weights` dtype, and the loader casts them to the `compute` dtype and hands the models
one compute dtype per block (`apply`): models cast activations at block boundaries only.

The NumPy stages (L2 normalisation, PLDA, clustering) always run in float32/float64, as
pyannote's; `NUMPY_STAGES` records that in `config.json`.

`policy(dtype, "default")` keeps the blocks of `KEEP_FLOAT32` in float32, a choice made from
the precision-sensitivity map (`python -m harness sensitivity`, docs/precision.md);
`policy(dtype, "pure")` reduces every block (the naive variant, reported but never gated).
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_diar.errors import ModelDirError

DTYPES: dict[str, mx.Dtype] = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
REDUCED = ("float16", "bfloat16")
MODES = ("default", "pure")


@dataclasses.dataclass(frozen=True)
class Block:
    """A stage of a model: its name and the parameter path prefixes it owns (none: parameter-free)."""

    name: str
    params: tuple[str, ...] = ()
    note: str = ""


BLOCKS: dict[str, tuple[Block, ...]] = {
    "segmentation": (
        Block("sincnet", ("sincnet",), "sinc filterbank + 2 convolutions, max-pool, instance norm (its statistics "
                                       "are always float32)"),
        Block("lstm", ("lstm",), "4 bidirectional LSTM layers"),
        Block("linear", ("linear",), "2 feed-forward layers"),
        Block("classifier", ("classifier",), "output layer (powerset logits)"),
        Block("activation", (), "log-softmax over the powerset classes"),
    ),
    "embedding": (
        Block("fbank", (), "Kaldi fbank: the FFT runs in float32 only; reduced = features rounded on output"),
        Block("stem", ("resnet.conv1", "resnet.bn1"), "first convolution + BatchNorm"),
        Block("layer1", ("resnet.layer1",), "3 BasicBlocks, 32 channels"),
        Block("layer2", ("resnet.layer2",), "4 BasicBlocks, 64 channels"),
        Block("layer3", ("resnet.layer3",), "6 BasicBlocks, 128 channels"),
        Block("layer4", ("resnet.layer4",), "3 BasicBlocks, 256 channels"),
        Block("pool", (), "statistics pooling (weighted mean and std)"),
        Block("embedding", ("resnet.seg_1", "resnet.seg_bn_1", "resnet.seg_2"), "output layer(s)"),
    ),
}
NUMPY_STAGES = {"l2_norm_plda": "float64", "clustering": "float32/float64 as pyannote (NumPy)"}

# The default policy's blocks kept in float32 whatever --dtype says (see the sensitivity map in
# docs/precision.md: these are the blocks whose reduction alone costs the most at the output).
KEEP_FLOAT32: dict[str, dict[str, frozenset[str]]] = {
    "float16": {"segmentation": frozenset({"sincnet", "lstm", "activation"}),
                "embedding": frozenset({"fbank", "pool"})},
    "bfloat16": {"segmentation": frozenset({"sincnet", "lstm", "activation"}),
                 "embedding": frozenset({"fbank", "pool"})},
}


@dataclasses.dataclass(frozen=True)
class BlockPrecision:
    """Storage dtype of a block's weights and the dtype it computes in."""

    weights: str = "float32"
    compute: str = "float32"

    def __post_init__(self) -> None:
        for field, value in (("weights", self.weights), ("compute", self.compute)):
            if value not in DTYPES:
                raise ValueError(f"precision {field} dtype must be one of {tuple(DTYPES)}, got {value!r}")


Policy = dict[str, dict[str, BlockPrecision]]


def block_names(role: str) -> tuple[str, ...]:
    return tuple(b.name for b in BLOCKS[role])


def uniform(dtype: str = "float32") -> Policy:
    """Every block in `dtype` (float32: the exact port; a reduced dtype: the naive 'pure' variant)."""
    return {role: {name: BlockPrecision(dtype, dtype) for name in block_names(role)} for role in BLOCKS}


def policy(dtype: str, mode: str = "default") -> Policy:
    """The policy `--dtype dtype --precision mode` selects."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if mode not in MODES:
        raise ValueError(f"precision must be one of {MODES}, got {mode!r}")
    if dtype == "float32" or mode == "pure":
        return uniform(dtype)
    keep = KEEP_FLOAT32[dtype]
    return {role: {name: BlockPrecision(*(("float32",) * 2 if name in keep[role] else (dtype,) * 2))
                   for name in block_names(role)} for role in BLOCKS}


def with_blocks(base: Policy, dtype: str, blocks: Mapping[str, set[str] | frozenset[str]]) -> Policy:
    """`base` with the blocks named per role set to `dtype` (weights and compute): the sensitivity map's probes."""
    out = {role: dict(entries) for role, entries in base.items()}
    for role, names in blocks.items():
        unknown = set(names) - set(block_names(role))
        if unknown:
            raise ValueError(f"unknown {role} blocks {sorted(unknown)}; known: {block_names(role)}")
        out[role].update({name: BlockPrecision(dtype, dtype) for name in names})
    return out


def to_config(p: Policy, name: str) -> dict[str, Any]:
    """JSON form stored under config.json's "precision"."""
    return {"name": name, **{role: {b: dataclasses.asdict(bp) for b, bp in blocks.items()} for role, blocks in p.items()},
            "numpy_stages": dict(NUMPY_STAGES)}


def from_config(config: dict[str, Any], where: str = "config.json") -> Policy:
    """Inverse of `to_config`; a config without "precision" (older format) is uniform in its "dtype"."""
    entry = config.get("precision")
    if entry is None:
        return uniform(config.get("dtype", "float32"))
    out: Policy = {}
    for role in BLOCKS:
        blocks = entry.get(role, {})
        if set(blocks) != set(block_names(role)):
            raise ModelDirError(f"{where}: precision.{role} names blocks {sorted(blocks)}, "
                                f"expected {sorted(block_names(role))}")
        try:
            out[role] = {b: BlockPrecision(**blocks[b]) for b in block_names(role)}
        except (TypeError, ValueError) as e:
            raise ModelDirError(f"{where}: precision.{role}: {e}") from None
    return out


def block_of(role: str, path: str) -> str:
    """The block owning parameter `path` (longest matching prefix)."""
    best = ""
    name = None
    for block in BLOCKS[role]:
        for prefix in block.params:
            if (path == prefix or path.startswith(prefix + ".")) and len(prefix) > len(best):
                best, name = prefix, block.name
    if name is None:
        raise ValueError(f"{role} parameter {path!r} belongs to no precision block")
    return name


# a quantized unit's per-group scales and biases (mlx_diar.conversion.quantize): always float32, whatever the block's dtype
QUANTIZATION_PARAMS = (".scales", ".biases")


def cast_arrays(arrays: Mapping[str, mx.array], role: str, p: Policy, which: str) -> dict[str, mx.array]:
    """Floating arrays cast to their block's `which` ("weights" or "compute") dtype, quantization
    scales and biases to float32 (also those an older converter stored reduced); integer arrays unchanged."""
    out = {}
    for path, value in arrays.items():
        if path.endswith(QUANTIZATION_PARAMS):
            value = value.astype(mx.float32)
        elif mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(DTYPES[getattr(p[role][block_of(role, path)], which)])
        out[path] = value
    return out


def compute_dtypes(role: str, p: Policy | None = None) -> Mapping[str, mx.Dtype]:
    """Read-only block -> compute dtype map that a model casts its activations with (default float32)."""
    p = p or uniform()
    return MappingProxyType({b: DTYPES[bp.compute] for b, bp in p[role].items()})


def apply(model: nn.Module, role: str, p: Policy) -> nn.Module:
    """Cast `model`'s parameters to their blocks' compute dtypes and give it the per-block compute dtypes."""
    arrays = cast_arrays(dict(tree_flatten(model.parameters())), role, p, "compute")
    model.update(tree_unflatten(list(arrays.items())))
    model.set_compute_dtypes(compute_dtypes(role, p))
    return model
