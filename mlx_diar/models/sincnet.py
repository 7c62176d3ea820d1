"""Mirrors pyannote.audio.models.blocks.sincnet.SincNet

The learnable sinc filterbank (asteroid-filterbanks ``ParamSincFB``) is materialised
once, at conversion, by `sinc_filters` into a plain convolution weight; at inference
SincNet is three conv > max-pool > instance-norm > leaky-ReLU stages.
MLX layout is channels-last: activations are (batch, time, channels).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.models.kernels import conv1d

NUM_SINC_FILTERS = 80
SINC_KERNEL_SIZE = 251

# (kernel, stride) of every conv and pool along the time axis, in order (stride of the
# first one is the SincNet stride); as in SincNet.num_frames / receptive_field_size.
_KERNELS = (SINC_KERNEL_SIZE, 3, 5, 3, 5, 3)
_STRIDES_AFTER_SINC = (3, 1, 3, 1, 3)


def sinc_filters(
    low_hz_: np.ndarray,
    band_hz_: np.ndarray,
    window_: np.ndarray,
    n_: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    min_low_hz: float = 50,
    min_band_hz: float = 50,
) -> np.ndarray:
    """Filters of asteroid_filterbanks.ParamSincFB.filters(), shape (80, 1, 251), float32.

    Arguments are the filterbank's parameters and buffers as stored in the checkpoint:
    ``low_hz_`` and ``band_hz_`` (40, 1), ``window_`` (125,), ``n_`` (1, 125).
    Computed in float32, operation by operation, as torch does, except that sin and cos
    are evaluated in float64 and rounded: torch's float32 sin/cos are within one ulp of
    the correctly rounded value, and this matches them on ~95 % of the filter taps
    (numpy's float32 sin/cos on ~83 %); max abs difference to torch ~1.2e-6.
    """
    f32 = np.float32

    def sin(a: np.ndarray) -> np.ndarray:
        return np.sin(a.astype(np.float64)).astype(f32)

    def cos(a: np.ndarray) -> np.ndarray:
        return np.cos(a.astype(np.float64)).astype(f32)

    low_hz_, band_hz_ = np.asarray(low_hz_, f32), np.asarray(band_hz_, f32)
    window_, n_ = np.asarray(window_, f32), np.asarray(n_, f32).reshape(1, -1)

    low = f32(min_low_hz) + np.abs(low_hz_)
    high = np.clip(low + f32(min_band_hz) + np.abs(band_hz_), f32(min_low_hz), f32(sample_rate / 2))
    band = (high - low)[:, 0]
    ft_low, ft_high = low * n_, high * n_  # (40, 1) x (1, 125): torch's matmul with K=1
    half_n = n_ / f32(2)

    cos_left = ((sin(ft_high) - sin(ft_low)) / half_n) * window_
    cos_center = f32(2) * band[:, None]
    cos_filters = np.concatenate([cos_left, cos_center, cos_left[:, ::-1]], axis=1)

    sin_left = ((cos(ft_low) - cos(ft_high)) / half_n) * window_
    sin_center = np.zeros_like(cos_center)
    sin_filters = np.concatenate([sin_left, sin_center, -sin_left[:, ::-1]], axis=1)

    filters = np.concatenate([cos_filters, sin_filters], axis=0)
    filters = filters / (f32(2) * np.concatenate([band, band])[:, None])
    return filters[:, None, :].astype(f32)


def _time_mean(x: mx.array, block: int = 64) -> mx.array:
    """Mean over axis 1 of (batch, time, channels), summed in two levels.

    MLX's CPU reduction accumulates sequentially in float32: over a 10 s waveform the
    variance came out up to 1.5e-4 off (relative); summing time blocks of ``block``
    steps element-wise, then within the block, brings it to ~1e-7 (torch accumulates
    these statistics in float64) and reduces over contiguous rows, which MLX does fast.
    """
    batch, num_steps, channels = x.shape
    pad = -num_steps % block
    if pad:
        x = mx.pad(x, [(0, 0), (0, pad), (0, 0)])  # zeros leave the sum unchanged
    partial = x.reshape(batch, -1, block * channels).sum(axis=1)
    return partial.reshape(batch, block, channels).sum(axis=1, keepdims=True) / num_steps


class InstanceNorm(nn.Module):
    """torch.nn.InstanceNorm1d(affine=True) on channels-last input (batch, time, channels).

    Statistics per (batch, channel) over time; biased variance; eps inside the sqrt.
    Computed in float32 whatever the input dtype (the squares of SincNet's conv outputs
    overflow float16), returned in the input dtype.
    """

    def __init__(self, dims: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        x32 = x.astype(mx.float32)
        mean = _time_mean(x32)
        var = _time_mean(mx.square(x32 - mean))
        # torch's batch_norm CPU kernel: y = x * alpha + beta, alpha = invstd * w, beta = b - mean * alpha
        alpha = mx.rsqrt(var + self.eps) * self.weight.astype(mx.float32)
        beta = self.bias.astype(mx.float32) - mean * alpha
        return (x32 * alpha + beta).astype(x.dtype)


def _to_torch_layout(x: mx.array) -> mx.array:
    """(batch, time, channels) -> (batch, channels, time)."""
    return x.transpose(0, 2, 1)


class SincNet(nn.Module):
    """SincNet feature extractor: (batch, samples, 1) -> (batch, frames, 60).

    Sub-modules keep pyannote's names (``wav_norm1d``, ``conv1d``, ``pool1d``,
    ``norm1d``); ``conv1d[0]`` holds the materialised sinc filterbank (no bias).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, stride: int = 10):
        super().__init__()
        if sample_rate != SAMPLE_RATE:
            raise NotImplementedError("SincNet only supports 16kHz audio (as in pyannote).")
        self.sample_rate = sample_rate
        self.stride = stride
        self.wav_norm1d = InstanceNorm(1)
        self.conv1d = [
            nn.Conv1d(1, NUM_SINC_FILTERS, SINC_KERNEL_SIZE, stride=stride, bias=False),
            nn.Conv1d(NUM_SINC_FILTERS, 60, 5),
            nn.Conv1d(60, 60, 5),
        ]
        self.pool1d = [nn.MaxPool1d(3, stride=3) for _ in range(3)]
        self.norm1d = [InstanceNorm(NUM_SINC_FILTERS), InstanceNorm(60), InstanceNorm(60)]

    @property
    def _strides(self) -> tuple[int, ...]:
        return (self.stride, *_STRIDES_AFTER_SINC)

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples."""
        for k, s in zip(_KERNELS, self._strides):
            num_samples = 1 + (num_samples - k) // s
        return num_samples

    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Number of input samples seen by ``num_frames`` consecutive output frames."""
        for k, s in reversed(list(zip(_KERNELS, self._strides))):
            num_frames = k + (num_frames - 1) * s
        return num_frames

    def receptive_field_center(self, frame: int = 0) -> int:
        """Index of the input sample at the center of output frame ``frame``'s receptive field."""
        for k, s in reversed(list(zip(_KERNELS, self._strides))):
            frame = frame * s + (k - 1) // 2
        return frame

    def __call__(self, x: mx.array, capture: dict[str, mx.array] | None = None) -> mx.array:
        """(batch, samples, 1) -> (batch, frames, 60); ``capture`` gets torch-layout outputs.

        A waveform constant over the chunk (digital silence) gets the output every layer gives it
        in exact arithmetic: each instance norm maps a constant to its bias, so SincNet's output
        is leaky_relu(norm1d[2].bias) at every frame. torch's convolutions keep a constant input
        exactly constant; the GEMMs here round some rows differently (~4e-7), and three instance
        norms would amplify that to features of order 1 (pyannote: silence everywhere; without
        this, speech in 83 of 589 frames of a zero chunk).
        """
        constant = mx.all(x == x[:, :1], axis=(1, 2))
        x = self.wav_norm1d(x)
        if capture is not None:
            capture["sincnet.wav_norm1d"] = _to_torch_layout(x)
        for c, (conv, pool, norm) in enumerate(zip(self.conv1d, self.pool1d, self.norm1d)):
            x = conv1d(conv, x)
            if capture is not None:
                capture[f"sincnet.conv1d.{c}"] = _to_torch_layout(x)
            if c == 0:
                x = mx.abs(x)
            x = pool(x)
            if capture is not None:
                capture[f"sincnet.pool1d.{c}"] = _to_torch_layout(x)
            x = norm(x)
            if capture is not None:
                capture[f"sincnet.norm1d.{c}"] = _to_torch_layout(x)
            x = nn.leaky_relu(x, negative_slope=0.01)
        silence = nn.leaky_relu(self.norm1d[-1].bias, negative_slope=0.01).astype(x.dtype)
        x = mx.where(constant[:, None, None], silence, x)
        if capture is not None:
            capture["sincnet"] = _to_torch_layout(x)
        return x
