"""Reference side: runs the original pyannote.audio on the same inputs and records every stage."""
