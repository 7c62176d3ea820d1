"""Convert pyannote checkpoints (segmentation, embedding, or a whole pipeline) to an MLX model directory.

    python -m mlx_diar.convert --pytorch-path P --mlx-path M --model-type full --dtype float16

P is a Hugging Face id, a local pipeline directory laid out like community-1, or one
checkpoint file. Checkpoints are read without torch (`mlx_diar.conversion.checkpoint`). Output
(see `mlx_diar.conversion.model_io`): `config.json`, `model.safetensors` (or shards + index) and,
for `full`, `plda.safetensors`; with `--parity-report` a model card (README.md), and with
`--upload-repo ORG/NAME` the upload to the Hugging Face Hub (`mlx_diar.conversion.publish`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_diar.clustering.plda import read_plda_npz
from mlx_diar.conversion import precision
from mlx_diar.conversion import quantize as quantize_module
from mlx_diar.conversion.checkpoint import read_checkpoint, sha256sum
from mlx_diar.errors import USER_ERRORS, ArgumentParser, CheckpointError, OptionError, report
from mlx_diar.fsutil import atomic_directory, atomic_path, atomic_write, check_directory_target
from mlx_diar.conversion.model_io import ARCHITECTURES, DEFAULT_SHARD_SIZE, FORMAT_VERSION, PLDA_FILE, build_model, save_weights
from mlx_diar.provenance import package_versions
from mlx_diar.conversion.sources import PLDA_FILES, PipelineSource, resolve_checkpoint, resolve_pipeline
from mlx_diar.conversion.variant import Variant

MODEL_TYPES = ("segmentation", "embedding", "full")
QUANT_BITS = quantize_module.BITS


def _precision_name(dtype: str, mode: str) -> str:
    return dtype if dtype == "float32" else f"{dtype}-{mode}"


def _convert_one(path: Path, role: str, fold_bn: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read one checkpoint; return its config.json entry and sanitized float weights (NumPy)."""
    info = read_checkpoint(path)
    if info.klass not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unsupported architecture {info.module}.{info.klass} "
                              f"(supported: {', '.join(ARCHITECTURES)})")
    arch = ARCHITECTURES[info.klass]
    if arch.role != role:
        raise CheckpointError(f"{path}: holds a {arch.role} model ({info.klass}), expected a {role} model")
    for name, value in info.state_dict.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values")
    config = arch.config_from_checkpoint(info, fold_bn=fold_bn)
    try:
        weights = arch.model.sanitize(info.state_dict, config)
    except ValueError as e:
        raise CheckpointError(f"{path}: {' '.join(str(e).split())}") from None
    entry = {
        "class": info.klass,
        "mirrors": f"{info.module}.{info.klass}",
        "config": config.to_dict(),
        "source": {"path": str(path), "sha256": info.sha256, "versions": info.versions},
    }
    return entry, weights


def _plda_arrays(plda_dir: Path) -> dict[str, np.ndarray]:
    return read_plda_npz(*(plda_dir / name for name in PLDA_FILES))


def _check_output(mlx_path: Path, sources: list[Path], force: bool) -> None:
    """Refuse an output directory that would destroy an input or content that is not a converted model.

    The output may not equal, lie inside, or contain any file or directory read. An existing
    non-empty output is replaced only with `force`, and only when it is an mlx-diar model
    directory (a config.json with `format_version`): `--force` never deletes arbitrary content.
    """
    out = Path(os.path.realpath(mlx_path))
    for source in sources:
        src = Path(os.path.realpath(source))
        if out == src or src.is_relative_to(out) or (src.is_dir() and out.is_relative_to(src)):
            raise OptionError(f"{mlx_path}: the output directory would overwrite or sit inside the input {source}; "
                              "choose an output path outside it")
    if check_directory_target(Path(mlx_path), replace=force):
        try:
            is_model = "format_version" in json.loads((Path(mlx_path) / "config.json").read_text())
        except (OSError, ValueError, TypeError):
            is_model = False
        if not is_model:
            raise OptionError(f"{mlx_path}: exists and does not look like an mlx-diar model directory (no "
                              "config.json with format_version); refusing to replace it, even with --force")


@dataclasses.dataclass
class Sources:
    """What a conversion reads: one checkpoint per role, and for `full` the PLDA and pipeline config."""

    files: dict[str, Path]
    inputs: list[Path]  # everything read: the output may not overwrite or contain any of it
    plda: dict[str, np.ndarray] | None = None
    plda_source: Path | None = None
    pipeline: dict[str, Any] | None = None
    record: dict[str, Any] | None = None  # a pipeline's origin, revision, fingerprint and license (config.json "source")


def read_sources(pytorch_path: str | Path | PipelineSource, model_type: str, token: str | None = None,
                 pipeline_config: str | None = None, revision: str | None = None) -> Sources:
    """Stage 1, read: resolve the checkpoint(s) of `model_type` (and the PLDA and pipeline parameters).

    `pytorch_path` may be a pipeline already resolved (`mlx_diar.conversion.sources.resolve_pipeline`)."""
    if isinstance(pytorch_path, PipelineSource):
        resolved = pytorch_path
    else:
        source = Path(pytorch_path).expanduser()
        if source.is_file() or (source.is_dir() and not (source / "config.yaml").exists()):
            if model_type == "full":
                raise CheckpointError(f"{pytorch_path}: model_type 'full' needs a pipeline (config.yaml), "
                                      "not one checkpoint")
            checkpoint = Path(resolve_checkpoint(pytorch_path, token=token))
            return Sources({model_type: checkpoint}, [source, checkpoint])
        resolved = resolve_pipeline(pytorch_path, token=token, config=pipeline_config, revision=revision)
    files = {"segmentation": resolved.segmentation, "embedding": resolved.embedding}
    sources = Sources({k: Path(v) for k, v in files.items() if model_type in (k, "full")},
                      [resolved.root, resolved.config_path],
                      record={"origin": resolved.origin, "revision": resolved.revision,
                              "fingerprint": resolved.fingerprint(), "license": resolved.license()})
    if model_type == "full":
        if resolved.embedding is None or resolved.plda is None:
            raise CheckpointError(f"{resolved.root}: a full pipeline needs embedding and plda entries")
        sources.plda, sources.plda_source = _plda_arrays(resolved.plda), resolved.plda
        params = {k: v for k, v in resolved.params.items() if k not in ("segmentation", "embedding", "plda")}
        sources.pipeline = {"params": params, "hyper_parameters": resolved.hyper_parameters}
    return sources


def float32_arrays(weights: dict[str, np.ndarray]) -> dict[str, mx.array]:
    """Stage 3: the sanitized weights as MLX arrays, floating ones in float32 (integer arrays unchanged)."""
    return {name: mx.array(np.asarray(v, np.float32) if np.issubdtype(v.dtype, np.floating) else v)
            for name, v in sorted(weights.items())}


def quantize_weights(entry: dict[str, Any], role: str, arrays: dict[str, mx.array], bits: int, group_size: int,
                     keep_8bit: dict[str, frozenset[str]]) -> tuple[dict[str, mx.array], dict[str, Any], tuple[int, int]]:
    """Stage 4, quantize (from the float32 weights): (arrays with quantized units, {path: unit record},
    (quantized, all) parameters)."""
    model = build_model(entry)
    chosen = quantize_module.plan(model, role, bits, group_size, keep_8bit, quantize_module.KEEP_FLOAT)
    return quantize_module.quantize_arrays(arrays, chosen), chosen, quantize_module.parameter_share(model, chosen, role)


def convert_pyannote_model(
    pytorch_path: str | Path | PipelineSource,
    mlx_path: str | Path,
    model_type: str = "full",
    dtype: str = "float32",
    fold_bn: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    token: str | None = None,
    pipeline_config: str | None = None,
    quantize: int | None = None,
    q_group_size: int = 64,
    precision_mode: str = "default",
    force: bool = False,
    revision: str | None = None,
) -> Path:
    """Convert `pytorch_path` into an MLX model directory at `mlx_path`; returns `mlx_path`.

    `pytorch_path`: a Hugging Face id (at `revision`), a pipeline directory, one checkpoint, or a
    pipeline already resolved. A pipeline's origin, revision, fingerprint (sha256 over the files
    read) and license (its model card's) are recorded in config.json's "source".

    Stages: `read_sources` -> `_convert_one` (read + sanitize) -> `float32_arrays` ->
    `quantize_weights` -> cast (precision policy: `dtype` with `precision_mode` "default" or
    "pure"; `precision.cast_arrays`) -> write.
    Nothing is ever destroyed: an existing non-empty `mlx_path` is refused unless `force`
    (and even then only an mlx-diar model directory is replaced), and an output equal to,
    inside, or containing the input is refused. The directory is written to a temporary
    sibling and renamed into place at the end (`mlx_diar.fsutil.atomic_directory`), so a
    failed conversion leaves any previous `mlx_path` untouched and nothing half-written.
    """
    if model_type not in MODEL_TYPES:
        raise OptionError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    Variant(dtype, quantize, q_group_size, precision_mode)  # OptionError naming an unknown value
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise OptionError(f"shard_size must be a positive number of bytes, got {shard_size!r}")
    policy = precision.policy(dtype, precision_mode)
    mlx_path = Path(mlx_path)
    sources = read_sources(pytorch_path, model_type, token, pipeline_config, revision)
    origin = sources.record["origin"] if sources.record else str(pytorch_path)
    config: dict[str, Any] = {"format_version": FORMAT_VERSION, "model_type": model_type, "dtype": dtype,
                              "precision": precision.to_config(policy, _precision_name(dtype, precision_mode)),
                              "quantization": None, "versions": package_versions(), "origin": origin}
    if sources.record is not None:
        config["source"] = sources.record
    _check_output(mlx_path, sources.inputs, force)
    if sources.pipeline is not None:
        config["pipeline"] = sources.pipeline
    kept = quantize_module.KEEP_8BIT if quantize == 4 else {}
    if quantize:
        config["quantization"] = {"bits": quantize, "group_size": q_group_size, "layers": {}, "parameters": {},
                                  "kept_8bit": {role: sorted(blocks) for role, blocks in kept.items()},
                                  "kept_float": {role: sorted(b) for role, b in quantize_module.KEEP_FLOAT.items()}}
    plda = sources.plda

    arrays: dict[str, mx.array] = {}
    for role, path in sources.files.items():
        entry, model_weights = _convert_one(path, role, fold_bn=fold_bn)
        config[role] = entry
        role_arrays = float32_arrays(model_weights)
        if quantize:
            role_arrays, chosen, (quantized, total) = quantize_weights(entry, role, role_arrays, quantize, q_group_size,
                                                                        kept)
            config["quantization"]["layers"][role] = chosen
            config["quantization"]["parameters"][role] = {"quantized": quantized, "total": total}
        # stage 5, cast: float weights to their precision block's storage dtype (quantization scales stay float32)
        role_arrays = precision.cast_arrays(role_arrays, role, policy, "weights")
        arrays.update({f"{role}.{k}": v for k, v in role_arrays.items()})

    with atomic_directory(mlx_path, replace=force) as work:
        save_weights(work, arrays, dtype=dtype, shard_size=shard_size)
        if plda is not None:
            from safetensors.numpy import save_file

            with atomic_path(work / PLDA_FILE) as tmp:
                save_file(plda, str(tmp))
            config["plda"] = {"file": PLDA_FILE, "source": str(sources.plda_source),
                              "sha256": {name: sha256sum(sources.plda_source / name) for name in PLDA_FILES}}
        atomic_write(work / "config.json", json.dumps(config, indent=2))
    return mlx_path


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mlx_diar.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--pytorch-path", required=True, help="HF id, pipeline directory or checkpoint file")
    parser.add_argument("--mlx-path", required=True, help="output directory")
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="full")
    parser.add_argument("--dtype", choices=tuple(precision.DTYPES), default="float32",
                        help="float16/bfloat16: the default precision policy (sensitive blocks stay float32)")
    parser.add_argument("--precision", choices=precision.MODES, default="default",
                        help="'pure': every block in --dtype (the naive variant, for comparison)")
    parser.add_argument("--quantize", type=int, choices=QUANT_BITS, default=None,
                        help="quantize Linear, LSTM and convolution weights to this many bits")
    parser.add_argument("--q-group-size", type=int, choices=(32, 64, 128), default=64)
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the embedding convolutions")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="bytes per weight file")
    parser.add_argument("--pipeline-config", default=None, help="another config file in the pipeline directory")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hugging Face --pytorch-path")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN / login)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing mlx-diar model directory at --mlx-path (nothing else)")
    parser.add_argument("--parity-report", type=Path, default=None, metavar="DIR",
                        help="a `python -m harness compare` report of this source and variant: its tables go into "
                             "the model card, README.md of --mlx-path")
    parser.add_argument("--upload-repo", default=None, metavar="ORG/NAME",
                        help="upload the conversion and its card (needs --parity-report) to this Hugging Face repository")
    parser.add_argument("--private", action="store_true", help="create the --upload-repo repository private")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    from mlx_diar.conversion import publish

    try:
        if args.upload_repo is not None and args.parity_report is None:
            raise OptionError("--upload-repo needs --parity-report: a published conversion carries its parity table")
        if args.parity_report is not None:
            if args.model_type != "full":
                raise OptionError("--parity-report/--upload-repo: only a full pipeline conversion is published")
            publish.read_parity_report(args.parity_report)  # before any work
        out = convert_pyannote_model(args.pytorch_path, args.mlx_path, args.model_type, args.dtype,
                                     fold_bn=args.fold_bn, shard_size=args.shard_size, token=args.token,
                                     pipeline_config=args.pipeline_config, quantize=args.quantize,
                                     q_group_size=args.q_group_size, precision_mode=args.precision, force=args.force,
                                     revision=args.revision)
        if args.parity_report is not None:
            print(publish.write_model_card(out, args.parity_report, args.upload_repo), file=sys.stderr)
        if args.upload_repo is not None:
            print(publish.upload(out, args.upload_repo, token=args.token, private=args.private), file=sys.stderr)
    except (*USER_ERRORS, ValueError) as e:  # ValueError: a checkpoint whose weights do not fit its architecture
        return report(e, args.debug)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
