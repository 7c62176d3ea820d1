"""open_audio / AudioFile: a recording read from disk slice by slice gives load_audio's samples,
and the pipeline's output on it is the one it gives on the array."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.runtime.audio import AudioFile, AudioWarning, as_waveform, closing_audio, load_audio, open_audio
from mlx_diar.errors import AudioError
from mlx_diar.runtime.inference import chunk_batches

RNG = np.random.default_rng(3)


def _write(path: Path, seconds: float, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> Path:
    sf.write(path, (RNG.standard_normal((int(seconds * sr), channels)) * 0.1).astype(np.float32), sr, subtype=subtype)
    return path


@pytest.mark.parametrize("name,channels,subtype", [("a.wav", 1, "PCM_16"), ("b.wav", 2, "PCM_24"),
                                                   ("c.wav", 3, "FLOAT"), ("d.aiff", 1, "PCM_16"),
                                                   ("e.wav", 17, "FLOAT")])
def test_slices_equal_the_whole_decode(tmp_path: Path, name: str, channels: int, subtype: str) -> None:
    path = _write(tmp_path / name, 3.3, channels=channels, subtype=subtype)
    expected = load_audio(path)
    with closing_audio(open_audio(path)) as waveform:
        assert isinstance(waveform, AudioFile) and waveform.shape == expected.shape and len(waveform) == len(expected)
        for start, stop in [(0, 1), (0, len(expected)), (17, 16017), (len(expected) - 5, len(expected) + 100),
                            (40000, 40000), (len(expected) + 10, len(expected) + 20), (None, None)]:
            got = waveform[start:stop]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected[start:stop])
        with pytest.raises(TypeError, match="contiguous slices only"):
            waveform[::2]


@pytest.mark.parametrize("name,sr", [("e.flac", 16000), ("f.wav", 44100)])
def test_compressed_or_resampled_files_are_decoded_whole(tmp_path: Path, name: str, sr: int) -> None:
    path = _write(tmp_path / name, 1.0, sr=sr)
    waveform, uri = as_waveform(path)
    assert isinstance(waveform, np.ndarray) and uri == Path(name).stem
    np.testing.assert_array_equal(waveform, load_audio(path))


def test_chunk_batches_read_the_same_chunks_from_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.wav", 2.37)
    array = load_audio(path)
    with closing_audio(open_audio(path)) as waveform:
        for batch in (1, 3, 50):
            for a, b in zip(chunk_batches(array, 16000, 1600, batch), chunk_batches(waveform, 16000, 1600, batch),
                            strict=True):
                np.testing.assert_array_equal(a, b)


def test_bad_streamed_audio_is_refused_naming_the_file(tmp_path: Path) -> None:
    data = (RNG.standard_normal((32000, 1)) * 0.1).astype(np.float32)
    data[20000] = np.nan
    sf.write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: the audio contains NaN"):
        open_audio(tmp_path / "nan.wav")
    full = _write(tmp_path / "full.wav", 2.0).read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated"):
        open_audio(tmp_path / "cut.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: the audio is empty"):
        open_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "silent.wav", np.zeros((16000, 1), np.float32), 16000)
    with pytest.warns(AudioWarning, match=r"silent\.wav: the audio is silent"):
        open_audio(tmp_path / "silent.wav").close()


def test_a_file_shortened_after_opening_is_an_audio_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.wav", 2.0)
    waveform = open_audio(path)
    try:
        with open(path, "r+b") as f:
            f.truncate(44 + 2 * 16000)  # half the samples gone
        with pytest.raises(AudioError, match=r"h\.wav: truncated while reading"):
            waveform[0:32000]
    finally:
        waveform.close()


_OPEN_PEAK = """
import sys
from harness.memory import PeakRSS
from mlx_diar.runtime.audio import open_audio
with PeakRSS(interval=0.001) as peak:
    baseline = peak.peak_mb
    waveform = open_audio(sys.argv[1])
    chunk = waveform[1000:161000]
print(peak.peak_mb - baseline)
"""


def test_opening_ten_minutes_holds_no_copy_of_the_audio(tmp_path: Path) -> None:
    """The checks decode the file block by block; the AudioFile holds none of it (36.6 MB as float32)."""
    path = tmp_path / "long.wav"
    sf.write(path, (RNG.standard_normal((600 * 16000, 1)) * 0.1).astype(np.float32), 16000, subtype="PCM_16")
    out = subprocess.run([sys.executable, "-c", _OPEN_PEAK, str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) < 20.0, "MB above the baseline while opening and reading one chunk"


def test_pipeline_on_a_file_equals_the_pipeline_on_its_array(mlx_pipeline, sample, tmp_path: Path) -> None:
    path = tmp_path / "sample12.wav"
    sf.write(path, sample[0][: 12 * 16000], 16000, subtype="FLOAT")
    from_array = mlx_pipeline.apply(load_audio(path), uri="sample12", keep_stages=True)
    from_file = mlx_pipeline(path, keep_stages=True)
    for stage in ("segmentation_scores", "embeddings"):
        a, b = from_array.stages[stage], from_file.stages[stage]
        np.testing.assert_array_equal(getattr(a, "data", a), getattr(b, "data", b))
    assert from_file.speaker_diarization.to_rttm() == from_array.speaker_diarization.to_rttm()
