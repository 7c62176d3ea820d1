"""The runtime: audio in, the diarization pipeline and its stages, corpus runs out."""
