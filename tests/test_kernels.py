"""mlx_diar.models.kernels: backend choice and convolution formulations against MLX's own conv2d.

The LSTM recurrence on each backend is checked against torch in tests/test_segmentation_parity.py.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.models import kernels


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def test_numpy_recurrence_only_for_float32_on_cpu(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "RECURRENCE_BACKEND", "numpy")
    with mx.stream(mx.cpu):
        assert kernels.recurrence_backend(mx.float32) == "numpy"
        assert kernels.recurrence_backend(mx.float16) == "mlx"
    monkeypatch.setattr(kernels, "RECURRENCE_BACKEND", "mlx")
    with mx.stream(mx.cpu):
        assert kernels.recurrence_backend(mx.float32) == "mlx"


@pytest.mark.parametrize("channels", [32, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_row_gemm_matches_mlx_conv2d(channels: int, bias: bool) -> None:
    import mlx.nn as nn

    mx.random.seed(0)
    layer = nn.Conv2d(channels, 48, 3, padding=1, bias=bias)
    x = mx.random.normal((2, 9, 13, channels))
    expected = np.array(layer(x))
    ours = np.array(kernels.conv2d(layer, x))
    assert ours.shape == expected.shape
    assert rel_l2(ours, expected) <= 1e-6


@pytest.mark.parametrize(
    "in_channels, out_channels, taps, stride, padding, bias",
    [(1, 80, 251, 10, 0, False), (80, 60, 5, 1, 0, True), (60, 60, 5, 1, 0, True), (3, 4, 3, 2, 1, True)],
)
@pytest.mark.parametrize("dtype", [mx.float32, mx.float16])
def test_conv1d_matches_mlx_conv1d(
    in_channels: int, out_channels: int, taps: int, stride: int, padding: int, bias: bool, dtype: mx.Dtype
) -> None:
    """SincNet's shapes (NumPy GEMM on the CPU in float32), a padded one and float16 (MLX's conv1d)."""
    import mlx.nn as nn

    mx.random.seed(1)
    layer = nn.Conv1d(in_channels, out_channels, taps, stride=stride, padding=padding, bias=bias)
    layer.set_dtype(dtype)
    x = mx.random.normal((2, 700, in_channels)).astype(dtype)
    expected = np.array(layer(x).astype(mx.float32))
    ours = np.array(kernels.conv1d(layer, x).astype(mx.float32))
    assert ours.shape == expected.shape
    assert rel_l2(ours, expected) <= (1e-6 if dtype == mx.float32 else 0)


def test_conv1d_on_a_transposed_input() -> None:
    """A non-contiguous MLX array (channels-first data transposed) gives MLX's conv1d result:
    the NumPy GEMM's strided frames need a C-order copy."""
    import mlx.nn as nn

    mx.random.seed(2)
    layer = nn.Conv1d(60, 60, 5)
    x = mx.random.normal((2, 60, 700)).transpose(0, 2, 1)
    expected = np.array(layer(x))
    assert rel_l2(np.array(kernels.conv1d(layer, x)), expected) <= 1e-6
