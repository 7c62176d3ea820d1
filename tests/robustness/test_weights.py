"""Tampered or non-finite weights are refused, naming the file and the tensor (issue 23, items 7 and 8).

A converted model: tensors relabelled in the safetensors header (same bytes, another dtype),
NaN weights, a PLDA file with NaN. A checkpoint to convert: NaN weights, tensors of the wrong
shape. PLDA .npz files holding object arrays (pickles), NaN or inconsistent shapes: for the
converter and for pyannote (`reference`, `harness compare --checkpoint`), one line naming the file.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.conversion.model_io import PLDA_FILE, WEIGHTS_FILE, load_model
from mlx_diar.errors import CheckpointError, ModelDirError

torch = pytest.importorskip("torch")


def _copy(model: Path, out: Path) -> Path:
    shutil.copytree(model, out, copy_function=os.link)  # hard links: a file to tamper is replaced, not edited
    return out


def _relabel(path: Path, old: str, new: str) -> None:
    """Change every tensor's dtype in a safetensors header without touching its bytes."""
    data = bytearray(path.read_bytes())
    size = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + size].decode()
    assert f'"{old}"' in header and len(old) == len(new)
    data[8:8 + size] = header.replace(f'"{old}"', f'"{new}"').encode()
    path.unlink()
    path.write_bytes(bytes(data))


def test_tensors_relabelled_in_the_header_are_refused(mlx_model_dir: Path, tmp_path: Path) -> None:
    model = _copy(mlx_model_dir, tmp_path / "model")
    _relabel(model / WEIGHTS_FILE, "F32", "I32")
    with pytest.raises(ModelDirError, match=rf"^{model / WEIGHTS_FILE}: tensor (segmentation|embedding)\.\S+ is "
                                            r"stored as int32, config.json says float32$"):
        load_model(model)


def _with_nan(path: Path, key: str) -> None:
    weights = mx.load(str(path))
    value = np.array(weights[key])
    value.flat[0] = np.nan
    weights[key] = mx.array(value)
    path.unlink()
    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})


def test_non_finite_weights_are_refused(mlx_model_dir: Path, tmp_path: Path, capsys) -> None:
    import mlx_diar.__main__ as cli

    model = _copy(mlx_model_dir, tmp_path / "model")
    _with_nan(model / WEIGHTS_FILE, "embedding.resnet.layer4.2.conv1.weight")
    message = f"{model / WEIGHTS_FILE}: tensor embedding.resnet.layer4.2.conv1.weight holds NaN or infinite values"
    with pytest.raises(ModelDirError, match=f"^{message}$"):
        load_model(model)
    assert cli.main(["diarize", "x.wav", "--model", str(model)]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_non_finite_converted_plda_is_refused(mlx_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    model = _copy(mlx_model_dir, tmp_path / "model")
    arrays = load_file(str(model / PLDA_FILE))
    arrays["psi"][3] = np.inf
    (model / PLDA_FILE).unlink()
    save_file(arrays, str(model / PLDA_FILE))
    with pytest.raises(ModelDirError, match=rf"^{model / PLDA_FILE}: array 'psi' holds NaN or infinite values$"):
        load_model(model)


def test_the_untampered_copy_loads(mlx_model_dir: Path, tmp_path: Path) -> None:
    assert load_model(_copy(mlx_model_dir, tmp_path / "model")).plda["psi"].dtype == np.float64


# ---------------------------------------------------------------------------------------------- conversion
def _tampered_checkpoint(fixture_root: Path, role: str, out: Path, edit) -> Path:
    """The fixture's own checkpoint (built by the harness, trusted) with one tensor edited."""
    checkpoint = torch.load(fixture_root / role / "pytorch_model.bin", map_location="cpu", weights_only=False)
    edit(checkpoint["state_dict"])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return out


def _convert(source: Path, out: Path, model_type: str):
    from mlx_diar.conversion.convert import convert_pyannote_model

    return convert_pyannote_model(source, out, model_type, "float32")


def test_a_non_finite_checkpoint_is_refused(fixture_root: Path, tmp_path: Path) -> None:
    def poison(state):
        state["linear.0.weight"][3, 4] = float("nan")

    source = _tampered_checkpoint(fixture_root, "segmentation", tmp_path / "seg/pytorch_model.bin", poison)
    with pytest.raises(CheckpointError, match=rf"^{source}: tensor linear.0.weight holds NaN or infinite values$"):
        _convert(source, tmp_path / "out", "segmentation")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("role, key, edit, named", [
    ("segmentation", "sincnet.conv1d.0.filterbank.low_hz_", lambda v: v[:-1].clone(),
     "sincnet.conv1d.0.filterbank.low_hz_: (39, 1)"),
    ("segmentation", "lstm.bias_ih_l0", lambda v: v[:-1].clone(), "lstm.0.forward.bias: bias_ih (511,)"),
    ("segmentation", "sincnet.conv1d.1.weight", lambda v: v.reshape(-1).clone(), "sincnet.conv1d.1.weight: (24000,)"),
    ("embedding", "resnet.layer1.0.conv1.weight", lambda v: v.reshape(-1).clone(),
     "resnet.layer1.0.conv1.weight: (9216,)"),
])
def test_a_wrong_shaped_checkpoint_tensor_is_named(fixture_root, tmp_path, role, key, edit, named) -> None:
    def reshape(state):
        state[key] = edit(state[key])

    source = _tampered_checkpoint(fixture_root, role, tmp_path / f"{role}/pytorch_model.bin", reshape)
    with pytest.raises(CheckpointError) as error:
        _convert(source, tmp_path / "out", role)
    assert str(error.value).startswith(f"{source}: ") and named in str(error.value), error.value
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- PLDA sources
@pytest.fixture
def pipeline_copy(fixture_root: Path, tmp_path: Path):
    """pipeline_copy(edit) -> a copy of the fixture pipeline with plda/plda.npz's arrays edited."""

    def make(edit) -> Path:
        root = tmp_path / "pipeline"
        for part in ("segmentation", "embedding", "plda"):
            shutil.copytree(fixture_root / part, root / part)
        shutil.copy(fixture_root / "config.yaml", root / "config.yaml")
        with np.load(root / "plda/plda.npz") as data:
            arrays = {k: data[k] for k in data.files}
        edit(arrays)
        np.savez(root / "plda/plda.npz", **arrays)
        return root
    return make


PLDA_EDITS = {
    "object array": (lambda a: a.update(mu=np.array([{"a": 1}], dtype=object)),
                     "cannot read PLDA arrays (Object arrays cannot be loaded when allow_pickle=False)"),
    "NaN": (lambda a: a["psi"].__setitem__(0, np.nan), "array 'psi' holds NaN or infinite values"),
    "shape": (lambda a: a.update(tr=a["tr"][:-1]), "array 'tr' has shape (127, 128), expected (128, 128)"),
}


@pytest.mark.parametrize("case", list(PLDA_EDITS))
def test_a_bad_plda_npz_is_one_line_for_the_converter_and_for_pyannote(pipeline_copy, tmp_path, case) -> None:
    from reference.runner import load_pipeline

    edit, problem = PLDA_EDITS[case]
    root = pipeline_copy(edit)
    for load in (lambda: _convert(root, tmp_path / "out", "full"), lambda: load_pipeline(root)):
        with pytest.raises(CheckpointError) as error:
            load()
        assert str(root / "plda") in str(error.value) and problem in str(error.value), error.value


def test_reference_cli_reports_an_object_array_plda_in_one_line(pipeline_copy, tmp_path, capsys) -> None:
    import soundfile as sf

    from reference.__main__ import main

    root = pipeline_copy(PLDA_EDITS["object array"][0])
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(16000, np.float32), 16000)
    assert main(["diarize", str(audio), "--checkpoint", str(root)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"error: {root / 'plda/plda.npz'}: cannot read PLDA arrays (Object arrays cannot be loaded "
                       "when allow_pickle=False)") and "Traceback" not in "".join(err)
