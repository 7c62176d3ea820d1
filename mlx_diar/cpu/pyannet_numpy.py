"""Mirrors pyannote.audio.models.segmentation.PyanNet.PyanNet: its float32 forward on the CPU in NumPy

`PyanNet` runs this forward where every block computes in float32 on the CPU (`PyanNet.numpy_forward`):
there MLX's CPU backend evaluated SincNet's element-wise layers and the LSTM's gates several times
slower than NumPy. It imports no MLX, so that a helper process (`mlx_diar.cpu.lanes`) can run it on
part of a recording's chunks while the main process runs the rest. Sub-module names and the
capture keys are `PyanNet`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlx_diar.cpu import numpy_kernels as nk

POOL = 3  # SincNet's MaxPool1d(3, stride=3) after each convolution
SLOPE = 0.01  # leaky ReLU after each SincNet stage and each linear layer


def _torch_layout(x: np.ndarray) -> np.ndarray:
    """(batch, time, channels) -> a (batch, channels, time) copy."""
    return x.transpose(0, 2, 1).copy()


@dataclass
class NumpyPyanNet:
    """PyanNet's float32 forward over (batch, samples) waveforms -> (batch, frames, classes).

    ``weights`` holds `PyanNet`'s parameters under their MLX paths (``sincnet.conv1d.0.weight``,
    ``lstm.0.forward.Wx``, ``linear.1.bias``, ...) as float32 NumPy arrays.
    """

    weights: dict[str, np.ndarray]
    sincnet_stride: int
    num_lstm_layers: int
    bidirectional: bool
    num_linear_layers: int
    log_softmax: bool  # mono-label (incl. powerset) problems; sigmoid otherwise

    def __call__(self, waveforms: np.ndarray, capture: dict[str, np.ndarray] | None = None,
                 sincnet_batch: int = 8) -> np.ndarray:
        """Scores of (batch, samples) or (batch, 1, samples) waveforms; ``capture`` receives every
        sub-module's output in torch layout, as `PyanNet.__call__`'s does. SincNet runs over
        ``sincnet_batch`` waveforms at a time (its first activation is ~17 MB per chunk)."""
        waveforms = np.asarray(waveforms, np.float32)
        if waveforms.ndim == 3:
            waveforms = waveforms[:, 0]
        step = waveforms.shape[0] if capture is not None else max(1, sincnet_batch)
        features = np.concatenate([self.sincnet(waveforms[s:s + step], capture)
                                   for s in range(0, waveforms.shape[0], step)])
        return self.head(features, capture)

    def sincnet(self, waveforms: np.ndarray, capture: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(batch, samples) -> (batch, frames, 60): `SincNet.__call__`, digital silence included."""
        w = self.weights
        constant = np.all(waveforms == waveforms[:, :1], axis=1)
        x = nk.instance_norm(waveforms[..., None].copy(), w["sincnet.wav_norm1d.weight"],
                             w["sincnet.wav_norm1d.bias"])
        if capture is not None:
            capture["sincnet.wav_norm1d"] = _torch_layout(x)
        for c in range(3):
            x = nk.conv1d(x, w[f"sincnet.conv1d.{c}.weight"], w.get(f"sincnet.conv1d.{c}.bias"),
                          self.sincnet_stride if c == 0 else 1)
            if capture is not None:
                capture[f"sincnet.conv1d.{c}"] = _torch_layout(x)
            if c == 0:
                np.abs(x, out=x)
            x = nk.max_pool(x, POOL)
            if capture is not None:
                capture[f"sincnet.pool1d.{c}"] = _torch_layout(x)
            x = nk.instance_norm(x, w[f"sincnet.norm1d.{c}.weight"], w[f"sincnet.norm1d.{c}.bias"])
            if capture is not None:
                capture[f"sincnet.norm1d.{c}"] = _torch_layout(x)
            nk.leaky_relu(x, SLOPE)
        if constant.any():
            x[constant] = nk.leaky_relu(w["sincnet.norm1d.2.bias"].copy(), SLOPE)
        if capture is not None:
            capture["sincnet"] = _torch_layout(x)
        return x

    def lstm_layer(self, k: int, x: np.ndarray) -> np.ndarray:
        """Time-major (T,B,F) -> (T,B,2H) (or (T,B,H) one-directional) through LSTM layer k."""
        w = self.weights
        directions = ("forward", "backward") if self.bidirectional else ("forward",)
        wx, wh, bias = (np.stack([w[f"lstm.{k}.{d}.{name}"] for d in directions]) for name in ("Wx", "Wh", "bias"))
        if self.bidirectional:
            return nk.bilstm(x, wx, wh, bias)
        return nk.lstm((x @ wx[0].T + bias[0])[:, None], wh.transpose(0, 2, 1))[:, 0]

    def head(self, features: np.ndarray, capture: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """SincNet features (batch, frames, 60) -> LSTM stack > linear > classifier > activation."""
        w = self.weights
        x = np.ascontiguousarray(features.transpose(1, 0, 2))  # time-major through the LSTM stack
        for k in range(self.num_lstm_layers):
            x = self.lstm_layer(k, x)
            if capture is not None:
                capture[f"lstm.{k}"] = x.transpose(1, 0, 2).copy()
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
        if capture is not None:
            capture["lstm"] = x.copy()
        for k in range(self.num_linear_layers):
            x = x @ w[f"linear.{k}.weight"].T + w[f"linear.{k}.bias"]
            if capture is not None:
                capture[f"linear.{k}"] = x.copy()
            nk.leaky_relu(x, SLOPE)
        x = x @ w["classifier.weight"].T + w["classifier.bias"]
        if capture is not None:
            capture["classifier"] = x.copy()
        if self.log_softmax:
            x = x - x.max(axis=-1, keepdims=True)
            x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
        else:
            with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88: 1 / inf is the right 0
                x = np.float32(1) / (np.float32(1) + np.exp(-x))
        if capture is not None:
            capture["activation"] = x.copy()
        return x
