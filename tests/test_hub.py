"""`from_pretrained` / `diarize --model SOURCE`: converted directories, pyannote pipelines converted once and
cached, Hugging Face ids of either (a hub cache laid out as `snapshot_download` leaves it, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_diar.conversion import convert, hub
from mlx_diar.conversion.hub import resolve_model
from mlx_diar.conversion.model_io import CONVERTER_VERSION, FORMAT_VERSION
from mlx_diar.errors import CheckpointError, OptionError, UnsafeSourceError
from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline
from tests.hf_cache import COMMIT, fake_snapshot, pipeline_with_card

VERSIONS = f"f{FORMAT_VERSION}c{CONVERTER_VERSION}"  # the cache key's on-disk format and converter versions


@pytest.fixture
def pipeline_dir(fixture_root: Path, tmp_path: Path) -> Path:
    return pipeline_with_card(fixture_root, tmp_path / "pipeline")


def _no_conversion(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(convert, "convert_pyannote_model", fail)


def test_pipeline_dir_is_converted_once_then_cached(pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hf"
    start = time.perf_counter()
    first = resolve_model(pipeline_dir, cache_dir=cache)
    first_s = time.perf_counter() - start
    assert first.parent == cache / "mlx-diar/converted" and first.name.endswith(f"-float32-{VERSIONS}")
    config = json.loads((first / "config.json").read_text())
    assert config["source"]["license"] == "cc-by-4.0" and config["source"]["revision"] is None
    assert config["source"]["fingerprint"].startswith(first.name.split("-")[0])
    assert set(config["plda"]["sha256"]) == {"xvec_transform.npz", "plda.npz"}
    _no_conversion(monkeypatch)
    start = time.perf_counter()
    pipeline = SpeakerDiarizationPipeline.from_pretrained(pipeline_dir, cache_dir=cache, device="cpu")
    print(f"\nfirst resolve (conversion) {first_s:.2f} s; cached from_pretrained {time.perf_counter() - start:.2f} s")
    assert pipeline.models.path == first


def test_variants_and_sources_key_the_cache(pipeline_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    base = resolve_model(pipeline_dir, cache_dir=cache)
    q8 = resolve_model(pipeline_dir, dtype="float16", quantize=8, cache_dir=cache)
    assert q8 != base and q8.name.endswith(f"-float16-q8g64-{VERSIONS}")
    assert json.loads((q8 / "config.json").read_text())["quantization"]["bits"] == 8
    (pipeline_dir / "config.yaml").write_text((pipeline_dir / "config.yaml").read_text().replace("0.6", "0.55"))
    changed = resolve_model(pipeline_dir, cache_dir=cache)
    assert changed != base and changed.name.split("-")[0] != base.name.split("-")[0]


def test_converted_directory_is_used_as_it_is(mlx_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(mlx_model_dir, cache_dir=tmp_path) == mlx_model_dir
    assert resolve_model(mlx_model_dir, dtype="float32", cache_dir=tmp_path) == mlx_model_dir
    with pytest.raises(OptionError, match="dtype 'float32', not 'float16'"):
        resolve_model(mlx_model_dir, dtype="float16", cache_dir=tmp_path)
    with pytest.raises(OptionError, match="quantize None, not 8"):
        resolve_model(mlx_model_dir, quantize=8, cache_dir=tmp_path)
    assert not (tmp_path / "mlx-diar").exists()


def test_hugging_face_pipeline_id(pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hf"
    fake_snapshot(cache, "someone/pipeline", pipeline_dir)
    out = resolve_model("someone/pipeline", cache_dir=cache)
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["origin"] == config["origin"] == "someone/pipeline"
    assert config["source"]["revision"] == COMMIT and config["source"]["license"] == "cc-by-4.0"
    _no_conversion(monkeypatch)
    assert resolve_model("someone/pipeline", revision=COMMIT, cache_dir=cache) == out
    with pytest.raises(CheckpointError, match="unreachable and nothing is cached locally at revision 'v2'"):
        resolve_model("someone/pipeline", revision="v2", cache_dir=cache)


def test_hugging_face_model_id(mlx_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    snapshot = fake_snapshot(cache, "someone/mlx-model", mlx_model_dir)
    (snapshot.parents[1] / "blobs/extra").write_text("x")
    out = resolve_model("someone/mlx-model", cache_dir=cache)
    assert out == cache / f"mlx-diar/hub/someone--mlx-model/{COMMIT}"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in mlx_model_dir.iterdir())
    assert not any(p.is_symlink() for p in out.iterdir())
    pipeline = SpeakerDiarizationPipeline.from_pretrained("someone/mlx-model", cache_dir=cache)
    assert pipeline.models.path == out
    with pytest.raises(OptionError, match="not 'bfloat16'"):
        resolve_model("someone/mlx-model", dtype="bfloat16", cache_dir=cache)


def test_hugging_face_files_linking_outside_their_repository_are_refused(mlx_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    snapshot = fake_snapshot(cache, "someone/mlx-model", mlx_model_dir)
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"not yours")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(secret)
    with pytest.raises(UnsafeSourceError, match="outside"):
        resolve_model("someone/mlx-model", cache_dir=cache)
    assert not (cache / "mlx-diar/hub/someone--mlx-model" / COMMIT).exists()


def test_unknown_sources_name_what_was_expected(tmp_path: Path, fixture_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "empty"): "neither config.json nor config.yaml",
             str(tmp_path / "no/such/dir"): "no such directory, nor a Hugging Face id",
             str(fixture_root / "segmentation/pytorch_model.bin"): "a file, not a directory",
             "nobody/nothing": "unreachable and nothing is cached locally"}
    for source, problem in cases.items():
        with pytest.raises(CheckpointError, match=problem) as e:
            resolve_model(source, cache_dir=tmp_path / "hf")
        assert str(e.value).startswith(source) and "\n" not in str(e.value)
        if problem != cases["nobody/nothing"]:
            assert "expected a converted mlx-diar model directory" in str(e.value)
    with pytest.raises(OptionError, match="has no revision"):
        resolve_model(fixture_root, revision="main", cache_dir=tmp_path / "hf")
    with pytest.raises(OptionError, match="dtype must be one of"):
        resolve_model(fixture_root, dtype="float8", cache_dir=tmp_path / "hf")


def test_diarize_cli_takes_a_hugging_face_pipeline_id(pipeline_dir: Path, tmp_path: Path) -> None:
    clip = Path(__file__).parent / "data/speakrs/test_short.wav"
    cache = tmp_path / "hf"
    fake_snapshot(cache, "someone/pipeline", pipeline_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "mlx_diar", "diarize", str(clip), "--rttm"]
    by_id = subprocess.run([*run, str(tmp_path / "id.rttm"), "--model", "someone/pipeline"], env=env,
                           capture_output=True, text=True)
    assert by_id.returncode == 0, by_id.stderr
    converted = next((cache / "mlx-diar/converted").iterdir())
    by_dir = subprocess.run([*run, str(tmp_path / "dir.rttm"), "--model", str(converted)], env=env,
                            capture_output=True, text=True)
    assert by_dir.returncode == 0, by_dir.stderr
    assert (tmp_path / "id.rttm").read_text() == (tmp_path / "dir.rttm").read_text() != ""
    bad = subprocess.run([*run, str(tmp_path / "x.rttm"), "--model", str(tmp_path / "nope")], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "expected a converted mlx-diar" in bad.stderr


def test_cache_lives_in_the_hugging_face_cache(monkeypatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub.cache_root() == tmp_path / "hub/mlx-diar"
