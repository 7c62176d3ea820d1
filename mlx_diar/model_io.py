"""Converted MLX model directories: layout, dtypes, (sharded) safetensors, and `load_model`.

    config.json                 hyper-parameters, dtype, sources + sha256, versions, pipeline parameters
    model.safetensors           or model-0000k-of-0000N.safetensors + model.safetensors.index.json
    plda.safetensors            (full pipelines) PLDA / LDA arrays in float64
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_diar.errors import ModelDirError
from mlx_diar.models.pyannet import PyanNet, PyanNetConfig
from mlx_diar.models.wespeaker import WeSpeakerConfig, WeSpeakerResNet34

FORMAT_VERSION = 1
CONVERTER_VERSION = 1  # bump when a sanitize or the on-disk layout changes: cached conversions are then redone
DEFAULT_SHARD_SIZE = 5 * 1024**3
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PLDA_FILE = "plda.safetensors"
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one pyannote architecture maps to its MLX model."""

    role: str  # "segmentation" or "embedding"
    model: type[nn.Module]
    config_class: type
    config_from_checkpoint: Callable[..., Any]


def _pyannet_config(info, fold_bn: bool = False) -> PyanNetConfig:
    if info.specifications is None:
        raise ModelDirError(f"{info.path}: PyanNet checkpoint without task specifications")
    return PyanNetConfig.from_checkpoint(info.hyper_parameters, info.specifications)


def _wespeaker_config(info, fold_bn: bool = False) -> WeSpeakerConfig:
    return dataclasses.replace(WeSpeakerConfig.from_checkpoint(info.hyper_parameters), folded_bn=fold_bn)


ARCHITECTURES: dict[str, Architecture] = {
    "PyanNet": Architecture("segmentation", PyanNet, PyanNetConfig, _pyannet_config),
    "WeSpeakerResNet34": Architecture("embedding", WeSpeakerResNet34, WeSpeakerConfig, _wespeaker_config),
}


def quantizable(group_size: int) -> Callable[[str, nn.Module], bool]:
    """`nn.quantize` predicate: Linear layers whose input size the group size divides.

    Only Linear layers are quantized (PyanNet's linear.* and classifier, WeSpeaker's seg_1);
    convolutions and LSTM weights keep the model dtype.
    """
    return lambda _path, module: isinstance(module, nn.Linear) and module.weight.shape[-1] % group_size == 0


def build_model(role_config: dict[str, Any], quantization: dict[str, int] | None = None) -> nn.Module:
    """An (unloaded) MLX model from its config.json entry, quantized as the config says."""
    arch = ARCHITECTURES[role_config["class"]]
    model = arch.model(arch.config_class.from_dict(role_config["config"]))
    if quantization:
        nn.quantize(model, group_size=quantization["group_size"], bits=quantization["bits"],
                    class_predicate=quantizable(quantization["group_size"]))
    return model


def _to_mx(array: np.ndarray, dtype: str) -> mx.array:
    """NumPy -> MLX in `dtype`; bfloat16 goes through a float32 mx.array (NumPy has no bfloat16)."""
    if not np.issubdtype(array.dtype, np.floating):
        return mx.array(array)
    return mx.array(np.asarray(array, dtype=np.float32)).astype(DTYPES[dtype])


def to_mlx_weights(weights: dict[str, np.ndarray], dtype: str) -> dict[str, mx.array]:
    """NumPy weights -> MLX arrays in `dtype` (integer arrays unchanged)."""
    return {name: _to_mx(value, dtype) for name, value in sorted(weights.items())}


def save_weights(directory: Path, arrays: dict[str, mx.array], dtype: str, shard_size: int) -> list[str]:
    """Write `arrays` as one safetensors file, or as shards of at most `shard_size` bytes plus an index."""
    total = sum(a.nbytes for a in arrays.values())
    shards: list[dict[str, mx.array]] = [{}]
    size = 0
    for name, array in arrays.items():
        if shards[-1] and size + array.nbytes > shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    metadata = {"format": "mlx", "dtype": dtype}
    if len(shards) == 1:
        mx.save_safetensors(str(directory / WEIGHTS_FILE), shards[0], metadata=metadata)
        return [WEIGHTS_FILE]
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        mx.save_safetensors(str(directory / name), shard, metadata=metadata)
        weight_map.update({key: name for key in shard})
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                   indent=1))
    return names


def load_weights(directory: Path) -> dict[str, mx.array]:
    """Read `model.safetensors`, or every shard listed in the index."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise ModelDirError(f"{directory}: neither {WEIGHTS_FILE} nor {INDEX_FILE}: not a converted model")
    weights: dict[str, mx.array] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise ModelDirError(f"{path}: shard listed in {INDEX_FILE} is missing")
        try:
            weights.update(mx.load(str(path)))
        except Exception as e:  # corrupt file
            raise ModelDirError(f"{path}: cannot read weights ({e})") from None
    return weights


@dataclasses.dataclass
class MLXModels:
    """What `load_model` returns: the config and whichever models/PLDA the directory holds."""

    path: Path
    config: dict[str, Any]
    segmentation: PyanNet | None = None
    embedding: WeSpeakerResNet34 | None = None
    plda: dict[str, np.ndarray] | None = None

    @property
    def dtype(self) -> str:
        return self.config["dtype"]


def load_model(path: str | Path) -> MLXModels:
    """Load a directory written by `mlx_diar.convert` (sharded or not)."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelDirError(f"{path}: no config.json: not a converted mlx-diar model")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise ModelDirError(f"{config_path}: invalid JSON ({e})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{config_path}: format_version {config.get('format_version')}, expected {FORMAT_VERSION}")
    weights = load_weights(path)
    models = MLXModels(path=path, config=config)
    for role in ("segmentation", "embedding"):
        if role not in config:
            continue
        model = build_model(config[role], config.get("quantization"))
        prefix = f"{role}."
        own = [(k[len(prefix):], v) for k, v in weights.items() if k.startswith(prefix)]
        try:
            model.load_weights(own, strict=True)
        except ValueError as e:
            raise ModelDirError(f"{path}: {role} weights do not match its config ({e})") from None
        model.eval()
        mx.eval(model.parameters())
        setattr(models, role, model)
    if "plda" in config:
        from safetensors.numpy import load_file

        models.plda = load_file(str(path / config["plda"]["file"]))
    return models


