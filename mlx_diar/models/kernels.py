"""Compute kernels shared by the MLX models, each in the formulation measured fastest per backend.

`lstm_recurrence`: the recurrent part of (Bi)LSTM layers, weights passed in (so quantized or
otherwise transformed input projections plug in before it). MLX's CPU backend evaluates
sigmoid/tanh element by element at ~0.03-0.09 G elements/s (a multiply: ~1.5-3.5 G/s), which
makes each LSTM step's gate nonlinearities ~80 % of its time; NumPy's vectorised tanh runs at
~1.4 G/s. So, on the CPU in float32, the recurrence runs in NumPy (one tanh over all four gates
per step, sigmoid(x) = 0.5 tanh(x / 2) + 0.5); on a GPU, or in half precision, in MLX (a
compiled step). ``RECURRENCE_BACKEND`` ("auto", "mlx", "numpy") overrides the choice, e.g. to
profile both (`python -m harness profile`).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

RECURRENCE_BACKEND = "auto"


def recurrence_backend(dtype: mx.Dtype) -> str:
    """"numpy" or "mlx": where `lstm_recurrence` runs for this dtype on the current default device."""
    if RECURRENCE_BACKEND != "auto":
        return RECURRENCE_BACKEND
    on_cpu = mx.default_device() == mx.cpu
    return "numpy" if on_cpu and dtype == mx.float32 else "mlx"


@mx.compile
def _lstm_step(xp: mx.array, h: mx.array, c: mx.array, wh_t: mx.array) -> tuple[mx.array, mx.array]:
    """One LSTM step for D stacked directions: xp (D,B,4H), h and c (D,B,H), wh_t (D,H,4H)."""
    i, f, g, o = mx.split(mx.addmm(xp, h, wh_t), 4, axis=-1)  # torch's gate order i, f, g, o
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    return mx.sigmoid(o) * mx.tanh(c), c


def _mlx_recurrence(xp: mx.array, wh_t: mx.array) -> mx.array:
    _, num_dirs, batch, gates = xp.shape
    h = mx.zeros((num_dirs, batch, gates // 4), dtype=xp.dtype)
    c = h
    hidden = []
    for t in range(xp.shape[0]):
        h, c = _lstm_step(xp[t], h, c, wh_t)
        hidden.append(h)
    return mx.stack(hidden)


def _sigmoid_scale(gates: int) -> mx.array:
    """1/2 on the sigmoid gates (i, f, o), 1 on g: sigmoid(x) = 0.5 tanh(x / 2) + 0.5, scaling exact."""
    hidden = gates // 4
    return mx.array(np.repeat(np.array([0.5, 0.5, 1.0, 0.5], np.float32), hidden))


def _numpy_recurrence(xp: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """float32 recurrence with xp and wh already scaled by `_sigmoid_scale`: one tanh per step over all gates."""
    num_steps, num_dirs, batch, gates = xp.shape
    hidden = gates // 4
    out = np.empty((num_steps, num_dirs, batch, hidden), np.float32)
    h = np.zeros((num_dirs, batch, hidden), np.float32)
    c = np.zeros_like(h)
    act = np.empty((num_dirs, batch, gates), np.float32)
    tmp = np.empty_like(h)
    i, f, g, o = (act[..., k * hidden:(k + 1) * hidden] for k in range(4))
    for t in range(num_steps):
        np.matmul(h, wh, out=act)
        act += xp[t]
        np.tanh(act, out=act)
        for sig in (act[..., : 2 * hidden], o):
            sig *= 0.5
            sig += 0.5
        c *= f
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        h = out[t]
        np.multiply(o, tmp, out=h)
    return out


def lstm_recurrence(xp: mx.array, wh_t: mx.array) -> mx.array:
    """Run D independent LSTMs from zero state, time-major: xp (T,D,B,4H) input projections
    (biases included) and wh_t (D,H,4H) recurrent weights, gates in torch's order (i, f, g, o)
    -> (T,D,B,H) hidden states."""
    if recurrence_backend(xp.dtype) == "mlx":
        return _mlx_recurrence(xp, wh_t)
    scale = _sigmoid_scale(xp.shape[-1])
    xp, wh = mx.contiguous(xp * scale), mx.contiguous(wh_t * scale)
    mx.eval(xp, wh)
    return mx.array(_numpy_recurrence(np.asarray(xp), np.asarray(wh)))
