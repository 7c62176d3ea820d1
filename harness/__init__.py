"""Harness: compares mlx_diar against pyannote.audio and writes reports."""
