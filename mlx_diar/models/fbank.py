"""Mirrors torchaudio.compliance.kaldi.fbank as called by pyannote.audio.models.embedding.wespeaker.BaseWeSpeakerResNet.compute_fbank

`compute_fbank` is pyannote's method: scale the waveform to 16-bit range, run
Kaldi's fbank per item, centre each mel bin over time. `kaldi_fbank` is
torchaudio's `kaldi.fbank` for the options pyannote passes, batched. The
window and mel matrix are built in NumPy float32, operation by operation as
torch builds them. Everything here runs in float32 whatever the model dtype:
the log of small mel energies is precision-sensitive.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_diar.models.kernels import constant
from mlx_diar.runtime.audio import SAMPLE_RATE

EPSILON = float(np.finfo(np.float32).eps)  # torch.finfo(torch.float).eps
PREEMPHASIS_COEFFICIENT = 0.97  # kaldi.fbank default, not overridden by pyannote
LOW_FREQ = 20.0  # kaldi.fbank defaults: low_freq, high_freq (<= 0: offset from Nyquist)
HIGH_FREQ = 0.0
BLACKMAN_COEFF = 0.42
WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "blackman")

_f32 = np.float32


@dataclasses.dataclass(frozen=True)
class FbankOptions:
    """The `kaldi.fbank` options pyannote's WeSpeaker models pass, with pyannote's defaults."""

    sample_rate: float = SAMPLE_RATE
    num_mel_bins: int = 80
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    dither: float = 0.0
    window_type: str = "hamming"
    use_energy: bool = False


FBANK_OPTIONS = tuple(field.name for field in dataclasses.fields(FbankOptions))


def window_properties(sample_rate: float, frame_length: float, frame_shift: float,
                      round_to_power_of_two: bool) -> tuple[int, int, int]:
    """(window_size, window_shift, padded_window_size) in samples, as torchaudio computes them."""
    window_shift = int(sample_rate * frame_shift * 0.001)
    window_size = int(sample_rate * frame_length * 0.001)
    padded = 1 << (window_size - 1).bit_length() if round_to_power_of_two else window_size
    return window_size, window_shift, padded


def num_frames(num_samples: int, window_size: int, window_shift: int, snip_edges: bool) -> int:
    """Number of fbank frames for ``num_samples`` samples (torchaudio's `_get_strided`)."""
    if snip_edges:
        return 1 + (num_samples - window_size) // window_shift
    return (num_samples + window_shift // 2) // window_shift


@lru_cache(maxsize=8)
def frame_indices(num_samples: int, window_size: int, window_shift: int, snip_edges: bool) -> np.ndarray:
    """(frames, window_size) sample indices of every frame; reflects the ends when not snip_edges."""
    if num_samples < window_size:
        raise ValueError(f"need at least {window_size} samples for one frame, got {num_samples}")
    m = num_frames(num_samples, window_size, window_shift, snip_edges)
    source = np.arange(num_samples)
    if not snip_edges:  # torchaudio: cat(reversed[-pad:], waveform, reversed), or a trimmed start
        pad = window_size // 2 - window_shift // 2
        head = source[:pad][::-1] if pad > 0 else np.empty(0, dtype=source.dtype)
        body = source if pad > 0 else source[-pad:]
        source = np.concatenate([head, body, source[::-1]])
    starts = np.arange(m)[:, None] * window_shift
    return source[starts + np.arange(window_size)[None, :]].astype(np.int32)


@lru_cache(maxsize=8)
def feature_window(window_type: str, window_size: int) -> np.ndarray:
    """torchaudio's `_feature_window_function` in float32 (symmetric windows)."""
    n = np.arange(window_size, dtype=_f32)
    if window_type in ("hamming", "hanning", "povey"):
        alpha, beta = (0.54, 0.46) if window_type == "hamming" else (0.5, 0.5)
        # torch.hamming_window(periodic=False): arange * (2 pi / (N - 1)) -> cos -> * -beta -> + alpha
        window = np.cos(n * _f32(2.0 * math.pi / (window_size - 1))) * _f32(-beta) + _f32(alpha)
        return window ** _f32(0.85) if window_type == "povey" else window
    if window_type == "rectangular":
        return np.ones(window_size, dtype=_f32)
    if window_type == "blackman":
        a = _f32(2 * math.pi / (window_size - 1))
        return (_f32(BLACKMAN_COEFF) - _f32(0.5) * np.cos(a * n)
                + _f32(0.5 - BLACKMAN_COEFF) * np.cos(_f32(2) * a * n))
    raise ValueError(f"invalid window type {window_type!r}; expected one of {WINDOW_TYPES}")


def _mel_scale(freq: np.ndarray) -> np.ndarray:
    return _f32(1127.0) * np.log(_f32(1.0) + freq / _f32(700.0))


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded_window_size: int, sample_freq: float) -> np.ndarray:
    """Kaldi mel filterbank (num_bins, padded_window_size // 2 + 1), float32, zero last column.

    torchaudio's `get_mel_banks` for kaldi.fbank's default low/high frequencies and no VTLN
    warping (pyannote never changes them), followed by the zero column `fbank` pads for
    the Nyquist bin. torch's float32 log differs from NumPy's by an ulp here and there,
    so a few entries differ by ~1e-5.
    """
    low_freq = LOW_FREQ
    high_freq = HIGH_FREQ if HIGH_FREQ > 0.0 else HIGH_FREQ + 0.5 * sample_freq
    fft_bin_width = sample_freq / padded_window_size
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = _f32((mel_high - mel_low) / (num_bins + 1))
    mel_low = _f32(mel_low)

    bins = np.arange(num_bins, dtype=_f32)[:, None]
    left = mel_low + bins * delta
    center = mel_low + (bins + _f32(1.0)) * delta
    right = mel_low + (bins + _f32(2.0)) * delta
    mel = _mel_scale(_f32(fft_bin_width) * np.arange(padded_window_size // 2, dtype=_f32))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(_f32(0.0), np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(_f32)


def kaldi_fbank(waveforms: mx.array, **options: Any) -> mx.array:
    """torchaudio `kaldi.fbank` of each row: (batch, samples) -> (batch, frames, num_mel_bins), float32.

    `options` are those of `FbankOptions` (defaults: what pyannote's WeSpeaker models pass); the
    other kaldi.fbank options keep torchaudio's defaults (pre-emphasis 0.97, DC offset removed,
    power spectrum, log mel energies floored at float32 eps).
    """
    o = FbankOptions(**options)
    if o.dither != 0.0:
        raise NotImplementedError("dither adds random noise: no reproducible counterpart")
    if o.use_energy:
        raise NotImplementedError("use_energy=True: pyannote's ResNet cannot take the extra column")
    window_size, window_shift, padded = window_properties(
        o.sample_rate, o.frame_length, o.frame_shift, o.round_to_power_of_two
    )
    x = waveforms.astype(mx.float32)
    idx = constant(frame_indices, x.shape[-1], window_size, window_shift, o.snip_edges)
    frames = x[:, idx]  # (batch, frames, window_size)

    frames = frames - mx.mean(frames, axis=-1, keepdims=True)  # remove DC offset
    previous = mx.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)  # replicate pad
    frames = frames - PREEMPHASIS_COEFFICIENT * previous
    frames = frames * constant(feature_window, o.window_type, window_size)

    spectrum = mx.square(mx.abs(mx.fft.rfft(frames, n=padded, axis=-1)))
    mel = constant(mel_banks, o.num_mel_bins, padded, float(o.sample_rate))
    energies = mx.matmul(spectrum, mel.T)
    return mx.log(mx.maximum(energies, EPSILON))


def _centering_average(features: mx.array, kernel_size: int) -> mx.array:
    """F.avg_pool1d(kernel 2*(k//2)+1, stride 1, padding k//2, count_include_pad=False) over time."""
    half = kernel_size // 2
    num_frames_, num_bins = features.shape[1], features.shape[2]
    padded = mx.pad(features, [(0, 0), (half, half), (0, 0)])
    ones = mx.ones((num_bins, 2 * half + 1, 1), dtype=features.dtype)
    sums = mx.conv1d(padded, ones, groups=num_bins)  # depthwise window sums
    return sums / constant(_window_counts, num_frames_, half)[None, :, None]


def _window_counts(num_frames_: int, half: int) -> np.ndarray:
    """Frames inside each frame's window of +-`half` frames (the edges see fewer)."""
    t = np.arange(num_frames_)
    return (np.minimum(t + half, num_frames_ - 1) - np.maximum(t - half, 0) + 1).astype(np.float32)


def compute_fbank(waveforms: mx.array, *, fbank_centering_span: float | None = None, **options: Any) -> mx.array:
    """pyannote's `compute_fbank`: (batch, samples) in [-1, 1] -> centred (batch, frames, num_mel_bins).

    Scales by 2**15, computes `kaldi_fbank` with `options` (see `FbankOptions`), then subtracts
    the mean over all frames, or a running mean over ``fbank_centering_span`` seconds when given.
    """
    features = kaldi_fbank(waveforms.astype(mx.float32) * float(1 << 15), **options)
    if fbank_centering_span is None:
        return features - mx.mean(features, axis=1, keepdims=True)
    o = FbankOptions(**options)
    window_size, window_shift, _ = window_properties(o.sample_rate, o.frame_length, o.frame_shift, False)
    kernel_size = 1 + (int(fbank_centering_span * o.sample_rate) - window_size) // window_shift
    return features - _centering_average(features, kernel_size)
