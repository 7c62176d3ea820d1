"""Command line: ``python -m mlx_diar doctor``."""

from __future__ import annotations

import argparse
import platform
import sys
import time


def doctor() -> int:
    """Print the platform, MLX device and BLAS in use, with a 1024^3 matmul timing."""
    from mlx_diar._blas import active_blas

    import mlx.core as mx

    print(f"python    {sys.version.split()[0]} on {platform.system()} {platform.machine()}")
    print(f"mlx       {mx.__version__}; default device {mx.default_device()}")
    print(f"blas      {active_blas()}")
    a = mx.random.normal((1024, 1024), stream=mx.cpu)
    mx.eval(a)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        mx.eval(mx.matmul(a, a, stream=mx.cpu))
        best = min(best, time.perf_counter() - t)
    print(f"matmul    1024^3 float32 on cpu: {best * 1e3:.1f} ms")
    for mod in ("torch", "pyannote.audio"):
        try:
            version = __import__("importlib.metadata").metadata.version(mod.replace(".", "-"))
        except Exception:
            version = "not installed"
        print(f"{mod:<9} {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_diar")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report MLX device, BLAS in use and versions")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    return 2


if __name__ == "__main__":
    sys.exit(main())
