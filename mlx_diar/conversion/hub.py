"""What `SpeakerDiarizationPipeline.from_pretrained` and `diarize --model` accept, as a converted model directory.

A source is one of:

- a converted mlx-diar model directory (`config.json` with `format_version`): used as it is;
- a Hugging Face id of one: its `config.json`, safetensors, index and README only are downloaded,
  then linked (copied across file systems) into this cache so that the directory checks of
  `mlx_diar.conversion.model_io` apply to real files;
- a pyannote pipeline, a directory laid out like community-1 (`config.yaml`) or its Hugging Face
  id: checked at the trust boundary (`mlx_diar.conversion.trust`), converted in-process on first
  use and cached, keyed on the source's fingerprint (sha256 over every file it reads), the variant
  (dtype, precision mode, quantization) and the on-disk format and converter versions.

The cache is `mlx-diar/` in the Hugging Face hub cache (`HF_HUB_CACHE`, by default
`$HF_HOME/hub`). A Hugging Face id is told apart by a first download of `config.json` and
`config.yaml` alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mlx_diar.conversion import model_io, trust
from mlx_diar.conversion.model_io import INDEX_FILE
from mlx_diar.conversion.sources import (HF_ID, PIPELINE_FILE, README_FILE, PipelineSource, hf_boundary, hf_download,
                                         resolve_pipeline)
from mlx_diar.conversion.variant import Variant
from mlx_diar.errors import CheckpointError, OptionError

CACHE_FOLDER = "mlx-diar"
MODEL_FILE = "config.json"
MODEL_PATTERNS = [MODEL_FILE, "*.safetensors", INDEX_FILE, README_FILE]
PROBE_PATTERNS = [MODEL_FILE, PIPELINE_FILE]
EXPECTED = ("expected a converted mlx-diar model directory (config.json), a pyannote pipeline directory "
            "(config.yaml), or the Hugging Face id (ORG/NAME) of either")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`mlx-diar/` in the Hugging Face hub cache (`cache_dir`, else `HF_HUB_CACHE`, read when called)."""
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    return Path(cache_dir).expanduser() / CACHE_FOLDER


def cache_key(fingerprint: str, variant: Variant) -> str:
    """Source fingerprint + variant + on-disk format and converter versions: a new sanitize or layout never
    reuses a stale conversion."""
    return f"{fingerprint[:16]}-{variant.name}-f{model_io.FORMAT_VERSION}c{model_io.CONVERTER_VERSION}"


def converted(source: PipelineSource, variant: Variant, cache: Path) -> Path:
    """The conversion of `source` for `variant` under `cache`, converted (in-process) only when missing."""
    from mlx_diar.conversion.convert import convert_pyannote_model

    target = cache / cache_key(source.fingerprint(), variant)
    if not (target / MODEL_FILE).is_file():
        convert_pyannote_model(source, target, "full", **variant.conversion())
    return target


def _converted_config(config_json: Path) -> dict[str, Any] | None:
    """config.json's content when it is an mlx-diar model's (an object with `format_version`), else None."""
    try:
        config = json.loads(config_json.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) and "format_version" in config else None


def _kind(root: Path, shown: str) -> str:
    """"model" (config.json) or "pipeline" (config.yaml); CheckpointError naming `shown` otherwise."""
    if (root / MODEL_FILE).is_file() and (_converted_config(root / MODEL_FILE) is not None
                                         or not (root / PIPELINE_FILE).is_file()):
        return "model"
    if (root / PIPELINE_FILE).is_file():
        return "pipeline"
    raise CheckpointError(f"{shown}: neither {MODEL_FILE} nor {PIPELINE_FILE}; {EXPECTED}")


def _checked_model(root: Path, variant: Variant, shown: str) -> Path:
    config = _converted_config(root / MODEL_FILE)
    if config is not None:  # anything else: load_model says what is wrong with it
        variant.check(config, shown)
    return root


def _linked_snapshot(snapshot: Path, boundary: Path, target: Path) -> Path:
    """The downloaded model files as real files in `target` (hard links, or copies across file systems)."""
    if (target / MODEL_FILE).is_file():
        return target
    from mlx_diar.fsutil import atomic_directory

    with atomic_directory(target, replace=True) as work:
        for path in sorted(snapshot.iterdir()):
            if path.is_file():
                trust.inside(boundary, path, path, "a downloaded file")
                try:
                    os.link(os.path.realpath(path), work / path.name)
                except OSError:
                    shutil.copyfile(path, work / path.name)
    return target


def resolve_model(source: str | Path, *, dtype: str | None = None, quantize: int | None = None,
                  q_group_size: int | None = None, precision: str | None = None, revision: str | None = None,
                  token: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The converted model directory of `source` (see the module docstring), converting and caching if needed.

    For a pyannote pipeline, `dtype` (default float32), `precision` ("default" or "pure"),
    `quantize` (8 or 4 bits) and `q_group_size` (default 64) choose the conversion; for a converted
    model they must match it when given. `revision` (a branch, tag or commit) and `token` apply to
    Hugging Face ids; `cache_dir` is the Hugging Face hub cache (default `HF_HUB_CACHE`).
    """
    variant = Variant(dtype, quantize, q_group_size, precision)
    text = str(source)
    path = Path(text).expanduser()
    cache = cache_root(cache_dir)
    if path.exists():
        if revision is not None:
            raise OptionError(f"{text}: a local path has no revision (revision={revision!r} is for Hugging Face ids)")
        if not path.is_dir():
            raise CheckpointError(f"{text}: a file, not a directory; {EXPECTED}")
        if _kind(path, text) == "model":
            return _checked_model(path, variant, text)
        return converted(resolve_pipeline(path), variant, cache / "converted")
    if not HF_ID.match(text):
        raise CheckpointError(f"{text}: no such directory, nor a Hugging Face id; {EXPECTED}")
    probe = hf_download(text, token, cache_dir, revision, PROBE_PATTERNS)
    boundary = hf_boundary(probe)
    for name in PROBE_PATTERNS:
        if (probe / name).exists():
            trust.inside(boundary, probe / name, probe / name, f"{text}'s {name}")
    if _kind(probe, f"{text} (Hugging Face)") == "pipeline":
        return converted(resolve_pipeline(text, token, cache_dir, revision=revision), variant, cache / "converted")
    snapshot = hf_download(text, token, cache_dir, revision, MODEL_PATTERNS)
    owner, name = text.split("/")
    target = cache / "hub" / f"{owner}--{name}" / Path(os.path.realpath(snapshot)).name
    return _checked_model(_linked_snapshot(snapshot, hf_boundary(snapshot), target), variant, text)
