"""Where a pipeline or model comes from: a Hugging Face id, a local directory, or one checkpoint file.

Shared by `reference/` (pyannote side) and the converter. Mirrors how
`pyannote.audio.core.pipeline.Pipeline.from_pretrained` resolves `config.yaml`
and its `$model/<subfolder>` entries, but downloads with huggingface_hub directly so
that a missing token or a gated repository gives a message a user can act on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from mlx_diar.checkpoint import CheckpointError

MODEL_FILE = "pytorch_model.bin"
PIPELINE_FILE = "config.yaml"
PLDA_FILES = ("xvec_transform.npz", "plda.npz")
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclasses.dataclass
class PipelineSource:
    """A resolved pipeline: its directory, parsed config.yaml and the local files it names."""

    root: Path
    config: dict[str, Any]
    segmentation: Path
    embedding: Path | None
    plda: Path | None  # directory holding xvec_transform.npz and plda.npz
    origin: str  # the string the user gave

    @property
    def params(self) -> dict[str, Any]:
        """Pipeline constructor parameters (config.yaml `pipeline.params`)."""
        return dict(self.config.get("pipeline", {}).get("params", {}))

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        """Instantiated hyper-parameters (config.yaml `params`)."""
        return dict(self.config.get("params", {}))


def _hf_download(repo_id: str, token: str | bool | None, cache_dir: str | Path | None) -> Path:
    """Download a model/pipeline repository snapshot, translating hub errors into actionable ones."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(f"{repo_id}: huggingface_hub is needed to download it ({e})") from e
    token = token if token is not None else os.environ.get("HF_TOKEN")
    try:
        return Path(
            snapshot_download(
                repo_id,
                token=token,
                cache_dir=cache_dir,
                allow_patterns=["*.yaml", "*.bin", "*.npz", "*.json", "*/*.yaml", "*/*.bin", "*/*.npz"],
            )
        )
    except GatedRepoError:
        raise CheckpointError(
            f"{repo_id} is a gated repository: accept its user conditions at "
            f"https://huggingface.co/{repo_id}, then log in (`hf auth login`) or set HF_TOKEN."
        ) from None
    except RepositoryNotFoundError:
        hint = "" if token else " You are not logged in: run `hf auth login` or set HF_TOKEN."
        raise CheckpointError(
            f"{repo_id}: repository not found on Hugging Face, or your token may not access it.{hint}"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id}: Hugging Face is unreachable and nothing is cached locally. Connect to the "
            "internet, or pass a local pipeline directory or checkpoint file instead."
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise CheckpointError(
                f"{repo_id}: access refused (HTTP {status}). Accept the conditions at "
                f"https://huggingface.co/{repo_id} and log in (`hf auth login`) or set HF_TOKEN."
            ) from None
        raise CheckpointError(f"{repo_id}: download failed ({e})") from None


def _subfolder(root: Path, value: Any, what: str) -> Path | None:
    """Resolve a config.yaml entry such as `$model/segmentation` to a local path."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("checkpoint")
    if isinstance(value, str) and value.startswith("$model/"):
        return root / value[len("$model/"):].split("@")[0]
    path = Path(str(value))
    if path.exists():
        return path
    raise CheckpointError(
        f"{root / PIPELINE_FILE}: {what} = {value!r} is neither `$model/<subfolder>` nor a local path"
    )


def _model_file(path: Path) -> Path:
    return path / MODEL_FILE if path.is_dir() else path


def resolve_pipeline(
    source: str | Path, token: str | bool | None = None, cache_dir: str | Path | None = None
) -> PipelineSource:
    """Resolve a pipeline given as a Hugging Face id or a local directory with `config.yaml`."""
    path = Path(source).expanduser()
    if path.is_dir():
        root = path
    elif path.is_file():
        raise CheckpointError(f"{path}: a single file is a model checkpoint, not a pipeline directory")
    elif not _HF_ID.match(str(source)):
        raise CheckpointError(f"{source}: no such file or directory (nor a Hugging Face id)")
    else:
        root = _hf_download(str(source), token, cache_dir)
    config_path = root / PIPELINE_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{root}: no {PIPELINE_FILE}: not a pipeline directory")
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{config_path}: invalid YAML ({e})") from None
    if not isinstance(config, dict) or "pipeline" not in config:
        raise CheckpointError(f"{config_path}: no `pipeline` section: not a pyannote pipeline config")
    params = config["pipeline"].get("params", {})
    segmentation = _subfolder(root, params.get("segmentation"), "segmentation")
    if segmentation is None:
        raise CheckpointError(f"{config_path}: no segmentation model named in pipeline.params")
    embedding = _subfolder(root, params.get("embedding"), "embedding")
    plda = _subfolder(root, params.get("plda"), "plda")
    resolved = PipelineSource(
        root=root,
        config=config,
        segmentation=_model_file(segmentation),
        embedding=_model_file(embedding) if embedding else None,
        plda=plda,
        origin=str(source),
    )
    for f in [resolved.segmentation, resolved.embedding]:
        if f is not None and not f.is_file():
            raise CheckpointError(f"{config_path}: names {f}, which does not exist")
    if plda is not None:
        for name in PLDA_FILES:
            if not (plda / name).is_file():
                raise CheckpointError(f"{config_path}: PLDA directory {plda} lacks {name}")
    return resolved


def resolve_checkpoint(
    source: str | Path, token: str | bool | None = None, cache_dir: str | Path | None = None
) -> Path:
    """Resolve one model checkpoint: a file, a directory holding pytorch_model.bin, or a HF model id."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise CheckpointError(f"{path}: directory without {MODEL_FILE}")
    if not _HF_ID.match(str(source)):
        raise CheckpointError(f"{source}: no such file or directory (nor a Hugging Face id)")
    root = _hf_download(str(source), token, cache_dir)
    if not (root / MODEL_FILE).is_file():
        raise CheckpointError(f"{source}: the repository holds no {MODEL_FILE}")
    return root / MODEL_FILE
