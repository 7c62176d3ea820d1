"""The converter and `load_model`: layout, dtypes, sharding, atomic writes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.conversion.checkpoint import CheckpointError, read_checkpoint
from mlx_diar.conversion.convert import convert_pyannote_model
from mlx_diar.conversion.model_io import INDEX_FILE, ModelDirError, load_model
from mlx_diar.models.pyannet import PyanNet, PyanNetConfig


@pytest.fixture(scope="module")
def full_f32(fixture_root: Path, tmp_path_factory) -> Path:
    return convert_pyannote_model(fixture_root, tmp_path_factory.mktemp("m") / "f32", "full", "float32")


def test_full_layout_and_config(full_f32: Path, fixture_root: Path) -> None:
    config = json.loads((full_f32 / "config.json").read_text())
    assert {p.name for p in full_f32.iterdir()} == {"config.json", "model.safetensors", "plda.safetensors"}
    assert config["dtype"] == "float32" and config["model_type"] == "full"
    assert config["segmentation"]["source"]["sha256"] == "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"
    assert config["segmentation"]["config"]["lstm_num_layers"] == 4  # from the checkpoint, not a default
    assert config["pipeline"]["hyper_parameters"]["clustering"] == {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
    assert config["pipeline"]["params"]["embedding_exclude_overlap"] is True
    assert {"mlx", "torch", "pyannote.audio"} <= set(config["versions"])
    models = load_model(full_f32)
    assert models.segmentation is not None and models.embedding is not None
    assert models.plda["lda"].dtype == np.float64 and models.plda["lda"].shape == (256, 128)
    x = np.load(fixture_root / "plda/xvec_transform.npz")
    np.testing.assert_array_equal(models.plda["lda"], x["lda"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes_are_stored_as_such(fixture_root: Path, tmp_path: Path, dtype: str) -> None:
    out = convert_pyannote_model(fixture_root / "segmentation/pytorch_model.bin", tmp_path / dtype,
                                 "segmentation", dtype, precision_mode="pure")
    weights = mx.load(str(out / "model.safetensors"))
    assert {str(w.dtype) for w in weights.values()} == {f"mlx.core.{dtype}"}
    reference = read_checkpoint(fixture_root / "segmentation/pytorch_model.bin").state_dict["linear.0.weight"]
    stored = np.array(weights["segmentation.linear.0.weight"].astype(mx.float32))
    np.testing.assert_allclose(stored, reference, rtol=1e-2, atol=1e-3)


def test_sharded_round_trip_gives_identical_outputs(fixture_root: Path, tmp_path: Path, sample_10s) -> None:
    path = fixture_root / "segmentation/pytorch_model.bin"
    whole = convert_pyannote_model(path, tmp_path / "whole", "segmentation")
    sharded = convert_pyannote_model(path, tmp_path / "sharded", "segmentation", shard_size=1_000_000)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 2 and (sharded / INDEX_FILE).is_file()
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    x = mx.array(sample_10s[None])
    a = load_model(whole).segmentation(x)
    b = load_model(sharded).segmentation(x)
    assert mx.array_equal(a, b).item()


def test_failed_conversion_leaves_previous_model_untouched(full_f32: Path, tmp_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in full_f32.iterdir()}
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        convert_pyannote_model(bad, full_f32, "segmentation", force=True)
    assert {p.name: p.stat().st_mtime_ns for p in full_f32.iterdir()} == before
    assert not [p for p in full_f32.parent.iterdir() if p.name.startswith(".")]


def test_sanitize_lists_unknown_missing_and_mismatched_keys(fixture_root: Path) -> None:
    info = read_checkpoint(fixture_root / "segmentation/pytorch_model.bin")
    config = PyanNetConfig.from_checkpoint(info.hyper_parameters, info.specifications)
    state = dict(info.state_dict)
    state["extra.weight"] = np.zeros(3, np.float32)
    del state["classifier.bias"]
    state["linear.0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError) as e:
        PyanNet.sanitize(state, config)
    message = str(e.value)
    assert "extra.weight" in message and "classifier.bias" in message and "linear.0.weight" in message


def test_wrong_role_and_full_from_single_file(fixture_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a segmentation model"):
        convert_pyannote_model(fixture_root / "segmentation/pytorch_model.bin", tmp_path / "x", "embedding")
    with pytest.raises(CheckpointError, match="needs a pipeline"):
        convert_pyannote_model(fixture_root / "segmentation/pytorch_model.bin", tmp_path / "x", "full")


def test_load_model_errors(tmp_path: Path, full_f32: Path) -> None:
    with pytest.raises(ModelDirError, match="no config.json"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((full_f32 / "config.json").read_text())
    with pytest.raises(ModelDirError, match="neither model.safetensors"):
        load_model(broken)


def test_cli_and_conversion_without_torch(fixture_root: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mlx_diar.conversion.convert", "--pytorch-path",
                          str(fixture_root / "whisperx/pytorch_model.bin"), "--mlx-path", str(tmp_path / "v2"),
                          "--model-type", "segmentation"], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path / "v2"
    assert json.loads((tmp_path / "v2/config.json").read_text())["segmentation"]["config"]["powerset"] is False
    code = ("import sys; sys.modules['torch'] = None; from mlx_diar.conversion.convert import main;"
            f"sys.exit(main(['--pytorch-path', {str(fixture_root / 'segmentation')!r}, '--mlx-path', "
            f"{str(tmp_path / 'nt')!r}, '--model-type', 'segmentation']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "nt/config.json").read_text())["segmentation"]["class"] == "PyanNet"
