"""`python -m harness gpu-check`: every variant's parity gates and the speed table of both kernel
routes, on a machine with an MLX GPU backend (`make gpu-check`).

    python -m harness gpu-check [--device gpu|cpu] [--audio FILE ...] [--dtype all] [--quantize 8]
                                [--out DIR] [--no-install]

For each kernel route (`mlx_diar.models.kernels.ROUTES`: "auto", what users get, and "mlx", the
MLX layers only) it runs `harness compare --check` on the demo files (the bundled sample and the
speakrs community-1 clips) with every variant computing natively (`--compute native`: reduced
blocks and quantized matmuls, what a GPU computes), then writes `gpu-check.md`: the machine, each
route's verdict and a speed table (variant x route: MLX seconds per stage, pyannote on this
machine's CPU, ratio). Each route's full report is in `DIR/<route>/`.

Where `--device gpu` finds no MLX GPU backend: on Linux with an NVIDIA driver it installs MLX's
CUDA build into this environment (`mlx[cuda12]` or `mlx[cuda13]` by driver version, replacing
`mlx-cpu`; `--no-install` refuses instead) and starts again; on macOS MLX's Metal backend comes
with `mlx` itself, so its absence is reported. `--device cpu` runs the same checks on the CPU: the
dry path that keeps this command tested where no GPU is.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlx_diar.errors import MlxDiarError
from mlx_diar.models.kernels import ROUTES

ROOT = Path(__file__).resolve().parents[1]
DEMO_CLIPS = (ROOT / "tests" / "data" / "speakrs" / "test.wav", ROOT / "tests" / "data" / "speakrs" / "test_short.wav")
STAGES = ("segmentation", "embeddings", "total")
CUDA13_DRIVER = 580  # MLX's CUDA 13 build needs an NVIDIA driver >= 580; below, its CUDA 12 build


class GpuCheckError(MlxDiarError):
    """No GPU backend and none can be installed: one line saying why."""


def cuda_install_command(driver: str, mlx_version: str, python: str = sys.executable) -> list[list[str]]:
    """The pip commands that replace `mlx-cpu` by MLX's CUDA build matching `driver` (nvidia-smi's
    driver version) and this MLX version."""
    major = int(driver.split(".")[0])
    extra = "cuda13" if major >= CUDA13_DRIVER else "cuda12"
    return [[python, "-m", "pip", "uninstall", "-y", "mlx-cpu"],
            [python, "-m", "pip", "install", f"mlx[{extra}]=={mlx_version}"]]


def nvidia_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports, None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"\d+\.\d+", proc.stdout)
    return match.group(0) if proc.returncode == 0 and match else None


def ensure_gpu_backend(install: bool) -> bool:
    """True when MLX has a GPU backend now; installs MLX's CUDA build first where it can (returns
    False: the caller starts again so that the new MLX loads); GpuCheckError otherwise."""
    import mlx.core as mx

    if mx.is_available(mx.gpu):
        return True
    if platform.system() == "Darwin":
        raise GpuCheckError("MLX has no Metal device here (Apple silicon and macOS >= 14 are needed)")
    driver = nvidia_driver()
    if driver is None:
        raise GpuCheckError("no MLX GPU backend and no NVIDIA driver (nvidia-smi) on this machine; "
                            "use --device cpu for the dry run")
    commands = cuda_install_command(driver, mx.__version__)
    if not install:
        raise GpuCheckError(f"MLX has no GPU backend here (NVIDIA driver {driver}); install it with: "
                            + " && ".join(" ".join(c) for c in commands))
    for command in commands:
        print("gpu-check:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return False


def speed_table(out: Path, routes: tuple[str, ...]) -> str:
    """Markdown: per file and variant, each route's MLX seconds per stage and ratio to pyannote."""
    import pandas as pd

    lines = ["| file | variant | kernels | " + " | ".join(f"{s} s" for s in STAGES) + " | pyannote total s | "
             "pyannote / MLX |", "|---|---|---|" + "---:|" * (len(STAGES) + 2)]
    for route in routes:
        timing = pd.read_csv(out / route / "timing.csv")
        pyannote = timing[timing["side"] == "pyannote"].set_index(["file", "stage"])["seconds"]
        mlx = timing[timing["side"] == "mlx"]
        for (file, variant), rows in mlx.groupby(["file", "variant"], sort=False):
            seconds = rows.set_index("stage")["seconds"]
            theirs = pyannote.get((file, "total"), float("nan"))
            cells = " | ".join(f"{seconds.get(s, float('nan')):.2f}" for s in STAGES)
            lines.append(f"| {file} | {variant} | {route} | {cells} | {theirs:.2f} | "
                         f"{theirs / seconds.get('total', float('nan')):.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from harness.compare import main as compare
    from harness.paths import sample_audio

    parser = argparse.ArgumentParser(prog="python -m harness gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--audio", nargs="+", type=Path, default=None,
                        help="files to check (default: the bundled sample and the speakrs clips)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "all"), default="all")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=8)
    parser.add_argument("--out", type=Path, default=Path("reports") / "gpu-check")
    parser.add_argument("--no-install", action="store_true", help="never install MLX's CUDA build")
    args = parser.parse_args(argv)
    try:
        if args.device == "gpu" and not ensure_gpu_backend(install=not args.no_install):
            os.execv(sys.executable, [sys.executable, "-m", "harness", "gpu-check", *(argv or sys.argv[1:])])
    except (GpuCheckError, subprocess.CalledProcessError) as e:
        print(f"error: gpu-check: {e}", file=sys.stderr)
        return 2
    import mlx.core as mx

    audio = args.audio or [sample_audio()[0], *DEMO_CLIPS]
    verdicts = {}
    for route in ROUTES:
        status = compare(["--device", args.device, "--kernels", route, "--compute", "native", "--check", "--quiet",
                          "--dtype", args.dtype, "--quantize", str(args.quantize), "--out", str(args.out / route),
                          "--audio", *map(str, audio)])
        if status not in (0, 1):  # compare said why in one line and wrote no report
            print(f"error: gpu-check: harness compare --kernels {route} stopped (exit {status})", file=sys.stderr)
            return status
        verdicts[route] = "PASS" if status == 0 else "FAIL"
    from harness.compare import machine_info
    from mlx_diar.fsutil import atomic_write

    machine = machine_info(args.device)
    with mx.stream(mx.gpu if args.device == "gpu" else mx.cpu):
        device = mx.device_info().get("device_name", str(mx.default_device()))
    text = "\n".join([
        f"# gpu-check: {args.device} ({device}), MLX {mx.__version__}", "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
        "| kernels | parity gates (every variant, native numerics) | report |", "|---|---|---|",
        *(f"| {route} | {verdicts[route]} | [{route}/summary.md]({route}/summary.md) |" for route in ROUTES), "",
        "pyannote runs on this machine's CPU (torch); MLX on the device above.", "",
        speed_table(args.out, ROUTES), ""])
    atomic_write(args.out / "gpu-check.md", text)
    print(text)
    return 0 if all(v == "PASS" for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
