"""Converted MLX model directories: layout, dtypes, (sharded) safetensors, and `load_model`.

    config.json                 hyper-parameters, dtype, precision policy, quantized units, sources + sha256,
                                versions, pipeline parameters
    model.safetensors           or model-0000k-of-0000N.safetensors + model.safetensors.index.json
    plda.safetensors            (full pipelines) PLDA / LDA arrays in float64
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_diar.clustering.plda import check_plda_arrays
from mlx_diar.conversion import precision, quantize
from mlx_diar.errors import ModelDirError
from mlx_diar.fsutil import atomic_path, atomic_write
from mlx_diar.models.pyannet import PyanNet, PyanNetConfig
from mlx_diar.models.wespeaker import WeSpeakerConfig, WeSpeakerResNet34

FORMAT_VERSION = 1
CONVERTER_VERSION = 4  # 2: precision policy, quantized LSTM/conv units; 3: float32 quantization scales, LSTM float32 in the default half-precision policies; 4: quantized models keep the segmentation LSTM and classifier float. Bump when a sanitize or the on-disk layout changes: cached conversions are then redone
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


# How a loaded model computes: "native" as the directory stores it (reduced blocks in their dtype,
# quantized units as quantized matmuls: what a GPU runs); "float32" with every weight expanded to
# float32 at load (quantized units dequantized, reduced weights cast): on a device without fast
# reduced or quantized kernels (MLX's CPU backend) a reduced or quantized model then saves size,
# not compute, and runs as fast as the float32 model, with its rounded weights.
COMPUTE = ("native", "float32")


def load_role(config: dict[str, Any], role: str, weights: dict[str, mx.array], where: Path,
              compute: str = "native") -> nn.Module:
    """Build `role`'s model as config.json and the saved keys describe it: quantized units read back
    from the ``.scales`` keys (and checked against config.json's record), then the precision policy
    (`compute` "native"), or every weight expanded to float32 (`compute` "float32")."""
    try:
        model = build_model(config[role])
    except (ValueError, TypeError) as e:
        raise ModelDirError(f"{where / 'config.json'}: {role}.config cannot build a model ({e})") from None
    try:
        found = quantize.saved_units(model, role, weights)
    except ValueError as e:
        raise ModelDirError(f"{where}: {role} weights: {e}") from None
    recorded = ((config.get("quantization") or {}).get("layers") or {}).get(role)
    if recorded is not None and recorded != found:
        diff = sorted(p for p in set(recorded) | set(found) if recorded.get(p) != found.get(p))
        raise ModelDirError(f"{where}: {role} quantized weights differ from config.json's record at {diff[:5]}")
    policy = precision.from_config(config, str(where / "config.json"))
    _check_dtypes(role, weights, found, policy, where)
    if compute == "float32":
        weights, policy = quantize.expand(model, found, weights), precision.uniform("float32")
    else:
        model, weights = quantize.rebuild(model, found, weights)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise ModelDirError(f"{where}: {role} weights do not match its config ({e})") from None
    precision.apply(model, role, policy)
    model.eval()
    mx.eval(model.parameters())
    return model


_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


def _check_dtypes(role: str, weights: dict[str, mx.array], found: dict[str, dict[str, Any]],
                  policy: precision.Policy, where: Path) -> None:
    """Each tensor stored in the dtype config.json says (its block's precision; a quantized unit's packed
    weight uint32, its scales and biases floating): a relabelled tensor would be read as garbage.
    Shapes are checked by the strict load that follows, unknown keys too."""
    for key, value in weights.items():
        unit, _, leaf = key.rpartition(".")
        if unit in found:
            allowed = (mx.uint32,) if leaf == "weight" else _FLOATS
        else:
            try:
                allowed = (precision.DTYPES[policy[role][precision.block_of(role, key)].weights],)
            except ValueError:
                continue
        if value.dtype not in allowed:
            want = " or ".join(str(d).removeprefix("mlx.core.") for d in allowed)
            raise ModelDirError(f"{_file_of(where, f'{role}.{key}')}: tensor {role}.{key} is stored as "
                                f"{str(value.dtype).removeprefix('mlx.core.')}, config.json says {want}")


def _file_of(directory: Path, key: str) -> Path:
    """The weight file holding tensor `key` (for messages)."""
    try:
        return directory / json.loads((directory / INDEX_FILE).read_text())["weight_map"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return directory / WEIGHTS_FILE


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
        names = [WEIGHTS_FILE]
    else:
        names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for name, shard in zip(names, shards):
        with atomic_path(directory / name, suffix=".safetensors") as tmp:  # the umask's mode, not MLX's 0644
            mx.save_safetensors(str(tmp), shard, metadata=metadata)
    if len(shards) == 1:
        return names
    weight_map = {key: name for name, shard in zip(names, shards) for key in shard}
    atomic_write(directory / INDEX_FILE, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                    indent=1))
    return names


def _member(directory: Path, name: Any, where: Path, field: str) -> Path:
    """`directory/name` for a plain file name that, symlinks followed, stays inside `directory`."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ModelDirError(f"{where}: {field} = {name!r} must be a plain file name inside {directory}")
    path = directory / name
    if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory)):
        raise ModelDirError(f"{where}: {field} = {name!r} resolves outside {directory}")
    return path


def load_weights(directory: Path) -> dict[str, mx.array]:
    """Read `model.safetensors`, or every shard listed in the index (plain file names inside `directory`)."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelDirError(f"{index}: not a safetensors index (needs a weight_map object): {e}") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelDirError(f"{index}: weight_map must be a non-empty object of tensor name -> file name")
        files = sorted({_member(directory, name, index, f"weight_map[{key!r}]") for key, name in weight_map.items()})
    elif (directory / WEIGHTS_FILE).is_file():
        files = [_member(directory, WEIGHTS_FILE, directory, WEIGHTS_FILE)]
    else:
        raise ModelDirError(f"{directory}: neither {WEIGHTS_FILE} nor {INDEX_FILE}: not a converted model")
    weights: dict[str, mx.array] = {}
    for path in files:
        if not path.is_file():
            raise ModelDirError(f"{path}: shard listed in {INDEX_FILE} is missing")
        try:
            shard = mx.load(str(path))
        except Exception as e:  # corrupt file
            raise ModelDirError(f"{path}: cannot read weights ({e})") from None
        for key, value in shard.items():
            if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item():
                raise ModelDirError(f"{path}: tensor {key} holds NaN or infinite values")
        weights.update(shard)
    return weights


# Numeric model hyper-parameters that must be > 0 (the others must be >= 0); all are bounded
# so that a forged config cannot make `build_model` allocate absurd arrays.
_POSITIVE = frozenset({"sample_rate", "sincnet_stride", "lstm_hidden_size", "lstm_num_layers", "linear_hidden_size",
                       "duration", "num_channels", "num_mel_bins", "frame_length", "frame_shift", "embed_dim",
                       "m_channels", "num_blocks", "powerset_max_classes", "fbank_centering_span"})
_MAX_VALUE = 1e6
_PIPELINE_PARAMS = {"segmentation_step": (0.0, 1.0, float), "segmentation_batch_size": (1, 1 << 16, int),
                    "embedding_batch_size": (1, 1 << 16, int)}


def _number_ok(value: Any, kind: type, low: float, high: float, open_low: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return False
    return math.isfinite(value) and (value > low if open_low else value >= low) and value <= high


def _type_ok(hint: Any, value: Any, positive: bool) -> bool:
    """Whether a JSON value fits a dataclass field annotation (int, float, bool, str, list, tuple, X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value, positive) for a in args)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return _number_ok(value, hint, 0, _MAX_VALUE, positive)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(a, v, positive) for a, v in zip(args, value))
        return all(_type_ok(args[0], v, positive) for v in value) if args else True
    return True


def _check_role(config: dict[str, Any], role: str, where: Path) -> None:
    entry = config[role]
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ModelDirError(f"{where}: {role} must be an object with `class` and `config`")
    arch = ARCHITECTURES.get(entry.get("class"))
    if arch is None or arch.role != role:
        known = [name for name, a in ARCHITECTURES.items() if a.role == role]
        raise ModelDirError(f"{where}: {role}.class = {entry.get('class')!r} must be one of {known}")
    hints = typing.get_type_hints(arch.config_class)
    for name, value in entry["config"].items():
        if name in hints and not _type_ok(hints[name], value, name in _POSITIVE):
            bound = "> 0" if name in _POSITIVE else ">= 0"
            kind = getattr(hints[name], "__name__", str(hints[name]))
            raise ModelDirError(f"{where}: {role}.config.{name} = {value!r} is not a valid {kind} "
                                f"(numbers {bound} and <= {_MAX_VALUE:g})")


_QUANTIZATION_KEYS = {"bits", "group_size", "layers", "parameters", "kept_8bit", "kept_float"}


def validate_config(config: Any, where: Path) -> dict[str, Any]:
    """Check a model directory's config.json before anything is built from it; returns it.

    Each problem is a ModelDirError naming the file and the field: an object is required,
    format_version and dtype known, quantization well-formed, model configs with numbers
    where numbers belong (durations, steps and sizes > 0), pipeline parameters in range,
    the PLDA file a plain name inside the directory.
    """
    if not isinstance(config, dict):
        raise ModelDirError(f"{where}: must be a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{where}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}")
    if config.get("dtype") not in precision.DTYPES:
        raise ModelDirError(f"{where}: dtype = {config.get('dtype')!r} must be one of {list(precision.DTYPES)}")
    quantization = config.get("quantization")
    if quantization is not None and not (isinstance(quantization, dict)
                                         and {"bits", "group_size"} <= set(quantization) <= _QUANTIZATION_KEYS
                                         and quantization["bits"] in quantize.BITS
                                         and quantization["group_size"] in quantize.GROUP_SIZES
                                         and isinstance(quantization.get("layers", {}), dict)):
        raise ModelDirError(f"{where}: quantization = {str(quantization)[:200]} must be null or "
                            '{"bits": 4|8, "group_size": 32|64|128, "layers": {...}, ...}')
    for role in ("segmentation", "embedding"):
        if role in config:
            _check_role(config, role, where)
    if "plda" in config and not isinstance(config["plda"], dict):
        raise ModelDirError(f"{where}: plda must be an object with a `file` entry")
    pipeline = config.get("pipeline", {})
    params = pipeline.get("params", {}) if isinstance(pipeline, dict) else None
    if not isinstance(params, dict) or not isinstance(pipeline.get("hyper_parameters", {}), dict):
        raise ModelDirError(f"{where}: pipeline must be an object with `params` and `hyper_parameters` objects")
    for name, (low, high, kind) in _PIPELINE_PARAMS.items():
        if name in params and not _number_ok(params[name], kind, low, high, open_low=kind is float):
            raise ModelDirError(f"{where}: pipeline.params.{name} = {params[name]!r} must be a"
                                f"{'n integer' if kind is int else ' number'} in {'(' if kind is float else '['}"
                                f"{low:g}, {high:g}]")
    return config


@dataclasses.dataclass
class MLXModels:
    """What `load_model` returns: the config and whichever models/PLDA the directory holds."""

    path: Path
    config: dict[str, Any]
    segmentation: PyanNet | None = None
    embedding: WeSpeakerResNet34 | None = None
    plda: dict[str, np.ndarray] | None = None
    compute: str = "native"  # see COMPUTE

    @property
    def dtype(self) -> str:
        return self.config["dtype"]

    @property
    def expanded(self) -> bool:
        """Whether a reduced or quantized directory was loaded with its weights expanded to float32."""
        return self.compute == "float32" and (self.dtype != "float32" or bool(self.config.get("quantization")))


def load_model(path: str | Path, compute: str = "native") -> MLXModels:
    """Load a directory written by `mlx_diar.convert` (sharded or not), computing as `compute` says
    (`COMPUTE`); ModelDirError names any problem."""
    if compute not in COMPUTE:
        raise ValueError(f"compute must be one of {COMPUTE}, got {compute!r}")
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelDirError(f"{path}: no config.json: not a converted mlx-diar model")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{config_path}: invalid JSON ({e})") from None
    validate_config(config, config_path)
    plda_path = _member(path, config["plda"].get("file"), config_path, "plda.file") if "plda" in config else None
    weights = load_weights(path)
    models = MLXModels(path=path, config=config, compute=compute)
    for role in ("segmentation", "embedding"):
        if role not in config:
            continue
        prefix = f"{role}."
        own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        setattr(models, role, load_role(config, role, own, path, compute))
    if plda_path is not None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            models.plda = check_plda_arrays(load_file(str(plda_path)))
        except (OSError, SafetensorError) as e:
            raise ModelDirError(f"{plda_path}: cannot read the PLDA arrays ({e})") from None
        except ValueError as e:
            raise ModelDirError(f"{plda_path}: {e}") from None
    return models
