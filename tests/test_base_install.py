"""`pip install mlx-diar` without extras converts and diarizes: a fresh virtual environment with the base
dependencies only (no torch, no pyannote.audio), the offline fixture pipeline and the bundled sample,
against this (full) install's results byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "mlx_diar", "harness", "reference")


def _run(argv: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not this tree
    proc = subprocess.run(argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def base_python(tmp_path_factory) -> Path:
    """A fresh venv with `pip install <this tree>` and nothing else (pip's own configuration: index, cache)."""
    work = tmp_path_factory.mktemp("base-install")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(
            ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    base = getattr(sys, "_base_executable", sys.executable)
    start = time.perf_counter()
    _run([base, "-m", "venv", str(work / "venv")], work, 300)
    python = work / "venv/bin/python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)], work, 1200)
    freeze = _run([str(python), "-m", "pip", "freeze", "--all"], work, 120).stdout
    print(f"\nbase install: {time.perf_counter() - start:.0f} s; installed:\n{freeze}")
    return python


@pytest.mark.install
def test_base_install_converts_and_diarizes_like_the_full_install(base_python: Path, fixture_root: Path,
                                                                  mlx_model_dir: Path, tmp_path: Path) -> None:
    from harness.paths import sample_audio

    check = ("import importlib.util, sys, mlx_diar, mlx_diar.conversion.convert, mlx_diar.runtime.pipeline;"
             "print([m for m in ('torch', 'pyannote.audio', 'lightning') if importlib.util.find_spec(m)"
             " or m in sys.modules])")
    assert _run([str(base_python), "-c", check], tmp_path, 300).stdout.strip() == "[]"
    # the converter, explicitly: the same weights as this install's conversion
    _run([str(base_python), "-m", "mlx_diar.convert", "--pytorch-path", str(fixture_root), "--mlx-path",
          str(tmp_path / "converted")], tmp_path, 600)
    for name in ("model.safetensors", "plda.safetensors"):
        assert (tmp_path / "converted" / name).read_bytes() == (mlx_model_dir / name).read_bytes(), name
    # diarize straight from the pyannote pipeline directory (converted on first use, cached), against this install
    wav = sample_audio()[0]
    _run([str(base_python), "-m", "mlx_diar", "diarize", str(wav), "--model", str(fixture_root), "--rttm",
          str(tmp_path / "base.rttm")], tmp_path, 900, HF_HUB_CACHE=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert len(list((tmp_path / "hf/mlx-diar/converted").iterdir())) == 1
    _run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(mlx_model_dir), "--rttm",
          str(tmp_path / "full.rttm")], tmp_path, 900, PYTHONPATH=str(ROOT))
    base, full = (tmp_path / "base.rttm").read_bytes(), (tmp_path / "full.rttm").read_bytes()
    print(f"RTTM: base {len(base)} bytes, full {len(full)} bytes, byte-equal {base == full}\n{base.decode()}")
    assert base == full and base.count(b"SPEAKER") >= 2
