"""Where a pipeline or model comes from: a Hugging Face id, a local directory, or one checkpoint file.

Shared by `reference/` (pyannote side) and the converter. Mirrors how
`pyannote.audio.core.pipeline.Pipeline.from_pretrained` resolves `config.yaml`
and its `$model/<subfolder>` entries, but downloads with huggingface_hub directly so
that a missing token or a gated repository gives a message a user can act on, and
checks everything it reads at the trust boundary of `mlx_diar.conversion.trust`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from mlx_diar.conversion import trust
from mlx_diar.errors import CheckpointError
from mlx_diar.conversion.trust import MODEL_FILE, PLDA_FILES

PIPELINE_FILE = "config.yaml"
README_FILE = "README.md"
HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# what a pipeline download fetches: config, checkpoints, PLDA, and the card (its license)
PIPELINE_PATTERNS = ["*.yaml", "*.bin", "*.npz", "*.json", "*/*.yaml", "*/*.bin", "*/*.npz", README_FILE]


@dataclasses.dataclass
class PipelineSource:
    """A resolved pipeline: its directory, parsed config.yaml and the local files it names."""

    root: Path
    config: dict[str, Any]
    segmentation: Path
    embedding: Path | None
    plda: Path | None  # directory holding xvec_transform.npz and plda.npz
    origin: str  # the string the user gave
    config_path: Path  # the config file read (config.yaml or --config)
    boundary: Path  # what every file must resolve inside: the directory, or a download's repository cache folder
    revision: str | None = None  # a download's commit

    def files(self) -> dict[str, Path]:
        """Every file the pipeline reads, by its name relative to the pipeline directory."""
        named = [self.config_path, self.segmentation, self.embedding,
                 *([self.plda / name for name in PLDA_FILES] if self.plda is not None else [])]
        return {path.relative_to(self.root).as_posix(): path for path in named if path is not None}

    def fingerprint(self) -> str:
        """sha256 over every file the pipeline reads, with their names: what a conversion is made from."""
        from mlx_diar.conversion.checkpoint import sha256sum

        digest = hashlib.sha256()
        for name, path in sorted(self.files().items()):
            digest.update(f"{name}:{sha256sum(path)}\n".encode())
        return digest.hexdigest()

    def license(self) -> str | None:
        """The `license` of the pipeline's README.md metadata block (Hugging Face model card), if any."""
        readme = self.root / README_FILE
        if not readme.is_file():
            return None
        trust.inside(self.boundary, readme, readme, "the model card")
        return card_metadata(readme.read_text(encoding="utf-8", errors="replace")).get("license")

    @property
    def params(self) -> dict[str, Any]:
        """Pipeline constructor parameters (config.yaml `pipeline.params`)."""
        return dict(self.config.get("pipeline", {}).get("params", {}))

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        """Instantiated hyper-parameters (config.yaml `params`)."""
        return dict(self.config.get("params", {}))


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML metadata block (between `---` lines) at the top of a Hugging Face model card; {} if none."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((k for k, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) if end else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def hf_download(repo_id: str, token: str | bool | None = None, cache_dir: str | Path | None = None,
                revision: str | None = None, patterns: list[str] = PIPELINE_PATTERNS) -> Path:
    """Download the files of a repository snapshot matching `patterns`, translating hub errors into
    actionable ones; returns the snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
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
                revision=revision,
                allow_patterns=patterns,
            )
        )
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id}: revision {revision!r} not found on Hugging Face") from None
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
        at = f" at revision {revision!r}" if revision else ""
        raise CheckpointError(
            f"{repo_id}: Hugging Face is unreachable and nothing is cached locally{at}. Connect to the "
            "internet, or pass a local directory instead."
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise CheckpointError(
                f"{repo_id}: access refused (HTTP {status}). Accept the conditions at "
                f"https://huggingface.co/{repo_id} and log in (`hf auth login`) or set HF_TOKEN."
            ) from None
        raise CheckpointError(f"{repo_id}: download failed ({e})") from None


def hf_boundary(root: Path) -> Path:
    """The repository cache folder of a snapshot: its files are symlinks into `../../blobs`."""
    root = Path(os.path.realpath(root))
    return root.parents[1] if root.parent.name == "snapshots" else root


def resolve_pipeline(
    source: str | Path, token: str | bool | None = None, cache_dir: str | Path | None = None,
    config: str | None = None, revision: str | None = None,
) -> PipelineSource:
    """Resolve a pipeline given as a Hugging Face id (at `revision`) or a local directory with `config.yaml`.

    `config` names another config file of the directory (a plain file name). The config is
    checked by `mlx_diar.conversion.trust.check_config` and every file it names must lie inside the
    directory (for a download: inside its cache folder); see `mlx_diar.conversion.trust`.
    """
    path = Path(source).expanduser()
    commit = None
    if path.is_dir():
        root, boundary = path, path
    elif path.is_file():
        raise CheckpointError(f"{path}: a single file is a model checkpoint, not a pipeline directory")
    elif not HF_ID.match(str(source)):
        raise CheckpointError(f"{source}: no such file or directory (nor a Hugging Face id)")
    else:
        root = hf_download(str(source), token, cache_dir, revision)
        boundary, commit = hf_boundary(root), root.name
    config_path = trust.config_file(root, PIPELINE_FILE if config is None else config, boundary)
    try:
        parsed = yaml.safe_load(config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: invalid YAML ({e})") from None
    entries = trust.check_config(parsed, config_path)
    if "segmentation" not in entries:
        raise CheckpointError(f"{config_path}: no segmentation model named in pipeline.params")
    files: dict[str, Path | None] = {}
    for role in ("segmentation", "embedding"):
        files[role] = None
        if role in entries:
            file = root / entries[role] / MODEL_FILE
            if not file.is_file():
                raise CheckpointError(f"{config_path}: pipeline.params.{role} names {file}, which does not exist")
            files[role] = trust.inside(boundary, file, config_path, f"pipeline.params.{role}")
    plda = root / entries["plda"] if "plda" in entries else None
    if plda is not None:
        for name in PLDA_FILES:
            if not (plda / name).is_file():
                raise CheckpointError(f"{config_path}: PLDA directory {plda} lacks {name}")
            trust.inside(boundary, plda / name, config_path, "pipeline.params.plda")
    return PipelineSource(root=root, config=parsed, segmentation=files["segmentation"], embedding=files["embedding"],
                          plda=plda, origin=str(source), config_path=config_path, boundary=boundary, revision=commit)


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
    if not HF_ID.match(str(source)):
        raise CheckpointError(f"{source}: no such file or directory (nor a Hugging Face id)")
    root = hf_download(str(source), token, cache_dir)
    if not (root / MODEL_FILE).is_file():
        raise CheckpointError(f"{source}: the repository holds no {MODEL_FILE}")
    return root / MODEL_FILE
