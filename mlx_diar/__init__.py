"""mlx-diar: pyannote speaker-diarization-community-1 in MLX.

    from mlx_diar import SpeakerDiarizationPipeline, convert_pyannote_model, load_model
"""

import os
from typing import Any

# float32 means float32: MLX runs float32 matrix products and convolutions in TF32 where the
# hardware has it (NVIDIA Ampere and later, Apple M5) unless MLX_ENABLE_TF32=0, which cost
# float32 parity on an H200 (embedding rel L2 4.5e-4 vs pyannote; docs/performance.md). MLX
# reads it at its first matrix product; a user's own setting is kept (and reported by the harness).
os.environ.setdefault("MLX_ENABLE_TF32", "0")

from mlx_diar.cpu.blas import preload_blas
from mlx_diar.cpu.malloc import tune_malloc

preload_blas()  # before anything imports mlx
tune_malloc()  # large freed blocks stay in the heap for MLX to reuse (glibc)

from mlx_diar.conversion.trust import set_pyannote_telemetry  # noqa: E402

set_pyannote_telemetry()  # pyannote.audio's telemetry off unless MLX_DIAR_PYANNOTE_TELEMETRY=1

__version__ = "0.1.0"

_EXPORTS = {
    "SpeakerDiarizationPipeline": "mlx_diar.runtime.pipeline",
    "DiarizeOutput": "mlx_diar.runtime.pipeline",
    "convert_pyannote_model": "mlx_diar.conversion.convert",
    "load_model": "mlx_diar.conversion.model_io",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: `import mlx_diar` stays cheap and imports neither MLX nor torch."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlx_diar' has no attribute {name!r}")


__all__ = list(_EXPORTS)
