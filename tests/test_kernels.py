"""The compute kernels of mlx_diar.models.kernels against torch, on every backend they can run on."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from harness import targets
from mlx_diar.models import kernels
from mlx_diar.models.pyannet import BiLSTMLayer


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(params=["numpy", "mlx"])
def backend(request, monkeypatch) -> str:
    monkeypatch.setattr(kernels, "RECURRENCE_BACKEND", request.param)
    return request.param


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_recurrence_matches_torch(backend: str, bidirectional: bool) -> None:
    """A (bi)LSTM layer at pyannote's sizes (60 -> 128) against torch.nn.LSTM, per backend."""
    torch.manual_seed(1)
    reference = torch.nn.LSTM(60, 128, bidirectional=bidirectional, batch_first=True)
    params = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    layer = BiLSTMLayer(60, 128, bidirectional=bidirectional)
    for direction, suffix in (("forward", ""), ("backward", "_reverse"))[: 1 + bidirectional]:
        layer[direction].update({
            "Wx": mx.array(params[f"weight_ih_l0{suffix}"]),
            "Wh": mx.array(params[f"weight_hh_l0{suffix}"]),
            "bias": mx.array(params[f"bias_ih_l0{suffix}"] + params[f"bias_hh_l0{suffix}"]),
        })
    x = torch.randn(3, 200, 60) * 3  # large inputs: saturated gates
    with torch.inference_mode():
        expected = reference(x)[0].numpy()
    ours = np.array(layer(mx.array(x.numpy())))
    print(f"\n[{backend}] max abs {np.abs(ours - expected).max():.2e}, rel L2 {rel_l2(ours, expected):.2e}")
    assert rel_l2(ours, expected) <= targets.LAYER_REL_L2_F32
    assert np.abs(ours - expected).max() <= targets.SEGMENTATION_MAX_ABS_ERR_F32


def test_auto_backend_is_numpy_only_for_float32_on_cpu(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "RECURRENCE_BACKEND", "auto")
    with mx.stream(mx.cpu):
        assert kernels.recurrence_backend(mx.float32) == "numpy"
        assert kernels.recurrence_backend(mx.float16) == "mlx"


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
