"""Trust boundary for pipeline directories: what is read from them, and what pyannote is given.

A pipeline directory, local or downloaded from Hugging Face, is untrusted input. Handed to
pyannote.audio 4.0.7's `Pipeline.from_pretrained`, its config.yaml could instantiate any class
(`pipeline.name`, `preprocessors`), load pickles from anywhere (`{checkpoint, subfolder}`
entries, `$model/../x`, `$model//abs`, symlinks, `@revision` suffixes) and make pyannote import
the module a checkpoint names. So:

- config.yaml (or `--config NAME`, a plain file name in the directory) is parsed here with
  `yaml.safe_load` and checked against an allow-list (`check_config`) before anything else;
- every checkpoint and PLDA file it names must resolve, symlinks followed, inside the
  directory (`inside`); revision suffixes are refused;
- pyannote is only ever given a staged copy (`stage_pipeline`): the named files copied into a
  private temporary directory, each checkpoint there vetted by the safe loader
  (`mlx_diar.conversion.checkpoint.load_checkpoint`) and its architecture checked, and a config.yaml
  rebuilt from the checked values. What pyannote loads is exactly what was vetted.

Every refusal is an `UnsafeSourceError` naming the file and the field.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mlx_diar.errors import CheckpointError, UnsafeSourceError

MODEL_FILE = "pytorch_model.bin"
PLDA_FILES = ("xvec_transform.npz", "plda.npz")
MODEL_PREFIX = "$model/"
PIPELINE_CLASSES = frozenset({"pyannote.audio.pipelines.SpeakerDiarization",
                              "pyannote.audio.pipelines.speaker_diarization.SpeakerDiarization"})
CLUSTERINGS = ("AgglomerativeClustering", "KMeansClustering", "OracleClustering", "VBxClustering")
MODEL_ENTRIES = ("segmentation", "embedding", "plda")
HYPER_GROUPS = ("segmentation", "clustering")
ARCHITECTURE_MODULES = "pyannote.audio.models."
TELEMETRY_ENV = "MLX_DIAR_PYANNOTE_TELEMETRY"

_TOP_LEVEL = ("version", "dependencies", "pipeline", "params", "freeze", "device")
_DEVICES = ("cpu", "cuda", "mps")


def set_pyannote_telemetry() -> bool:
    """Turn pyannote.audio's telemetry off unless MLX_DIAR_PYANNOTE_TELEMETRY=1; returns whether it is on.

    pyannote.audio 4 sends usage metrics (pipeline and model loads, audio durations, speaker
    counts) to otel.pyannote.ai unless PYANNOTE_METRICS_ENABLED is false; it reads that variable
    at every call, so setting it here, before or after pyannote is imported, is enough.
    """
    enabled = os.environ.get(TELEMETRY_ENV, "").strip().lower() in ("1", "true", "yes")
    os.environ["PYANNOTE_METRICS_ENABLED"] = "true" if enabled else "false"
    return enabled


def inside(boundary: Path, path: Path, where: Path, field: str) -> Path:
    """`path` itself if, symlinks followed, it lies inside `boundary`; UnsafeSourceError otherwise."""
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(os.path.realpath(boundary)):
        raise UnsafeSourceError(f"{where}: {field} resolves to {resolved}, outside {boundary}; "
                                "only files inside the pipeline directory are read")
    return path


def relative_entry(text: str, where: Path, field: str, shown: str | None = None) -> str:
    """A relative path inside the directory: no absolute path, no `..`, no empty part, no `@revision`."""
    shown = text if shown is None else shown
    if "@" in text:
        raise UnsafeSourceError(f"{where}: {field} = {shown!r} has a revision suffix (@...): it would load "
                                "files of another revision than the one checked; remove it")
    parts = text.replace("\\", "/").split("/")
    if text.startswith(("/", "\\", "~")) or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise UnsafeSourceError(f"{where}: {field} = {shown!r} is not a plain relative path inside the "
                                "pipeline directory (absolute paths, `..` and empty parts are refused)")
    return "/".join(parts)


def config_file(root: Path, name: str, boundary: Path | None = None) -> Path:
    """`root/name` for a plain file name in the directory (`--config`), checked to stay inside it."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UnsafeSourceError(f"{root}: config {name!r} must be a plain file name inside the pipeline directory")
    path = root / name
    if not path.is_file():
        raise CheckpointError(f"{root}: no {name}: not a pipeline directory (or no such config file)")
    return inside(boundary or root, path, path, "the config file")


def _number(value: Any, where: Path, field: str, low: float, high: float = math.inf,
            integer: bool = False, low_open: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value < low or value > high \
            or (low_open and value == low):
        kind = "an integer" if integer else "a number"
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        limit = f" and <= {high:g}" if math.isfinite(high) else ""
        raise CheckpointError(f"{where}: {field} = {value!r} must be {kind} {bound}{limit}")


def _mapping(value: Any, where: Path, field: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{where}: {field} must be a mapping of names to values, got {value!r}")
    return value


def _unknown(keys: Any, allowed: tuple[str, ...], where: Path, field: str) -> None:
    extra = sorted(map(str, set(keys) - set(allowed)))
    if extra:
        raise UnsafeSourceError(f"{where}: {field}{'.' if field else ''}{extra[0]} is not allowed "
                                f"(allowed: {', '.join(allowed)}); it could make pyannote instantiate or "
                                "load something that was not checked")


def _hyper_parameters(value: Any, where: Path, field: str) -> None:
    """`params` / `freeze`: {group: {name: scalar}} for the pipeline's own groups."""
    _unknown(_mapping(value, where, field), HYPER_GROUPS, where, field)
    for group, entries in value.items():
        for name, leaf in _mapping(entries, where, f"{field}.{group}").items():
            if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                _number(leaf, where, f"{field}.{group}.{name}", -math.inf)
            elif not isinstance(leaf, (str, bool)):
                raise CheckpointError(f"{where}: {field}.{group}.{name} = {leaf!r} must be a number, "
                                      "string or boolean")


def _model_entry(value: Any, where: Path, field: str) -> str:
    if not isinstance(value, str) or not value.startswith(MODEL_PREFIX):
        raise UnsafeSourceError(f"{where}: {field} = {value!r} must be `$model/<subfolder>` (a folder of the "
                                "pipeline directory); other forms would load files that are not checked")
    return relative_entry(value[len(MODEL_PREFIX):], where, field, shown=value)


def check_config(config: Any, where: Path) -> dict[str, str]:
    """Check a parsed config.yaml against the allow-list; return {role: subfolder} of its model entries.

    Allowed: `pipeline.name` one of PIPELINE_CLASSES; `pipeline.params` with `$model/<subfolder>`
    segmentation/embedding/plda, a known clustering, batch sizes >= 1, 0 < segmentation_step <= 1,
    embedding_exclude_overlap, legacy, der_variant; `params`/`freeze` hyper-parameters;
    `version`, `dependencies` and `device`. Anything else (`preprocessors`, `token`, `cache_dir`,
    unknown keys) raises UnsafeSourceError; wrong types raise CheckpointError.
    """
    if not isinstance(config, dict) or "pipeline" not in config:
        raise CheckpointError(f"{where}: no `pipeline` section: not a pyannote pipeline config")
    _unknown(config, _TOP_LEVEL, where, "")
    pipeline = _mapping(config["pipeline"], where, "pipeline")
    _unknown(pipeline, ("name", "params"), where, "pipeline")
    if not isinstance(pipeline.get("name"), str) or pipeline["name"] not in PIPELINE_CLASSES:
        raise UnsafeSourceError(f"{where}: pipeline.name = {pipeline.get('name')!r} is not an allowed pipeline "
                                f"class (allowed: {', '.join(sorted(PIPELINE_CLASSES))})")
    params = _mapping(pipeline.get("params", {}), where, "pipeline.params")
    checks = {
        "clustering": lambda v, f: _choice(v, CLUSTERINGS, where, f),
        "embedding_batch_size": lambda v, f: _number(v, where, f, 1, integer=True),
        "segmentation_batch_size": lambda v, f: _number(v, where, f, 1, integer=True),
        "segmentation_step": lambda v, f: _number(v, where, f, 0, 1, low_open=True),
        "embedding_exclude_overlap": lambda v, f: _boolean(v, where, f),
        "legacy": lambda v, f: _boolean(v, where, f),
        "der_variant": lambda v, f: _der_variant(v, where, f),
    }
    _unknown(params, MODEL_ENTRIES + tuple(checks), where, "pipeline.params")
    entries = {}
    for key, value in params.items():
        if key in MODEL_ENTRIES:
            entries[key] = _model_entry(value, where, f"pipeline.params.{key}")
        else:
            checks[key](value, f"pipeline.params.{key}")
    for key in ("params", "freeze"):
        if key in config:
            _hyper_parameters(config[key], where, key)
    if "dependencies" in config:
        for name, spec in _mapping(config["dependencies"], where, "dependencies").items():
            if not isinstance(spec, (str, int, float)):
                raise CheckpointError(f"{where}: dependencies.{name} = {spec!r} must be a version string")
    if "version" in config and not isinstance(config["version"], (str, int, float)):
        raise CheckpointError(f"{where}: version = {config['version']!r} must be a version string")
    device = config.get("device", "cpu")
    _choice(device.split(":")[0] if isinstance(device, str) else device, _DEVICES, where, "device")
    return entries


def _choice(value: Any, choices: tuple[str, ...], where: Path, field: str) -> None:
    if value not in choices:
        raise CheckpointError(f"{where}: {field} = {value!r} must be one of {', '.join(choices)}")


def _boolean(value: Any, where: Path, field: str) -> None:
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {field} = {value!r} must be true or false")


def _der_variant(value: Any, where: Path, field: str) -> None:
    _unknown(_mapping(value, where, field), ("collar", "skip_overlap"), where, field)
    if "collar" in value:
        _number(value["collar"], where, f"{field}.collar", 0)
    if "skip_overlap" in value:
        _boolean(value["skip_overlap"], where, f"{field}.skip_overlap")


def vet_checkpoint(path: Path) -> dict[str, Any]:
    """Read `path` with the safe loader and check that it names a pyannote.audio.models architecture.

    pyannote's `Model.from_pretrained` imports the module the checkpoint names; only
    pyannote.audio's own model modules are accepted.
    """
    from mlx_diar.conversion.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    architecture = checkpoint["pyannote.audio"].get("architecture", {}) if isinstance(
        checkpoint["pyannote.audio"], dict) else {}
    module, klass = architecture.get("module"), architecture.get("class")
    if not (isinstance(module, str) and module.startswith(ARCHITECTURE_MODULES) and isinstance(klass, str)
            and klass.isidentifier() and all(p.isidentifier() for p in module.split("."))):
        raise UnsafeSourceError(f"{path}: pyannote.audio.architecture names {module!r}.{klass!r}; only classes "
                                f"of {ARCHITECTURE_MODULES}* are loaded")
    return checkpoint


def stage_pipeline(source: Any, dest: Path) -> Path:
    """Copy a resolved pipeline (`mlx_diar.conversion.sources.PipelineSource`) into `dest` for pyannote; returns `dest`.

    `dest` should be a fresh private directory. Checkpoints are vetted after copying (so the
    vetted bytes are the ones pyannote reads), and config.yaml is rebuilt from the checked
    config with `$model/segmentation`, `$model/embedding` and `$model/plda`.
    """
    from mlx_diar.clustering.plda import read_plda_npz
    from mlx_diar.fsutil import atomic_write

    where = source.config_path
    missing = [role for role in MODEL_ENTRIES if getattr(source, role) is None]
    if missing:
        raise UnsafeSourceError(f"{where}: pipeline.params.{missing[0]} is missing: pyannote would download "
                                "its default from Hugging Face, unchecked; name it as `$model/<subfolder>`")
    for role in ("segmentation", "embedding"):
        target = dest / role / MODEL_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(getattr(source, role), target)
        vet_checkpoint(target)
    (dest / "plda").mkdir(exist_ok=True)
    for name in PLDA_FILES:
        shutil.copyfile(source.plda / name, dest / "plda" / name)
    try:  # numeric, finite, consistent arrays (no pickle): pyannote would fail on them with a traceback
        read_plda_npz(*(dest / "plda" / name for name in PLDA_FILES))
    except CheckpointError as e:
        raise CheckpointError(str(e).replace(str(dest / "plda"), str(source.plda))) from None
    config = copy.deepcopy(source.config)
    config["pipeline"].setdefault("params", {}).update({role: f"{MODEL_PREFIX}{role}" for role in MODEL_ENTRIES})
    atomic_write(dest / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return dest
