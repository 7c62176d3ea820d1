"""The conversion side: reading pyannote checkpoints (without torch) and pipeline directories (untrusted
input), converting them, the MLX model directory format (precision policy, quantization, IO), what
`from_pretrained` accepts and its conversion cache, and publishing a conversion on the Hugging Face Hub.

Nothing here runs a diarization; `mlx_diar.runtime` loads what this writes.
"""
