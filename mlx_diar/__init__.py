"""mlx-diar: pyannote speaker-diarization-community-1 in MLX."""

from mlx_diar._blas import preload_blas

preload_blas()  # before anything imports mlx

__version__ = "0.1.0"
