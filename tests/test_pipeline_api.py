"""The MLX pipeline as users call it: Python API, CLI, audio input, parameters, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.runtime.audio import SAMPLE_RATE, AudioError, as_waveform, load_audio


def test_no_torch_or_pyannote_audio_at_inference(mlx_model_dir: Path, sample_10s) -> None:
    np.save(mlx_model_dir.parent / "clip.npy", sample_10s)
    code = (
        "import sys, numpy as np; from mlx_diar import SpeakerDiarizationPipeline;"
        f"p = SpeakerDiarizationPipeline(model_path={str(mlx_model_dir)!r});"
        f"w = np.load({str(mlx_model_dir.parent / 'clip.npy')!r});"
        f"out = p({{'waveform': w, 'sample_rate': {SAMPLE_RATE}}});"
        "assert len(out.speaker_diarization.labels()) >= 1;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'lightning')"
        " or m.startswith('pyannote.audio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_matches_pyannote_rttm(mlx_model_dir: Path, sample_10s, reference_run_10s, tmp_path: Path) -> None:
    wav = tmp_path / "sample10.wav"
    sf.write(wav, sample_10s, SAMPLE_RATE, subtype="FLOAT")
    out = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(mlx_model_dir)],
                         capture_output=True, text=True, check=True)
    assert out.stdout == reference_run_10s.rttm()
    rttm = tmp_path / "out" / "x.rttm"
    subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(mlx_model_dir),
                    "--rttm", str(rttm), "--exclusive"], check=True, capture_output=True)
    assert rttm.read_text() == reference_run_10s.rttm(exclusive=True)


def test_cli_bad_file_is_reported_and_others_still_written(mlx_model_dir: Path, sample_10s, tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, sample_10s, SAMPLE_RATE)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    rttm = tmp_path / "all.rttm"
    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(bad), str(good), "--model",
                           str(mlx_model_dir), "--rttm", str(rttm)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.wav" in proc.stderr and "Traceback" not in proc.stderr
    assert rttm.read_text().startswith("SPEAKER good 1 ")


def test_cli_parameters_are_overridable_and_printable(mlx_model_dir: Path, sample_10s, tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, sample_10s[:SAMPLE_RATE * 8], SAMPLE_RATE)
    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(mlx_model_dir),
                           "--threshold", "0.3", "--param", "segmentation.min_duration_off=0.25",
                           "--embedding-batch-size", "9", "--print-params"],
                          capture_output=True, text=True, check=True)
    params, _ = json.JSONDecoder().raw_decode(proc.stderr)
    assert params["params"]["clustering"]["threshold"] == 0.3
    assert params["params"]["segmentation"]["min_duration_off"] == 0.25
    assert params["embedding_batch_size"] == 9
    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(mlx_model_dir),
                           "--param", "clustering.nope=1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "clustering.nope" in proc.stderr


def test_python_overrides_like_instantiate(mlx_model_dir: Path, sample_10s) -> None:
    from mlx_diar import SpeakerDiarizationPipeline

    pipeline = SpeakerDiarizationPipeline(model_path=mlx_model_dir)
    assert pipeline.parameters()["params"]["clustering"] == {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
    pipeline.instantiate({"clustering": {"Fa": 0.1}, "segmentation": {"min_duration_off": 0.5}})
    assert pipeline.parameters()["params"]["clustering"]["Fa"] == 0.1
    out = pipeline({"waveform": sample_10s, "sample_rate": SAMPLE_RATE}, num_speakers=1)
    assert out.speaker_diarization.labels() == ["SPEAKER_00"]
    assert out.speaker_embeddings.shape == (1, 256)
    with pytest.raises(ValueError, match="min_speakers must be smaller"):
        pipeline({"waveform": sample_10s, "sample_rate": SAMPLE_RATE}, min_speakers=3, max_speakers=2)


def test_example_runs(fixture_root: Path, tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "basic_usage.py"
    out = subprocess.run([sys.executable, str(example), str(fixture_root), str(tmp_path / "model")],
                         capture_output=True, text=True, check=True)
    assert "SPEAKER_00:" in out.stdout and "speaker embeddings: (" in out.stdout


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_audio_formats_downmix_and_resample(tmp_path: Path, sample_10s, fmt: str, subtype: str) -> None:
    import soxr

    stereo44 = soxr.resample(np.stack([sample_10s[:32000], 0.5 * sample_10s[:32000]], axis=1), SAMPLE_RATE, 44100)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, stereo44, 44100, format=fmt, subtype=subtype)
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - 32000) <= 1200  # mp3 adds encoder padding
    expected = 0.75 * sample_10s[:32000]
    n = min(len(expected), len(waveform))
    if fmt == "FLAC":  # lossless: downmix + resample round trip stays close
        assert np.corrcoef(waveform[:n], expected[:n])[0, 1] > 0.99


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty.wav: the audio is empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="NaN"):
        as_waveform({"waveform": np.array([0.0, np.nan]), "sample_rate": SAMPLE_RATE})
    with pytest.raises(AudioError, match="sample rate"):
        as_waveform({"waveform": np.zeros(10), "sample_rate": 0})
