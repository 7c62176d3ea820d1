"""`python -m harness gpu-check`: its CPU dry path end to end, and how it would install MLX's CUDA build."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from harness import gpu_check
from mlx_diar.runtime.audio import SAMPLE_RATE


def test_cpu_dry_path_runs_both_routes(sample, tmp_path: Path) -> None:
    """The GPU command on the CPU: parity gates of a variant on both kernel routes, natively computed,
    and the speed table of both routes."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, sample[0][: 11 * SAMPLE_RATE], SAMPLE_RATE)
    out = tmp_path / "check"
    status = gpu_check.main(["--device", "cpu", "--audio", str(clip), "--dtype", "float32", "--quantize", "8",
                             "--out", str(out)])
    report = (out / "gpu-check.md").read_text()
    assert status == 0, report
    for route in gpu_check.ROUTES:
        assert f"| {route} | PASS |" in report
        assert (out / route / "summary.md").is_file()
        assert f"| clip | float32 | {route} |" in report and f"| clip | float32-q8g64 | {route} |" in report
        assert "--compute native" in (out / route / "meta.json").read_text()


@pytest.mark.parametrize("driver, extra", [("550.54.14", "cuda12"), ("580.65.06", "cuda13")])
def test_cuda_build_follows_the_driver(driver: str, extra: str) -> None:
    uninstall, install = gpu_check.cuda_install_command(driver, "0.32.4", python="py")
    assert uninstall == ["py", "-m", "pip", "uninstall", "-y", "mlx-cpu"]
    assert install == ["py", "-m", "pip", "install", f"mlx[{extra}]==0.32.4"]


def test_no_gpu_and_no_driver_is_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_check, "nvidia_driver", lambda: None)
    monkeypatch.setattr(gpu_check.platform, "system", lambda: "Linux")
    assert gpu_check.main(["--device", "gpu", "--no-install"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: gpu-check: no MLX GPU backend") and "\n" not in err


def test_no_install_names_the_command(monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_check, "nvidia_driver", lambda: "580.65.06")
    monkeypatch.setattr(gpu_check.platform, "system", lambda: "Linux")
    assert gpu_check.main(["--device", "gpu", "--no-install"]) == 2
    assert "pip install mlx[cuda13]==" in capsys.readouterr().err


def test_a_bad_input_stops_with_one_line(tmp_path: Path, capsys) -> None:
    """compare's own error, then one line of gpu-check's: no traceback, no gpu-check.md."""
    out = tmp_path / "check"
    assert gpu_check.main(["--device", "cpu", "--audio", str(tmp_path / "missing.wav"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.wav" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: gpu-check: harness compare --kernels auto stopped (exit 2)"
    assert not (out / "gpu-check.md").exists()
