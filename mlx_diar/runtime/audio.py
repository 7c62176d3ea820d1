"""Audio input: decode (wav/flac/ogg/mp3 via libsndfile), downmix to mono, resample to 16 kHz (soxr).

Mirrors what pyannote.audio.core.io.Audio(sample_rate=16000, mono="downmix") delivers:
a mono float32 waveform at 16 kHz.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import numpy as np

from mlx_diar.errors import AudioError

SAMPLE_RATE = 16000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
MAX_CHANNELS = 64
MAX_DURATION_ENV = "MLX_DIAR_MAX_AUDIO_SECONDS"
DEFAULT_MAX_DURATION = 24 * 3600.0
_CLIP_LEVEL = 0.999  # |sample| at or above it counts as clipped (full scale is 1.0)
_CLIP_FRACTION = 1e-3
_QUIET = 1e-4  # peak deviation from the mean under which the signal carries no speech
_BLOCK = 1 << 20  # samples per block of the whole-file checks


class AudioWarning(UserWarning):
    """Audio that can be diarized but probably not usefully: clipped, silent or DC-only."""


def max_duration() -> float:
    """Longest audio accepted, in seconds: MLX_DIAR_MAX_AUDIO_SECONDS, or 24 hours."""
    text = os.environ.get(MAX_DURATION_ENV)
    if text is None:
        return DEFAULT_MAX_DURATION
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise AudioError(f"{MAX_DURATION_ENV}={text!r}: expected a positive number of seconds")
    return value


def _announced_bytes(extra_info: str) -> tuple[int, int] | None:
    """(announced, present) data bytes when libsndfile reports a header larger than the file (WAV/AIFF)."""
    match = re.search(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", extra_info, re.MULTILINE)
    if match and int(match.group(2)) < int(match.group(1)):
        return int(match.group(1)), int(match.group(2))
    return None


def _checked_info(path: Path) -> Any:
    """soundfile's header info for `path`, refused before any sample is decoded when it is unusable.

    A sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], more than MAX_CHANNELS channels,
    a duration over `max_duration()` or a header announcing more data than the file holds.
    """
    import soundfile as sf

    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: header claims a sample rate of {info.samplerate} Hz, outside "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz: refused")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: header claims {info.channels} channels (at most {MAX_CHANNELS}): refused")
    limit = max_duration()
    if info.frames / info.samplerate > limit:
        raise AudioError(f"{path}: header claims {info.frames / info.samplerate:.0f} s of audio, more than the "
                         f"{limit:.0f} s allowed (set {MAX_DURATION_ENV} to allow more)")
    announced = _announced_bytes(info.extra_info)
    if announced:
        raise AudioError(f"{path}: truncated: the header announces {announced[0]} bytes of audio data, "
                         f"the file holds {announced[1]}")
    return info


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to a mono float32 waveform at `sample_rate`.

    The header is checked before any sample is decoded (`_checked_info`); a file shorter than
    its header says is refused as truncated. Clipped, silent or DC-only audio gives an AudioWarning.
    """
    import soundfile as sf

    path = Path(path)
    info = _checked_info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: truncated or corrupt audio data ({e})") from None
    if len(data) < info.frames:
        raise AudioError(f"{path}: truncated: the header announces {info.frames} frames, "
                         f"only {len(data)} could be decoded")
    return prepare_waveform(data, sr, name=str(path), sample_rate=sample_rate, channels_last=True)


# containers and encodings libsndfile reads at any frame offset with the same samples as a full decode
_SEEKABLE_FORMATS = {"WAV", "WAVEX", "W64", "RF64", "AIFF", "CAF"}
_SEEKABLE_SUBTYPES = {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}


class AudioFile:
    """A mono float32 recording at 16 kHz, read from disk one slice at a time (`waveform[a:b]`).

    What `open_audio` returns for uncompressed files already at the pipeline's sample rate:
    the pipeline reads each batch of chunks when it needs it, so an hour of audio never sits
    in memory (230 MB as float32). Each slice is decoded and downmixed exactly as `load_audio`
    does the whole file. The file stays open until `close()` (`with closing_audio(...)`).
    """

    dtype = np.dtype(np.float32)
    ndim = 1

    def __init__(self, path: Path, frames: int) -> None:
        import soundfile as sf

        self.path = path
        self.shape = (frames,)
        self._file = sf.SoundFile(str(path))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"{self.path}: AudioFile supports contiguous slices only, not {key!r}")
        start, stop, _ = key.indices(self.shape[0])
        count = max(0, stop - start)
        with self._lock:
            self._file.seek(start)
            data = self._file.read(count, dtype="float32", always_2d=True)
        if data.shape[0] != count:
            raise AudioError(f"{self.path}: truncated while reading: {data.shape[0]} of {count} frames "
                             f"at frame {start} (the file changed after it was opened?)")
        return _downmix(data.T)

    def close(self) -> None:
        """Close the file (further reads fail)."""
        self._file.close()


Waveform = Union[np.ndarray, AudioFile]


@contextlib.contextmanager
def closing_audio(waveform: Waveform) -> Iterator[Waveform]:
    """`with closing_audio(w):` closes `w` at the end when it is an `AudioFile`; an array needs nothing."""
    try:
        yield waveform
    finally:
        if isinstance(waveform, AudioFile):
            waveform.close()


def open_audio(path: str | Path) -> Waveform:
    """A file's mono 16 kHz waveform: an `AudioFile` read on demand where that gives the same samples
    (uncompressed WAV/AIFF/CAF at 16 kHz), otherwise `load_audio`'s array.

    Either way the header is checked first and the whole file is decoded once, block by block,
    to refuse truncated or non-finite audio and warn about clipped, silent or DC-only audio.
    """
    import soundfile as sf

    path = Path(path)
    info = _checked_info(path)
    if info.samplerate != SAMPLE_RATE or info.format not in _SEEKABLE_FORMATS \
            or info.subtype not in _SEEKABLE_SUBTYPES:
        return load_audio(path)
    stats, frames = _AudioStats(), 0
    try:
        for block in sf.blocks(str(path), blocksize=_BLOCK, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: the audio contains NaN or infinite samples")
            stats.add(_downmix(block.T))
            frames += block.shape[0]
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: truncated or corrupt audio data ({e})") from None
    if frames == 0:
        raise AudioError(f"{path}: the audio is empty (0 samples)")
    if frames < info.frames:
        raise AudioError(f"{path}: truncated: the header announces {info.frames} frames, "
                         f"only {frames} could be decoded")
    stats.warn(str(path))
    return AudioFile(path, frames)


def _blocks(samples: np.ndarray) -> Iterator[np.ndarray]:
    """Views of `samples` along its last axis, _BLOCK at a time: whole-file checks without
    whole-file temporaries (an hour at 16 kHz is 230 MB per float32 copy)."""
    for start in range(0, samples.shape[-1], _BLOCK):
        yield samples[..., start:start + _BLOCK]


class _AudioStats:
    """Peak, mean, range and clipped count of a mono signal fed block by block; `warn` gives an
    AudioWarning for clipped / out-of-range, silent, or DC-only audio."""

    def __init__(self) -> None:
        self.count, self.total, self.clipped = 0, 0.0, 0
        self.low, self.high = math.inf, -math.inf

    def add(self, block: np.ndarray) -> None:
        if block.size:
            self.count += block.size
            self.total += float(block.sum(dtype=np.float64))
            self.low = min(self.low, float(block.min()))
            self.high = max(self.high, float(block.max()))
            self.clipped += int(np.count_nonzero(np.abs(block) >= _CLIP_LEVEL))

    def warn(self, name: str) -> None:
        peak = max(abs(self.low), abs(self.high))
        mean = self.total / self.count
        deviation = max(self.high - mean, mean - self.low)  # max |x - mean|
        if deviation < _QUIET:
            what = "silent" if peak < _QUIET else f"constant (DC offset {mean:.3g}, no signal)"
            warnings.warn(f"{name}: the audio is {what}: no speech can be found in it", AudioWarning, stacklevel=3)
        elif peak > 1.0:
            warnings.warn(f"{name}: peak amplitude {peak:.3g} is beyond full scale (1.0): the audio is not "
                          "normalized and results may be poor", AudioWarning, stacklevel=3)
        elif self.clipped / self.count > _CLIP_FRACTION:
            warnings.warn(f"{name}: {self.clipped / self.count:.1%} of the samples are clipped (at full scale): "
                          "results may be poor", AudioWarning, stacklevel=3)


def _downmix(array: np.ndarray) -> np.ndarray:
    """(channel, sample) -> (sample,): the channel mean (pyannote's mono="downmix"), per sample, so
    a slice of the file downmixes to the same values as the whole file."""
    return array.mean(axis=0) if array.shape[0] > 1 else array[0]


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
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, (int, np.integer)) \
            or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: invalid sample rate {sr!r} (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    if array.shape[1] == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples)")
    if not all(np.isfinite(block).all() for block in _blocks(array)):
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    mono = _downmix(array)
    stats = _AudioStats()
    for block in _blocks(mono):
        stats.add(block)
    stats.warn(name)
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def rttm_uri(name: str, taken: set[str] | None = None) -> str:
    """An RTTM-safe uri from `name` (e.g. a file stem); name-2, name-3... when in `taken`, which it joins.

    RTTM fields are space-separated: whitespace and characters outside letters, digits and
    `.-+_` become `_`; an empty name becomes `audio`.
    """
    base = re.sub(r"[^\w.+-]", "_", name).strip(".") or "audio"
    uri, n = base, 1
    while taken is not None and uri in taken:
        n += 1
        uri = f"{base}-{n}"
    if taken is not None:
        taken.add(uri)
    return uri


def as_waveform(file: str | Path | Mapping[str, Any], sample_rate: int = SAMPLE_RATE) -> tuple[Waveform, str]:
    """Accept a path or {"waveform": array, "sample_rate": int[, "uri": str]}; return (mono 16 kHz, uri).

    A path at the pipeline's sample rate goes through `open_audio` (possibly an `AudioFile` to close).
    """
    if isinstance(file, Mapping):
        if "waveform" not in file or "sample_rate" not in file:
            raise AudioError("audio mapping needs 'waveform' and 'sample_rate' keys")
        uri = rttm_uri(str(file.get("uri", "waveform")))
        return prepare_waveform(file["waveform"], file["sample_rate"], name=uri, sample_rate=sample_rate), uri
    waveform = open_audio(file) if sample_rate == SAMPLE_RATE else load_audio(file, sample_rate)
    return waveform, rttm_uri(Path(file).stem)
