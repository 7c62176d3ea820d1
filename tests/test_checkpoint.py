"""Safe checkpoint loading and checkpoint sources (HF id, directory, file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_diar.conversion.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from mlx_diar.conversion.sources import resolve_checkpoint, resolve_pipeline


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_both_real_segmentation_checkpoints_read_safely(fixture_root: Path) -> None:
    seg3 = read_checkpoint(fixture_root / "segmentation/pytorch_model.bin")
    assert seg3.klass == "PyanNet" and seg3.specifications["powerset_max_classes"] == 2
    assert seg3.specifications["problem"] == "MONO_LABEL_CLASSIFICATION"
    assert seg3.state_dict["classifier.weight"].shape == (7, 128)
    v2 = read_checkpoint(fixture_root / "whisperx/pytorch_model.bin")  # omegaconf objects, CUDA storages
    assert v2.specifications["problem"] == "MULTI_LABEL_CLASSIFICATION"
    assert v2.hyper_parameters["lstm"]["num_layers"] == 4
    emb = read_checkpoint(fixture_root / "embedding/pytorch_model.bin")
    assert emb.klass == "WeSpeakerResNet34"


def test_reading_needs_neither_torch_nor_pyannote_nor_lightning(fixture_root: Path) -> None:
    code = (
        "import sys; from mlx_diar.conversion.checkpoint import read_checkpoint;"
        f"read_checkpoint({str(fixture_root / 'whisperx/pytorch_model.bin')!r});"
        "print(sorted(m for m in ('torch', 'pyannote.audio', 'lightning', 'omegaconf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unsafe_pickle_is_refused_naming_the_class(tmp_path: Path, monkeypatch) -> None:
    import torch

    path = tmp_path / "evil.bin"
    torch.save({"state_dict": {}, "pyannote.audio": {}, "payload": Exploit()}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # the restricted reader refuses it, torch or not
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "allow-list" in str(e.value)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.bin")


def test_sources_local(fixture_root: Path, tmp_path: Path) -> None:
    resolved = resolve_pipeline(fixture_root)
    assert resolved.segmentation == fixture_root / "segmentation/pytorch_model.bin"
    assert resolved.plda == fixture_root / "plda"
    assert resolved.hyper_parameters["clustering"]["Fa"] == 0.07
    assert resolve_checkpoint(fixture_root / "segmentation") == resolved.segmentation
    with pytest.raises(CheckpointError, match="no config.yaml"):
        resolve_pipeline(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(tmp_path / "nope" / "deeper")


def test_hf_offline_message() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(CheckpointError, match="unreachable and nothing is cached"):
        resolve_pipeline("pyannote/speaker-diarization-community-1")


@pytest.mark.parametrize("error, expected", [("GatedRepoError", "gated repository"),
                                             ("RepositoryNotFoundError", "not found")])
def test_hf_gated_or_unauthorised_message(monkeypatch, error: str, expected: str) -> None:
    import huggingface_hub
    from huggingface_hub import errors

    def fail(*args, **kwargs):
        cls = getattr(errors, error)
        exc = cls.__new__(cls)  # as raised by the hub client on a 401/403 answer
        Exception.__init__(exc, "401 Client Error")
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(CheckpointError, match=expected) as e:
        resolve_pipeline("pyannote/speaker-diarization-community-1")
    assert "hf auth login" in str(e.value)
