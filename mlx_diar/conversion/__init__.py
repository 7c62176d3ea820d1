"""The conversion side: reading pyannote checkpoints and pipeline directories (untrusted input),
converting them, and the MLX model directory format (precision policy, quantization, IO).

Nothing here runs a diarization; `mlx_diar.runtime` loads what this writes.
"""
