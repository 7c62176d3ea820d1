"""Sparse embedding mode's plan: which chunks the trunk computes, and which speakers fill the others."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_diar.runtime.sparse import SparsePlan, disagreement, plan_sparse, training_halves

STEP = 5  # frames per chunk step
FRAMES = 10 * STEP  # frames per chunk: ten steps, as 10 s chunks at a 1 s step


def chunked(timeline: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of a global (frames, speakers) activity timeline, each chunk's local speakers in a
    random order (as a segmentation model orders them); returns (chunks, permutations)."""
    rng = np.random.default_rng(seed)
    num_chunks = (timeline.shape[0] - FRAMES) // STEP + 1
    perms = np.array([rng.permutation(timeline.shape[1]) for _ in range(num_chunks)])
    chunks = np.stack([timeline[c * STEP:c * STEP + FRAMES][:, perms[c]] for c in range(num_chunks)])
    return chunks.astype(np.float32), perms


def conversation(num_frames: int = 400, seed: int = 1) -> np.ndarray:
    """Three speakers taking turns of 8-30 frames, with some silences."""
    rng = np.random.default_rng(seed)
    timeline = np.zeros((num_frames, 3), np.float32)
    t = 0
    while t < num_frames:
        length = int(rng.integers(8, 30))
        who = int(rng.integers(-1, 3))
        if who >= 0:
            timeline[t:t + length, who] = 1
        t += length
    return timeline


def test_every_other_active_chunk_is_computed_and_the_rest_match_the_same_speakers() -> None:
    timeline = conversation()
    segmentations, perms = chunked(timeline)
    plan = plan_sparse(segmentations, STEP, stride=2)
    active = np.flatnonzero(segmentations.sum(axis=(1, 2)) > 0)
    assert plan.computed[active[::2]].all() and plan.computed[active[-1]]
    assert not plan.computed[segmentations.sum(axis=(1, 2)) == 0].any()
    speaking = segmentations.sum(axis=1) > 0
    filled = 0
    for c in np.flatnonzero(~plan.computed):
        for k in np.flatnonzero(speaking[c]):
            sources = plan.sources[c, k][plan.sources[c, k] >= 0]
            assert len(sources) >= 1
            for source in sources:
                d, j = divmod(int(source), 3)
                assert plan.computed[d]
                assert perms[d][j] == perms[c][k]  # the same speaker of the timeline
            filled += 1
        assert (plan.sources[c][~speaking[c]] == -1).all()
    assert filled > 10
    assert (plan.sources[plan.computed] == -1).all()


def test_a_speaker_a_neighbour_does_not_match_gets_its_chunk_computed() -> None:
    timeline = np.zeros((120, 3), np.float32)
    timeline[:, 0] = 1
    segmentations, perms = chunked(timeline)
    assert not plan_sparse(segmentations, STEP, stride=2).computed[1]
    # speaker 1 in chunk 1 (frames 5-54) and chunk 2 (10-59), not in chunk 0 (0-49)
    timeline[50:55, 1] = 1
    segmentations, perms = chunked(timeline)
    plan = plan_sparse(segmentations, STEP, stride=2)
    assert plan.computed[1] and (plan.sources[1] == -1).all()
    assert not plan.computed[3] and (plan.sources[3][segmentations[3].sum(axis=0) > 0] >= 0).all()
    # the segmentation of chunk 3 swaps its two voices half-way: neither neighbour matches both
    segmentations, perms = chunked(np.stack([timeline[:, 0], timeline[:, 0], timeline[:, 2]], axis=1))
    segmentations[3, :, perms[3][1]] = 0
    segmentations[3, :25, perms[3][0]] = 1
    segmentations[3, 25:, perms[3][0]] = 0
    segmentations[3, 25:, perms[3][1]] = 1
    plan = plan_sparse(segmentations, STEP, stride=2)
    assert plan.computed[3] and not plan.computed[5]


def test_a_speaker_heard_briefly_gets_its_chunk_computed() -> None:
    timeline = np.zeros((120, 3), np.float32)
    timeline[:, 0] = 1
    timeline[20:24, 1] = 1  # four frames, in chunks 0-4
    segmentations, _ = chunked(timeline)
    assert not plan_sparse(segmentations, STEP, stride=2).computed[1]
    plan = plan_sparse(segmentations, STEP, stride=2, min_frames=5)
    assert plan.computed[[1, 3]].all() and (plan.sources[[1, 3]] == -1).all()
    assert not plan.computed[5]  # speaker 1 is not in chunk 5 (frames 25-74)


def test_chunks_that_share_no_frames_with_a_computed_chunk_are_computed() -> None:
    timeline = np.zeros((400, 3), np.float32)
    timeline[0:50, 0] = 1  # chunk 0 only
    timeline[300:400, 1] = 1  # chunks 50+ (starting at frame 250) hear it
    segmentations, _ = chunked(timeline)
    active = np.flatnonzero(segmentations.sum(axis=(1, 2)) > 0)
    plan = plan_sparse(segmentations, STEP, stride=2)
    # every active chunk is computed or has both sources for each of its speakers
    speaking = segmentations.sum(axis=1) > 0
    for c in active:
        assert plan.computed[c] or all((plan.sources[c, k] >= 0).all() for k in np.flatnonzero(speaking[c]))
    # a stride larger than the overlap: the active chunks are 0-9 and 51-70, those computed 0, 66
    # and 70; chunks 1-9 (up to frame 94) share no frame with 66 (from frame 330), nor 51-65 with
    # chunk 0 (frames 0-49), so they are computed; 67-69 share frames with 66 and 70
    plan = plan_sparse(segmentations, STEP, stride=25)
    assert plan.computed[1:10].all() and plan.computed[51:66].all() and not plan.computed[67:70].any()
    for c in active:
        assert plan.computed[c] or all((plan.sources[c, k] >= 0).all() for k in np.flatnonzero(speaking[c]))


def test_stride_one_computes_every_active_chunk_and_nan_frames_count_as_silent() -> None:
    segmentations, _ = chunked(conversation())
    plan = plan_sparse(segmentations, STEP, stride=1)
    assert np.array_equal(plan.computed, segmentations.sum(axis=(1, 2)) > 0)
    assert (plan.sources == -1).all()
    with_nan = segmentations.copy()
    with_nan[3] = np.nan
    assert not plan_sparse(with_nan, STEP, stride=1).computed[3]
    with pytest.raises(ValueError, match="stride"):
        plan_sparse(segmentations, STEP, stride=0)


def test_fill_writes_the_mean_direction_at_the_mean_norm() -> None:
    embeddings = np.zeros((3, 2, 4), np.float32)
    embeddings[0, 1] = [2, 0, 0, 0]
    embeddings[2, 0] = [0, 4, 0, 0]
    sources = np.full((3, 2, 2), -1)
    sources[1, 0] = [0 * 2 + 1, 2 * 2 + 0]  # both neighbours
    sources[1, 1] = [-1, 2 * 2 + 0]  # the next one only
    before = embeddings.copy()
    SparsePlan(computed=np.array([True, False, True]), sources=sources).fill(embeddings)
    np.testing.assert_allclose(embeddings[1, 0], 3 * np.array([1, 1, 0, 0]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(embeddings[1, 1], [0, 4, 0, 0])
    np.testing.assert_array_equal(embeddings[[0, 2]], before[[0, 2]])


def test_a_short_recording_keeps_the_pairs_that_train_the_clustering() -> None:
    """When the computed chunks would hold fewer than two of the pairs that train the clustering
    (a speaker alone in >= 20 % of a chunk's frames), every active chunk is computed."""
    segmentations = np.zeros((3, FRAMES, 3), np.float32)
    # the same 21 frames (seconds 10-30 of the recording) in each chunk: chunks 0 and 2 hear two
    # voices at once there, chunk 1 hears speaker 0 alone, the only pair that can train
    segmentations[0, 10:31, :2] = 1
    segmentations[1, 5:26, 0] = 1
    segmentations[2, 0:21, :2] = 1
    plan = plan_sparse(segmentations, STEP, stride=2)
    assert plan.computed.tolist() == [True, True, True] and (plan.sources == -1).all()
    segmentations[1, 5:26, 1] = 1  # now nobody is alone anywhere: nothing to keep, sparse as usual
    plan = plan_sparse(segmentations, STEP, stride=2)
    assert plan.computed.tolist() == [True, False, True] and (plan.sources[1, :2] >= 0).any(axis=1).all()


def test_training_halves_alternate_over_the_computed_chunks() -> None:
    computed = np.array([True, False, True, True, False, True, True])
    first, second = training_halves(SparsePlan(computed=computed, sources=np.full((7, 3, 2), -1)))
    assert np.flatnonzero(first).tolist() == [0, 3, 6] and np.flatnonzero(second).tolist() == [2, 5]


def test_disagreement_is_the_frame_error_under_the_best_cluster_mapping() -> None:
    reference = np.zeros((10, 2))
    reference[:6, 0] = 1
    reference[4:, 1] = 1  # 12 speaker-frames
    assert disagreement(reference, reference[:, ::-1]) == 0.0  # the same diarization, renamed
    other = np.zeros((10, 3))
    other[:6, 2] = 1
    other[4:8, 0] = 1  # speaker 1 missed on frames 8-9
    other[9, 1] = 1  # frame 9 given to a third speaker instead: confused, still one error
    assert disagreement(reference, other) == pytest.approx(2 / 12)
    other[0, 0] = 1  # a false alarm where only one speaker talks
    assert disagreement(reference, other) == pytest.approx(3 / 12)
    assert disagreement(np.zeros((4, 2)), np.zeros((4, 1))) == 0.0
    assert disagreement(np.zeros((4, 2)), np.ones((4, 1))) == 1.0
