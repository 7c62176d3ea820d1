"""Compute kernels shared by the MLX models, and the switch between the two routes that run them.

Routes (`route`, `ROUTES`): "mlx" runs the MLX layers only, as they run on a GPU, on whatever
device is the default (the CPU included); "auto" (the default) adds, on the CPU in float32 only,
the accelerations measured faster there: PyanNet's NumPy forward (`mlx_diar.cpu`), the NumPy LSTM
recurrence and SincNet convolution, 3x3 convolutions as row GEMMs. On any other device or dtype
"auto" is "mlx". The route is a context variable: `with route("mlx"): ...` sets it for the
current thread (and the tasks it starts) only.

`conv2d`: on the accelerated route, 3x3 convolutions with 32-64 input channels as three GEMMs
over a 3x time-shift stack (`conv3x3_row_gemm`), others through MLX's conv2d. `conv1d`:
SincNet's convolutions, accelerated as one NumPy GEMM over strided frames.

`lstm_recurrence`: the recurrent part of (Bi)LSTM layers, weights passed in (so quantized or
otherwise transformed input projections plug in before it). MLX's CPU backend evaluates
sigmoid/tanh element by element at ~0.03-0.09 G elements/s (a multiply: ~1.5-3.5 G/s), which
makes each LSTM step's gate nonlinearities ~80 % of its time; NumPy's vectorised tanh runs at
~1.4 G/s. On the accelerated route the recurrence runs in NumPy (one tanh over all four gates
per step, sigmoid(x) = 0.5 tanh(x / 2) + 0.5): ~6x faster per step than the compiled MLX step,
each layer within 3e-7 of torch, and closer to float64 over a whole file (30 s sample, largest
log-probability error against pyannote run in float64: 2.3e-3 vs 3.1e-3 with the MLX step;
pyannote's own float32: 8.7e-4). A bidirectional layer there is `numpy_kernels.bilstm`: both
directions' input projections in one GEMM, no reversed or concatenated copies. On the MLX route
the recurrence runs `STEPS_PER_CALL` steps per call of one compiled function
(`compiled_steps`): one Python call and one fused graph per block of steps instead of per step.
"""

from __future__ import annotations

import contextlib
import contextvars
from functools import lru_cache
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_diar.cpu import numpy_kernels

ROUTES = ("auto", "mlx")
_ROUTE: contextvars.ContextVar[str] = contextvars.ContextVar("mlx_diar_kernels", default="auto")


@contextlib.contextmanager
def route(name: str) -> Iterator[None]:
    """Run the block on kernel route `name` ("auto" or "mlx"; see the module docstring)."""
    if name not in ROUTES:
        raise ValueError(f"kernels must be one of {ROUTES}, got {name!r}")
    token = _ROUTE.set(name)
    try:
        yield
    finally:
        _ROUTE.reset(token)


def current_route() -> str:
    """The kernel route in effect ("auto" unless a `route` block says otherwise)."""
    return _ROUTE.get()


def accelerated(dtype: mx.Dtype = mx.float32) -> bool:
    """Whether the CPU accelerations run for `dtype` here: the "auto" route, the CPU as default
    device, float32."""
    return _ROUTE.get() == "auto" and mx.default_device() == mx.cpu and dtype == mx.float32


@lru_cache(maxsize=64)
def constant(make: Callable[..., np.ndarray], *args: Any) -> mx.array:
    """`make(*args)`, a NumPy constant of a model (frame indices, a window, filter banks), as an MLX
    array made once per process: it crosses to the device once, not once per batch."""
    value = mx.array(make(*args))
    mx.eval(value)
    return value


@lru_cache(maxsize=4)
def tf32_products(device: mx.Device) -> bool:
    """Whether float32 matrix products on `device` round their inputs to TF32 (MLX's default on
    NVIDIA Ampere and later and on Apple M5 unless MLX_ENABLE_TF32=0): measured on one 64x64
    product of 1 + 2**-12, which TF32's 10-bit mantissa rounds to 1."""
    with mx.stream(device):
        product = mx.full((64, 64), 1 + 2**-12, dtype=mx.float32) @ mx.ones((64, 64), dtype=mx.float32)
        return bool(abs(np.array(product)[0, 0] - 64.0) < 2**-8)


def lstm_cell(gates: mx.array, c: mx.array) -> tuple[mx.array, mx.array]:
    """(h, c) from the pre-activation gates (..., 4H) in torch's order (i, f, g, o) and the cell state."""
    i, f, g, o = mx.split(gates, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    return mx.sigmoid(o) * mx.tanh(c), c


# Steps per call of the compiled MLX recurrence: each call is one traced graph of that many
# steps (traced once per shape). 2-core x86 CPU, 21 chunks, one bidirectional layer: one call per
# step 0.336 s, 8 steps 0.295 s, 16 steps 0.307 s, 64 steps 0.328 s (the CPU's time is in the
# gate nonlinearities either way); what it saves is Python dispatch: 589 calls per layer and
# 10 s chunk become 37 (docs/performance.md).
STEPS_PER_CALL = 16


@lru_cache(maxsize=None)
def compiled_steps(count: int, cell: Callable[..., tuple[mx.array, mx.array]]) -> Callable[..., tuple[mx.array, ...]]:
    """A compiled function running `count` LSTM steps: (xp (count,D,B,4H), h, c, *weights) ->
    (hidden (count,D,B,H), h, c), each step `cell(xp[k], h, c, *weights)` -> (h, c)."""
    def steps(xp: mx.array, h: mx.array, c: mx.array, *weights: mx.array) -> tuple[mx.array, ...]:
        hidden = []
        for k in range(count):
            h, c = cell(xp[k], h, c, *weights)
            hidden.append(h)
        return mx.stack(hidden), h, c

    return mx.compile(steps)


def lstm_step(xp: mx.array, h: mx.array, c: mx.array, wh_t: mx.array) -> tuple[mx.array, mx.array]:
    """One LSTM step for D stacked directions: xp (D,B,4H), h and c (D,B,H), wh_t (D,H,4H)."""
    return lstm_cell(mx.addmm(xp, h, wh_t), c)


def step_recurrence(xp: mx.array, step: Callable[..., tuple[mx.array, mx.array]], *weights: mx.array) -> mx.array:
    """Time-major xp (T,D,B,4H) -> (T,D,B,H), `step(xp[t], h, c, *weights)` -> (h, c) from zero
    state, `STEPS_PER_CALL` steps per compiled call (the last call runs the remainder)."""
    num_steps, num_dirs, batch, gates = xp.shape
    h = mx.zeros((num_dirs, batch, gates // 4), dtype=xp.dtype)
    c = h
    hidden = []
    for start in range(0, num_steps, STEPS_PER_CALL):
        count = min(STEPS_PER_CALL, num_steps - start)
        out, h, c = compiled_steps(count, step)(xp[start:start + count], h, c, *weights)
        hidden.append(out)
    return mx.concatenate(hidden)


def lstm_recurrence(xp: mx.array, wh_t: mx.array) -> mx.array:
    """Run D independent LSTMs from zero state, time-major: xp (T,D,B,4H) input projections
    (biases included) and wh_t (D,H,4H) recurrent weights, gates in torch's order (i, f, g, o)
    -> (T,D,B,H) hidden states."""
    if not accelerated(xp.dtype):
        return step_recurrence(xp, lstm_step, wh_t)
    return mx.array(numpy_kernels.lstm(np.array(xp), np.array(wh_t)))


def conv1d(layer: nn.Conv1d, x: mx.array) -> mx.array:
    """`layer` (MLX Conv1d, channels-last (B,T,C)) on x; on the accelerated route (and without
    padding, dilation or groups, as SincNet's convolutions) one NumPy GEMM over the strided frames.

    Measured on a 2-core x86 CPU, 8 x 10 s chunks, SincNet's first convolution (1 -> 80
    channels, 251 taps, stride 10): MLX conv1d 162 ms, the frames copied and one NumPy GEMM 58 ms
    (NumPy's BLAS reached 137-148 GFLOP/s on these skinny products, MLX's matmul 84-128).
    """
    if not (accelerated(x.dtype) and layer.weight.dtype == mx.float32
            and layer.padding == 0 and layer.dilation == 1 and layer.groups == 1):
        return layer(x)
    bias = np.array(layer.bias) if "bias" in layer else None
    return mx.array(numpy_kernels.conv1d(np.array(x), np.array(layer.weight), bias, layer.stride))


# Input channel counts for which `conv2d` uses the row-GEMM formulation: measured on a
# 2-core x86 CPU (OpenBLAS), stride 1, 8 x 10 s chunks, (freq, time, channels) = (80, 200, 32):
# MLX conv2d 273 ms vs row-GEMM 204 ms; (40, 100, 64): 171 vs 76 ms; (20, 50, 128): 56 vs 73 ms;
# (10, 25, 256): 43 vs 102 ms. MLX conv2d also holds a 9x im2col copy of its input (+1.3 GB for
# layer1 on 10 chunks, row-GEMM +0.6 GB).
ROW_GEMM_CHANNELS = range(32, 65)  # layer1 and layer2 of the ResNet34 (not its 1-channel conv1: unmeasured)


def conv3x3_row_gemm(x: mx.array, weight: mx.array) -> mx.array:
    """3x3, stride 1, padding 1 convolution, channels-last: x (B,F,T,C), weight (O,3,3,C) -> (B,F,T,O).

    The padded input is flattened over (batch, freq, time); its three time shifts are stacked
    along channels once (3x the input, instead of im2col's 9x), and each kernel row is one GEMM
    with K = 3C on a contiguous row offset of that stack, accumulated in place (addmm).
    """
    batch, freq, time, channels = x.shape
    width = time + 2
    rows = batch * (freq + 2) * width
    flat = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]).reshape(rows, channels)
    flat = mx.pad(flat, [(0, 2 * width + 2), (0, 0)])  # the last rows' shifts stay in bounds
    span = rows + 2 * width
    stacked = mx.concatenate([flat[dx:dx + span] for dx in range(3)], axis=1)  # (span, 3C): K = (dx, c)
    w_rows = weight.transpose(1, 2, 3, 0).reshape(3, 3 * channels, -1)  # (kernel row, (dx, c), O)
    out = stacked[:rows] @ w_rows[0]
    for dy in (1, 2):
        out = mx.addmm(out, stacked[dy * width:dy * width + rows], w_rows[dy])
    return out.reshape(batch, freq + 2, width, -1)[:, :freq, :time]


def conv2d(layer, x: mx.array) -> mx.array:
    """An mlx.nn.Conv2d layer applied to x (B,F,T,C): on the accelerated route in the formulation
    measured fastest for its shape, MLX's conv2d otherwise."""
    weight = layer.weight
    out_ch, kh, kw, in_ch = weight.shape
    plain = layer.stride == (1, 1) and layer.padding == (1, 1) and getattr(layer, "groups", 1) == 1 \
        and layer.dilation in (1, (1, 1))
    if (kh, kw) == (3, 3) and plain and in_ch in ROW_GEMM_CHANNELS and accelerated(x.dtype):
        y = conv3x3_row_gemm(x, weight)
        return y + layer.bias if "bias" in layer else y
    return layer(x)
