"""mlx_diar.models.kernels: the kernel routes, the compiled recurrence, and convolution formulations
against MLX's own conv2d.

The LSTM recurrence on each route is checked against torch in tests/test_segmentation_parity.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.models import kernels


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def test_accelerations_only_on_the_auto_route_on_cpu_in_float32() -> None:
    with mx.stream(mx.cpu):
        assert kernels.current_route() == "auto"
        assert kernels.accelerated(mx.float32)
        assert not kernels.accelerated(mx.float16)
        with kernels.route("mlx"):
            assert kernels.current_route() == "mlx"
            assert not kernels.accelerated(mx.float32)
        assert kernels.accelerated(mx.float32)
    with pytest.raises(ValueError, match="kernels must be one of"):
        with kernels.route("numpy"):
            pass


def test_the_route_is_per_thread() -> None:
    import threading

    seen = []
    with kernels.route("mlx"):
        thread = threading.Thread(target=lambda: seen.append(kernels.current_route()))
        thread.start()
        thread.join()
    assert seen == ["auto"]


@pytest.mark.parametrize("steps", [589, 16, 5, 1])
def test_compiled_recurrence_equals_one_step_at_a_time(steps: int) -> None:
    """`STEPS_PER_CALL` steps per compiled call (the last call shorter) give the step-by-step result."""
    mx.random.seed(1)
    xp = mx.random.normal((steps, 2, 3, 32)) * 0.5
    wh = mx.random.normal((2, 8, 32)) * 0.3
    h = c = mx.zeros((2, 3, 8))
    expected = []
    for t in range(steps):
        h, c = kernels.lstm_step(xp[t], h, c, wh)
        expected.append(h)
    ours = kernels.step_recurrence(xp, kernels.lstm_step, wh)
    np.testing.assert_allclose(np.array(ours), np.array(mx.stack(expected)), rtol=0, atol=1e-6)


def test_constants_cross_once() -> None:
    calls = []

    def make(n: int) -> np.ndarray:
        calls.append(n)
        return np.arange(n, dtype=np.float32)

    a, b = kernels.constant(make, 4), kernels.constant(make, 4)
    assert a is b and calls == [4]


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



@pytest.mark.parametrize("setting, kept", [(None, "0"), ("1", "1")])
def test_importing_mlx_diar_turns_tf32_off_unless_told(setting: str | None, kept: str) -> None:
    """MLX computes float32 products in TF32 by default where the hardware has it; mlx_diar asks for
    float32 unless the user chose otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    if setting is not None:
        env["MLX_ENABLE_TF32"] = setting
    out = subprocess.run([sys.executable, "-c", "import os, mlx_diar; print(os.environ['MLX_ENABLE_TF32'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == kept


def test_float32_products_are_float32_on_the_cpu() -> None:
    assert kernels.tf32_products(mx.cpu) is False


@pytest.mark.parametrize("flag, choices", [("--kernels", "KERNELS"), ("--compute", "COMPUTE")])
def test_diarize_offers_the_pipelines_choices(flag: str, choices: str) -> None:
    """`diarize` spells its choices out (it imports no MLX to parse its arguments): they must stay the
    pipeline's own, in one line when refused."""
    import re

    from mlx_diar.runtime import pipeline

    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", "x.wav", flag, "bogus"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err
    offered = re.search(r"choose from (.*?)\)", err).group(1)
    assert set(re.findall(r"\w+", offered)) == set(getattr(pipeline, choices))
