"""External real-weight check: the real community-1 pipeline's intermediate results (speakrs fixture).

From the fixture's segmentation and real clustering output, the MLX pipeline's stages must
reproduce its speaker counting, discrete diarization and final RTTM exactly. (AHC, VBx and
hard clusters from its real embeddings/PLDA features are checked in test_clustering.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import SlidingWindow, SlidingWindowFeature

from harness.metrics import load_rttm, score, uem_for

DATA = Path(__file__).parent / "data" / "speakrs"


def _swf(name: str) -> SlidingWindowFeature:
    window = json.loads((DATA / f"{name}_window.json").read_text())
    return SlidingWindowFeature(np.load(DATA / f"{name}_data.npy"), SlidingWindow(**window))


@pytest.mark.parametrize("clip", ["pipeline", "short"])
def test_speaker_counting_matches_real_pipeline(mlx_pipeline, clip: str) -> None:
    segmentation = _swf(f"{clip}_segmentation")
    expected = _swf(f"{clip}_speaker_counting")
    count = mlx_pipeline.speaker_count(mlx_pipeline.binarize_segmentations(segmentation))
    assert _window(count.sliding_window) == _window(expected.sliding_window)
    np.testing.assert_array_equal(count.data, expected.data)


def _window(sw: SlidingWindow) -> tuple[float, float, float]:
    return sw.start, sw.duration, sw.step


def _final_clusters(segmentation: SlidingWindowFeature, hard: np.ndarray) -> np.ndarray:
    hard = hard.copy()
    hard[np.sum(segmentation.data, axis=1) == 0] = -2  # what apply() does after clustering
    return hard


def test_discrete_diarization_and_rttm_match_real_pipeline(mlx_pipeline) -> None:
    from mlx_diar.runtime.signal import to_annotation

    segmentation = _swf("pipeline_segmentation")
    hard = _final_clusters(segmentation, np.load(DATA / "pipeline_hard_clusters.npy"))
    count = mlx_pipeline.speaker_count(segmentation)
    discrete = mlx_pipeline.reconstruct(segmentation, hard, count)
    expected = _swf("pipeline_discrete_diarization")
    assert _window(discrete.sliding_window) == _window(expected.sliding_window)
    np.testing.assert_array_equal(discrete.data, expected.data)

    annotation = to_annotation(discrete, min_duration_off=0.0)
    annotation = annotation.rename_labels({k: f"SPEAKER_{i:02d}" for i, k in enumerate(annotation.labels())})
    reference = load_rttm(DATA / "pipeline_expected.rttm")["pipeline"]
    duration = segmentation.sliding_window[len(segmentation) - 1].end
    assert score(reference, annotation, uem_for(duration))["der"] == 0.0
    ours = sorted((round(s.start, 3), round(s.end, 3), label) for s, _, label in annotation.itertracks(yield_label=True))
    theirs = sorted((round(s.start, 3), round(s.end, 3), label) for s, _, label in reference.itertracks(yield_label=True))
    assert ours == theirs


def test_short_clip_discrete_diarization(mlx_pipeline) -> None:
    segmentation = _swf("short_segmentation")
    active = np.flatnonzero(segmentation.data.sum(axis=1)[0])
    assert len(active) >= 1
    # one chunk: clustering puts every active local speaker's embedding in its own or a shared
    # cluster; the fixture's final diarization has a single speaker, so they share cluster 0
    hard = np.full((1, segmentation.data.shape[2]), -2, dtype=np.int8)
    hard[0, active] = 0
    count = mlx_pipeline.speaker_count(segmentation)
    discrete = mlx_pipeline.reconstruct(segmentation, hard, count)
    np.testing.assert_array_equal(discrete.data, _swf("short_discrete_diarization").data)
