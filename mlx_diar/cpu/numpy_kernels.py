"""float32 NumPy kernels for the CPU, where they were measured faster than MLX's CPU backend.

Pure NumPy (no MLX import), so that a helper process running `pyannet_numpy.NumpyPyanNet` starts
in a fraction of a second. `kernels` wraps these for the MLX modules; `NumpyPyanNet` chains them.

- `bilstm`: one bidirectional LSTM layer (both directions' input projections one GEMM, one
  `tanh` over all four gates per step: sigmoid(x) = 0.5 tanh(x / 2) + 0.5).
- `conv1d`: a convolution without padding as one GEMM over strided frames (NumPy's bundled
  OpenBLAS reached 137-148 GFLOP/s on SincNet's skinny products, MLX's matmul 84-128).
- `instance_norm`, `max_pool`, `leaky_relu`: SincNet's other layers, in place where they can be
  (MLX's CPU `abs` ran at 0.28 G elements/s on SincNet's first activation, NumPy's at ~5).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

F32 = np.float32


def sigmoid_scale(gates: int) -> np.ndarray:
    """1/2 on the sigmoid gates (i, f, o), 1 on g: sigmoid(x) = 0.5 tanh(x / 2) + 0.5, scaling exact."""
    hidden = gates // 4
    return np.repeat(np.array([0.5, 0.5, 1.0, 0.5], F32), hidden)


class LstmCell:
    """The LSTM cell in float32 NumPy on preallocated buffers: `act` holds the step's pre-activation
    gates scaled by `sigmoid_scale`; calling it updates the cell state and writes h."""

    def __init__(self, shape: tuple[int, ...]):
        hidden = shape[-1]
        self.act = np.empty((*shape[:-1], 4 * hidden), F32)
        self.c = np.zeros(shape, F32)
        self.tmp = np.empty(shape, F32)
        self.sigmoids = self.act[..., : 2 * hidden], self.act[..., 3 * hidden:]
        self.i, self.f, self.g, self.o = (self.act[..., k * hidden:(k + 1) * hidden] for k in range(4))

    def __call__(self, h: np.ndarray) -> None:
        np.tanh(self.act, out=self.act)  # one tanh over all gates: sigmoid(x) = 0.5 tanh(x / 2) + 0.5
        for sig in self.sigmoids:
            sig *= 0.5
            sig += 0.5
        self.c *= self.f
        np.multiply(self.i, self.g, out=self.tmp)
        self.c += self.tmp
        np.tanh(self.c, out=self.tmp)
        np.multiply(self.o, self.tmp, out=h)


def lstm(xp: np.ndarray, wh_t: np.ndarray) -> np.ndarray:
    """D independent LSTMs from zero state, time-major: xp (T,D,B,4H) input projections (biases
    included), wh_t (D,H,4H) recurrent weights, gates in torch's order -> (T,D,B,H) hidden states."""
    scale = sigmoid_scale(xp.shape[-1])
    return recurrence(np.ascontiguousarray(xp * scale, F32), np.ascontiguousarray(wh_t * scale, F32))


def recurrence(xp: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """float32 recurrence with xp (T,D,B,4H) and wh (D,H,4H) already scaled by `sigmoid_scale`
    -> (T,D,B,H) hidden states from zero state."""
    num_steps, num_dirs, batch, gates = xp.shape
    hidden = gates // 4
    out = np.empty((num_steps, num_dirs, batch, hidden), F32)
    h = np.zeros((num_dirs, batch, hidden), F32)
    step = LstmCell(h.shape)
    for t in range(num_steps):
        np.matmul(h, wh, out=step.act)
        step.act += xp[t]
        h = out[t]
        step(h)
    return out


def bilstm(x: np.ndarray, wx: np.ndarray, wh: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """One bidirectional LSTM layer in float32 NumPy: time-major x (T,B,F), per direction
    (forward, backward) wx (2,4H,F), wh (2,4H,H), bias (2,4H) -> (T,B,2H) [forward, backward].

    Both directions' input projections are one GEMM over all steps, scaled for the one-tanh cell
    (by powers of two: exact); the backward direction reads the projections from the last step
    down and writes its hidden states in place, so nothing is reversed or concatenated."""
    num_steps, batch, _ = x.shape
    hidden = wh.shape[2]
    gates = 4 * hidden
    scale = sigmoid_scale(gates)[:, None]
    proj = x.reshape(num_steps * batch, -1) @ (wx * scale).reshape(2 * gates, -1).T
    proj += (bias * scale[:, 0]).reshape(-1)
    proj = proj.reshape(num_steps, batch, 2, gates)
    w = np.ascontiguousarray((wh * scale).transpose(0, 2, 1))  # (2,H,4H)
    out = np.empty((num_steps, batch, 2 * hidden), F32)
    h = np.zeros((2, batch, hidden), F32)
    step = LstmCell(h.shape)
    for t in range(num_steps):
        back = num_steps - 1 - t
        np.matmul(h, w, out=step.act)
        step.act[0] += proj[t, :, 0]
        step.act[1] += proj[back, :, 1]
        step(h)
        out[t, :, :hidden] = h[0]
        out[back, :, hidden:] = h[1]
    return out


def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1) -> np.ndarray:
    """Channels-last convolution without padding: x (B,T,C), weight (O,K,C) -> (B,L,O), one GEMM
    per batch item whose rows are its strided frames (each K contiguous runs of C values)."""
    out_channels, taps, in_channels = weight.shape
    x = np.array(x, F32, order="C")  # as_strided below assumes C order
    batch, steps, _ = x.shape
    length = (steps - taps) // stride + 1
    item = x.itemsize
    frames = as_strided(x, (batch, length, taps, in_channels),
                        (steps * in_channels * item, stride * in_channels * item, in_channels * item, item),
                        writeable=False)
    w = weight.reshape(out_channels, -1).T
    y = np.empty((batch, length, out_channels), F32)
    for b in range(batch):  # one item's frames at a time: SincNet's first are 16 MB per 10 s chunk
        np.matmul(np.ascontiguousarray(frames[b]).reshape(length, -1), w, out=y[b])
    if bias is not None:
        y += bias
    return y


def time_mean(x: np.ndarray, block: int = 64) -> np.ndarray:
    """Mean over axis 1 of (B,T,C) in two levels of sums (blocks of `block` steps, then within the
    block), as the MLX `InstanceNorm` does: ~1e-7 of a float64 mean, where one sequential float32
    sum over a 10 s waveform was up to 1.5e-4 off."""
    batch, num_steps, channels = x.shape
    pad = -num_steps % block
    if pad:
        x = np.concatenate([x, np.zeros((batch, pad, channels), F32)], axis=1)  # zeros keep the sum
    partial = x.reshape(batch, -1, block * channels).sum(axis=1)
    return partial.reshape(batch, block, channels).sum(axis=1, keepdims=True) / F32(num_steps)


def instance_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """torch.nn.InstanceNorm1d(affine=True) over time of (B,T,C), in place on float32 x; biased
    variance, eps inside the square root, applied as x * alpha + beta like torch's CPU kernel."""
    mean = time_mean(x)
    centred = x - mean
    np.square(centred, out=centred)
    alpha = (F32(1) / np.sqrt(time_mean(centred) + F32(eps))) * weight
    beta = bias - mean * alpha
    x *= alpha
    x += beta
    return x


def max_pool(x: np.ndarray, size: int) -> np.ndarray:
    """MaxPool1d(size, stride=size) over axis 1 of (B,T,C); a trailing partial window is dropped."""
    length = x.shape[1] // size
    out = x[:, 0:length * size:size].copy()
    for k in range(1, size):
        np.maximum(out, x[:, k:length * size:size], out=out)
    return out


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """In place: max(x, slope * x) (slope < 1)."""
    return np.maximum(x, x * F32(negative_slope), out=x)
