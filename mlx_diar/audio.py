"""Audio input: decode (wav/flac/ogg/mp3 via libsndfile), downmix to mono, resample to 16 kHz (soxr).

Mirrors what pyannote.audio.core.io.Audio(sample_rate=16000, mono="downmix") delivers:
a mono float32 waveform at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlx_diar.errors import AudioError

SAMPLE_RATE = 16000


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to a mono float32 waveform at `sample_rate`."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    return prepare_waveform(data, sr, name=str(path), sample_rate=sample_rate, channels_last=True)


def prepare_waveform(
    waveform: Any, sr: int, name: str = "waveform", sample_rate: int = SAMPLE_RATE, channels_last: bool = False
) -> np.ndarray:
    """Validate, downmix and resample an array; returns mono float32 (num_samples,)."""
    array = np.asarray(waveform, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None] if channels_last else array[None, :]
    if array.ndim != 2:
        raise AudioError(f"{name}: expected a (channel, sample) or (sample,) array, got shape {array.shape}")
    if channels_last:
        array = array.T
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"{name}: invalid sample rate {sr!r}")
    if array.shape[1] == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples)")
    if not np.all(np.isfinite(array)):
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    mono = array.mean(axis=0) if array.shape[0] > 1 else array[0]
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def as_waveform(file: str | Path | Mapping[str, Any], sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    """Accept a path or {"waveform": array, "sample_rate": int[, "uri": str]}; return (mono 16 kHz, uri)."""
    if isinstance(file, Mapping):
        if "waveform" not in file or "sample_rate" not in file:
            raise AudioError("audio mapping needs 'waveform' and 'sample_rate' keys")
        uri = str(file.get("uri", "waveform"))
        return prepare_waveform(file["waveform"], file["sample_rate"], name=uri, sample_rate=sample_rate), uri
    return load_audio(file, sample_rate), Path(file).stem
