"""Converted MLX model directories: layout, dtypes, (sharded) safetensors, and `load_model`.

    config.json                 hyper-parameters, dtype, precision policy, quantized units, sources + sha256,
                                versions, pipeline parameters
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

from mlx_diar import precision, quantize
from mlx_diar.errors import ModelDirError
from mlx_diar.models.pyannet import PyanNet, PyanNetConfig
from mlx_diar.models.wespeaker import WeSpeakerConfig, WeSpeakerResNet34

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 5 * 1024**3
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PLDA_FILE = "plda.safetensors"


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


def build_model(role_config: dict[str, Any]) -> nn.Module:
    """An (unloaded) float32 MLX model from its config.json entry."""
    arch = ARCHITECTURES[role_config["class"]]
    return arch.model(arch.config_class.from_dict(role_config["config"]))


def load_role(config: dict[str, Any], role: str, weights: dict[str, mx.array], where: Path) -> nn.Module:
    """Build `role`'s model as config.json and the saved keys describe it: quantized units read back
    from the ``.scales`` keys (and checked against config.json's record), then the precision policy."""
    model = build_model(config[role])
    try:
        found = quantize.saved_units(model, role, weights)
    except ValueError as e:
        raise ModelDirError(f"{where}: {role} weights: {e}") from None
    recorded = ((config.get("quantization") or {}).get("layers") or {}).get(role)
    if recorded is not None and recorded != found:
        diff = sorted(p for p in set(recorded) | set(found) if recorded.get(p) != found.get(p))
        raise ModelDirError(f"{where}: {role} quantized weights differ from config.json's record at {diff[:5]}")
    model, weights = quantize.rebuild(model, found, weights)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise ModelDirError(f"{where}: {role} weights do not match its config ({e})") from None
    precision.apply(model, role, precision.from_config(config, str(where / "config.json")))
    model.eval()
    mx.eval(model.parameters())
    return model


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
        prefix = f"{role}."
        own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        setattr(models, role, load_role(config, role, own, path))
    if "plda" in config:
        from safetensors.numpy import load_file

        models.plda = load_file(str(path / config["plda"]["file"]))
    return models


