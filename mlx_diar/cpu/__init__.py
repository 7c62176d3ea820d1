"""CPU accelerations: OpenBLAS for MLX's CPU backend, malloc tuning, NumPy kernels and the
segmentation lanes over several cores. None of it runs on a GPU; the MLX route never needs it.

Modules here import without MLX (a segmentation helper process loads only NumPy).
"""
