"""`harness compare` on a corpus: the per-recording comparison as an executor task, and synthetic corpora.

`CompareTask` runs on every worker (in-process, process pool or Ray actor, `mlx_diar.executor`):
it loads pyannote.audio and the converted MLX variants once, then compares one recording at a
time and returns its rows, its scores (pyannote.metrics components, for the corpus report of
`harness.corpus_report`) and its RTTMs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.synth import TEST_VOICES, make_conversation


def make_corpus(folder: str | Path, count: int = 12, seed: int = 0, min_seconds: float = 4.0,
                max_seconds: float = 8.0) -> list[Path]:
    """`count` synthetic conversations with their RTTMs in `folder` (`synth<k>.wav` + `synth<k>.rttm`; files
    already there are kept), deterministic: two test voices (one in three: three voices, ~11 s), at least
    `min_seconds`-`max_seconds` of speech."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        voices = [TEST_VOICES[int(i)] for i in rng.choice(len(TEST_VOICES), size=2 + int(k % 3 == 2),
                                                        replace=False)]
        duration = float(rng.uniform(min_seconds, max_seconds))
        out = folder / f"synth{k:03d}"
        if not (out.with_suffix(".wav").is_file() and out.with_suffix(".rttm").is_file()):
            make_conversation(voices, seed=seed * 1000 + k, duration=duration, out=out, uri=out.name)
        paths.append(out.with_suffix(".wav"))
    return paths
