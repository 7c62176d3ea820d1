"""`python -m mlx_diar doctor` and the optimised BLAS on Linux."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest


def test_doctor_reports_blas_and_versions() -> None:
    out = subprocess.run([sys.executable, "-m", "mlx_diar", "doctor"], capture_output=True, text=True, check=True)
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert {"mlx", "blas", "matmul", "torch"} <= set(lines)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenBLAS preload is Linux-only "
                    "(macOS MLX uses Accelerate)")
@pytest.mark.skipif(not ctypes.util.find_library("openblas"), reason="optional system library OpenBLAS "
                    "(Debian: libopenblas0-pthread, installed by `make install`) is absent")
def test_mlx_uses_openblas_on_linux() -> None:
    code = "import mlx_diar; from mlx_diar.cpu.blas import active_blas; print(active_blas())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "openblas" in out.stdout.lower()
