"""mlx-diar: pyannote speaker-diarization-community-1 in MLX.

    from mlx_diar import SpeakerDiarizationPipeline, convert_pyannote_model, load_model
"""

from typing import Any

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
