"""Mirrors pyannote.audio.models.embedding.wespeaker.WeSpeakerResNet34

Kaldi fbank (`fbank.compute_fbank`, float32) > ResNet34 trunk (BasicBlocks 3-4-6-3,
BatchNorm in eval mode) > temporal statistics pooling with per-frame weights
(pyannote's `StatsPool`) > `seg_1` linear (+ `seg_bn_1`, `seg_2` if two_emb_layer).
Sub-modules keep pyannote's names (``resnet.layer1.0.conv1``, ``resnet.seg_1``...).

MLX is channels-last: pyannote's conv maps are (batch, channels, freq, time), here
(batch, freq, time, channels); Conv2d weights are (out, kh, kw, in). Captured
activations are converted back to pyannote's layout.

Precision: each block (fbank, stem, layer1-4, pool, embedding; `mlx_diar.conversion.precision`) computes
in its dtype of ``compute``; the fbank itself is float32 (no half-precision FFT) and the
returned embeddings are float32.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.models.fbank import FBANK_OPTIONS, compute_fbank, num_frames, window_properties
from mlx_diar.models.kernels import constant, conv2d
from mlx_diar.conversion.precision import compute_dtypes

BN_EPS = 1e-5  # torch.nn.BatchNorm default, as used by the ResNet
_STAGE_STRIDES = (1, 2, 2, 2)  # stride of the first block of layer1..layer4

_FBANK_KEYS = (*FBANK_OPTIONS, "fbank_centering_span")


@dataclass
class WeSpeakerConfig:
    """Hyper-parameters of pyannote's WeSpeakerResNet34 (fbank options as pyannote names them)."""

    sample_rate: int = SAMPLE_RATE
    num_channels: int = 1
    num_mel_bins: int = 80
    frame_length: float = 25.0
    frame_shift: float = 10.0
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    dither: float = 0.0
    window_type: str = "hamming"
    use_energy: bool = False
    fbank_centering_span: float | None = None
    embed_dim: int = 256
    num_blocks: tuple[int, ...] = (3, 4, 6, 3)
    m_channels: int = 32
    two_emb_layer: bool = False
    folded_bn: bool = False

    @property
    def feat_dim(self) -> int:
        """Input feature dimension of the ResNet (pyannote passes num_mel_bins)."""
        return self.num_mel_bins

    @property
    def fbank_options(self) -> dict[str, Any]:
        """Keyword arguments of `compute_fbank`."""
        return {k: getattr(self, k) for k in _FBANK_KEYS}

    @classmethod
    def from_checkpoint(cls, hyper_parameters: dict[str, Any]) -> "WeSpeakerConfig":
        """From a pyannote checkpoint's ``hyper_parameters`` (architecture fixed by WeSpeakerResNet34)."""
        known = set(_FBANK_KEYS) | {"num_channels"}
        unknown = sorted(set(hyper_parameters) - known)
        if unknown:
            raise ValueError(f"unknown WeSpeaker hyper-parameters: {unknown}")
        return cls(**{k: v for k, v in hyper_parameters.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeSpeakerConfig":
        """Inverse of `to_dict`; rejects unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown WeSpeakerConfig keys: {unknown}")
        d = dict(d)
        if "num_blocks" in d:
            d["num_blocks"] = tuple(d["num_blocks"])
        return cls(**d)


class BatchNorm(nn.Module):
    """torch BatchNorm{1,2}d in eval mode over the last (channel) axis.

    Computed as torch's CPU kernel does: ``alpha = weight / sqrt(var + eps)``,
    ``beta = bias - mean * alpha``, ``y = x * alpha + beta``; alpha and beta in float32.
    """

    def __init__(self, dims: int, affine: bool = True, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = mx.ones((dims,))
            self.bias = mx.zeros((dims,))
        self.running_mean = mx.zeros((dims,))
        self.running_var = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        f32 = mx.float32
        alpha = 1.0 / mx.sqrt(self.running_var.astype(f32) + self.eps)
        bias = 0.0
        if self.affine:
            alpha = alpha * self.weight.astype(f32)
            bias = self.bias.astype(f32)
        beta = bias - self.running_mean.astype(f32) * alpha
        return x * alpha.astype(x.dtype) + beta.astype(x.dtype)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, folded: bool) -> tuple[nn.Module, nn.Module]:
    """Conv2d without bias + BatchNorm, or (folded) Conv2d with bias + Identity."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=folded)
    return conv, (nn.Identity() if folded else BatchNorm(out_ch))


def _torch_layout(x: mx.array) -> mx.array:
    """(batch, freq, time, channels) -> (batch, channels, freq, time)."""
    return x.transpose(0, 3, 1, 2)


class BasicBlock(nn.Module):
    """wespeaker resnet.BasicBlock: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int, folded: bool):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 3, stride, folded)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, 1, folded)
        self.shortcut = []
        if stride != 1 or in_planes != planes:
            conv, bn = _conv_bn(in_planes, planes, 1, stride, folded)
            self.shortcut = [conv] if folded else [conv, bn]

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(conv2d(self.conv1, x)))
        out = self.bn2(conv2d(self.conv2, out))
        shortcut = x
        for layer in self.shortcut:
            shortcut = layer(shortcut)
        return nn.relu(out + shortcut)


@lru_cache(maxsize=32)
def nearest_indices(num_weights: int, num_frames: int) -> np.ndarray:
    """Source index per output frame of ``F.interpolate(mode="nearest")`` (torch's float32 rule)."""
    scale = np.float32(num_weights) / np.float32(num_frames)
    src = np.floor(np.arange(num_frames, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, num_weights - 1).astype(np.int32)


def stats_pool(sequences: mx.array, weights: mx.array | None = None, dtype: mx.Dtype = mx.float32) -> mx.array:
    """pyannote StatsPool: (batch, frames, features) -> (batch, [speakers,] 2 * features), in `dtype`.

    Without weights: mean and unbiased std over frames. With (batch, [speakers,] num_weights)
    weights, resized to ``frames`` by nearest neighbour as pyannote does, per speaker:
    weighted mean and std with pyannote's ``v1 - v2 / v1`` correction and 1e-8 guards.
    """
    sequences = sequences.astype(dtype)
    if weights is None:
        mean = mx.mean(sequences, axis=1)
        std = mx.sqrt(mx.var(sequences, axis=1, ddof=1))
        return mx.concatenate([mean, std], axis=-1)

    squeeze = weights.ndim == 2
    w = weights[:, None, :] if squeeze else weights  # (batch, speakers, num_weights)
    num_frames = sequences.shape[1]
    if w.shape[-1] != num_frames:
        w = w[..., constant(nearest_indices, w.shape[-1], num_frames)]
    w = w.astype(dtype)

    v1 = mx.sum(w, axis=-1, keepdims=True) + 1e-8  # (batch, speakers, 1)
    mean = mx.matmul(w, sequences) / v1  # (batch, speakers, features)
    dx2 = mx.square(sequences[:, None] - mean[:, :, None])  # (batch, speakers, frames, features)
    v2 = mx.sum(mx.square(w), axis=-1, keepdims=True)
    var = mx.matmul(w[:, :, None, :], dx2)[:, :, 0] / (v1 - v2 / v1 + 1e-8)
    output = mx.concatenate([mean, mx.sqrt(var)], axis=-1)
    return output[:, 0] if squeeze else output


class TSTP(nn.Module):
    """wespeaker TSTP: flatten (channels, freq) per frame, then `stats_pool` over time."""

    def __call__(self, frames: mx.array, weights: mx.array | None = None, dtype: mx.Dtype = mx.float32) -> mx.array:
        """(batch, freq, time, channels) -> (batch, [speakers,] 2 * channels * freq), in `dtype`."""
        b, f, t, c = frames.shape
        # pyannote: (B, C, F, T) -> (B, C*F, T); here (B, T, C*F) in the same feature order
        return stats_pool(frames.transpose(0, 2, 3, 1).reshape(b, t, c * f), weights, dtype)


class ResNet(nn.Module):
    """wespeaker ResNet with BasicBlocks and TSTP pooling (pyannote's `resnet` sub-module)."""

    def __init__(self, config: WeSpeakerConfig):
        super().__init__()
        m = config.m_channels
        folded = config.folded_bn
        self.folded_bn = folded
        self.two_emb_layer = config.two_emb_layer
        self.conv1, self.bn1 = _conv_bn(1, m, 3, 1, folded)
        in_planes = m
        for i, (n, stride) in enumerate(zip(config.num_blocks, _STAGE_STRIDES), start=1):
            planes = m * 2 ** (i - 1)
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(BasicBlock(in_planes, planes, s, folded))
                in_planes = planes
            setattr(self, f"layer{i}", blocks)
        stats_dim = (config.feat_dim // 8) * m * 8
        self.pool = TSTP()
        self.seg_1 = nn.Linear(2 * stats_dim, config.embed_dim)
        if config.two_emb_layer:
            self.seg_bn_1 = BatchNorm(config.embed_dim, affine=False)
            self.seg_2 = nn.Linear(config.embed_dim, config.embed_dim)
        self.compute = compute_dtypes("embedding")

    def forward_frames(self, fbank: mx.array, capture: dict[str, mx.array] | None = None) -> mx.array:
        """(batch, frames, mel) fbank -> (batch, freq', time', channels) trunk output."""
        x = fbank.astype(self.compute["stem"])[..., None]  # (B, T, F, 1)
        x = x.transpose(0, 2, 1, 3)  # (B, F, T, 1): pyannote's (B, 1, F, T)
        x = self.conv1(x)
        if capture is not None and not self.folded_bn:
            capture["resnet.conv1"] = _torch_layout(x)
        x = self.bn1(x)
        if capture is not None:
            capture["resnet.bn1"] = _torch_layout(x)
        x = nn.relu(x)
        for i in range(1, 5):
            x = x.astype(self.compute[f"layer{i}"])
            for j, block in enumerate(getattr(self, f"layer{i}")):
                x = block(x)
                if capture is not None:
                    capture[f"resnet.layer{i}.{j}"] = _torch_layout(x)
            if capture is not None:
                capture[f"resnet.layer{i}"] = capture[f"resnet.layer{i}.{j}"]
        return x

    def forward_embedding(
        self,
        frames: mx.array,
        weights: mx.array | None = None,
        capture: dict[str, mx.array] | None = None,
    ) -> mx.array:
        """Trunk output (batch, freq', time', channels) -> (batch, [speakers,] embed_dim) float32."""
        stats = self.pool(frames, weights, self.compute["pool"])
        if capture is not None:
            capture["resnet.pool"] = stats
        embedding = self.seg_1(stats.astype(self.compute["embedding"]))
        if capture is not None:
            capture["resnet.seg_1"] = embedding
        if self.two_emb_layer:
            embedding = self.seg_bn_1(nn.relu(embedding))
            if capture is not None:
                capture["resnet.seg_bn_1"] = embedding
            embedding = self.seg_2(embedding)
            if capture is not None:
                capture["resnet.seg_2"] = embedding
        return embedding.astype(mx.float32)


_CONV_KEY = re.compile(r"(conv\d|shortcut\.0)\.weight$")
_BN_OF_CONV = (("conv1", "bn1"), ("conv2", "bn2"), ("shortcut.0", "shortcut.1"))


class WeSpeakerResNet34(nn.Module):
    """pyannote's WeSpeakerResNet34: (batch, samples) waveforms -> (batch, embed_dim) embeddings."""

    def __init__(self, config: WeSpeakerConfig | None = None):
        super().__init__()
        self.config = config or WeSpeakerConfig()
        self.resnet = ResNet(self.config)

    def set_compute_dtypes(self, compute: Mapping[str, mx.Dtype]) -> None:
        """Compute dtype per precision block (`mlx_diar.conversion.precision`); parameters must already be cast."""
        self.resnet.compute = compute

    @property
    def min_num_samples(self) -> int:
        """Shortest input that yields an embedding (what pyannote's ``min_num_samples`` search finds)."""
        c = self.config
        return window_properties(c.sample_rate, c.frame_length, c.frame_shift, c.round_to_power_of_two)[0]

    @property
    def time_stride(self) -> int:
        """Fbank frames per trunk output frame (the stride-2 stages of the ResNet)."""
        return 2 ** sum(1 for stride in _STAGE_STRIDES if stride == 2)

    def num_frames(self, num_samples: int) -> int:
        """Trunk output frames (time') for ``num_samples`` input samples."""
        c = self.config
        window_size, window_shift, _ = window_properties(c.sample_rate, c.frame_length, c.frame_shift, False)
        frames = num_frames(num_samples, window_size, window_shift, c.snip_edges)
        for stride in _STAGE_STRIDES:
            frames = (frames - 1) // stride + 1  # 3x3 conv, padding 1
        return frames

    def compute_fbank(self, waveforms: mx.array, centering_span: float | None = None) -> mx.array:
        """(batch, samples) -> centred fbank (batch, frames, num_mel_bins), float32.

        ``centering_span`` (seconds) overrides the configured centering with a running mean
        (used when the trunk runs once over a long block rather than per chunk).
        """
        if waveforms.ndim != 2:
            raise ValueError(f"expected mono waveforms (batch, samples), got shape {waveforms.shape}")
        options = self.config.fbank_options
        if centering_span is not None:
            options = {**options, "fbank_centering_span": centering_span}
        return compute_fbank(waveforms, **options)

    def forward_frames(self, waveforms: mx.array, capture: dict[str, mx.array] | None = None,
                       centering_span: float | None = None) -> mx.array:
        """Fbank + trunk, once per chunk: (batch, samples) -> (batch, freq', time', channels)."""
        fbank = self.compute_fbank(waveforms, centering_span).astype(self.resnet.compute["fbank"])
        if capture is not None:
            capture["fbank"] = fbank
        return self.resnet.forward_frames(fbank, capture)

    def forward_embedding(
        self,
        frames: mx.array,
        weights: mx.array | None = None,
        capture: dict[str, mx.array] | None = None,
    ) -> mx.array:
        """Pool + embedding layer(s) on `forward_frames` output; weights (batch, [speakers,] num_weights)."""
        embedding = self.resnet.forward_embedding(frames, weights, capture)
        if capture is not None:
            capture["embedding"] = embedding
        return embedding

    def __call__(
        self,
        waveforms: mx.array,
        weights: mx.array | None = None,
        capture: dict[str, mx.array] | None = None,
    ) -> mx.array:
        """(batch, samples) waveforms, optional per-frame weights -> (batch, [speakers,] embed_dim)."""
        return self.forward_embedding(self.forward_frames(waveforms, capture), weights, capture)

    @staticmethod
    def sanitize(state_dict: dict[str, np.ndarray], config: WeSpeakerConfig) -> dict[str, np.ndarray]:
        """pyannote state_dict -> MLX weights (Conv2d to (out, kh, kw, in); BN folded if config says so).

        Raises ValueError listing unknown keys, missing keys and shape mismatches.
        """
        unfolded = dataclasses.replace(config, folded_bn=False)
        expected = dict(tree_flatten(WeSpeakerResNet34(unfolded).parameters()))
        weights, unknown = {}, []
        for key, value in state_dict.items():
            if key.endswith("num_batches_tracked"):
                continue
            if key not in expected:
                unknown.append(key)
                continue
            value = np.asarray(value)
            weights[key] = value.transpose(0, 2, 3, 1) if _CONV_KEY.search(key) and value.ndim == 4 else value
        missing = sorted(set(expected) - set(weights))
        mismatched = [
            f"{k}: {weights[k].shape} != {tuple(expected[k].shape)}"
            for k in sorted(weights)
            if weights[k].shape != tuple(expected[k].shape)
        ]
        if unknown or missing or mismatched:
            raise ValueError(
                f"WeSpeaker weights do not match the model: unknown {sorted(unknown)}, "
                f"missing {missing}, shape mismatches {mismatched}"
            )
        return WeSpeakerResNet34.fold_batchnorm(weights) if config.folded_bn else weights

    @staticmethod
    def fold_batchnorm(weights: dict[str, np.ndarray], eps: float = BN_EPS) -> dict[str, np.ndarray]:
        """Fold every trunk BatchNorm into the conv before it (conv gains a bias), in float64.

        ``seg_bn_1`` (after a ReLU) is kept. Use with ``WeSpeakerConfig(folded_bn=True)``.
        """
        folded = dict(weights)
        for key in [k for k in weights if _CONV_KEY.search(k)]:
            conv = key[: -len(".weight")]
            bn = next(conv[: -len(c)] + b for c, b in _BN_OF_CONV if conv.endswith(c))
            w = weights[key]
            alpha = weights[f"{bn}.weight"].astype(np.float64) / np.sqrt(
                weights[f"{bn}.running_var"].astype(np.float64) + eps
            )
            beta = weights[f"{bn}.bias"].astype(np.float64) - weights[f"{bn}.running_mean"] * alpha
            folded[key] = (w.astype(np.float64) * alpha[:, None, None, None]).astype(w.dtype)
            folded[f"{conv}.bias"] = beta.astype(w.dtype)
            for name in ("weight", "bias", "running_mean", "running_var"):
                del folded[f"{bn}.{name}"]
        return folded
