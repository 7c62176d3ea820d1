"""Sparse embedding mode's plan: which chunks the trunk computes, and which speakers fill the others."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_diar.sparse import SparsePlan, plan_sparse

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


def test_a_speaker_heard_in_neither_neighbour_gets_its_chunk_computed() -> None:
    timeline = np.zeros((120, 3), np.float32)
    timeline[:, 0] = 1
    timeline[50:55, 1] = 1  # in chunk 1 (frames 5-54) and chunk 2 (10-59), not in chunk 0 (0-49)
    segmentations, perms = chunked(timeline)
    plan = plan_sparse(segmentations, STEP, stride=2)
    local = int(np.flatnonzero(perms[1] == 1)[0])
    assert not plan.computed[1]
    assert plan.sources[1, local, 0] == -1 and plan.sources[1, local, 1] >= 0
    # a speaker the segmentation finds in chunk 1 alone (not in chunks 0 and 2 at the same frames)
    third = int(np.flatnonzero(perms[1] == 2)[0])
    segmentations[1, 20:26, third] = 1
    plan = plan_sparse(segmentations, STEP, stride=2)
    assert plan.computed[1] and (plan.sources[1] == -1).all()
    assert not plan.computed[3]


def test_chunks_that_share_no_frames_with_a_computed_chunk_are_computed() -> None:
    timeline = np.zeros((400, 3), np.float32)
    timeline[0:50, 0] = 1  # chunk 0 only
    timeline[300:400, 1] = 1  # chunks 50+ (starting at frame 250) hear it
    segmentations, _ = chunked(timeline)
    active = np.flatnonzero(segmentations.sum(axis=(1, 2)) > 0)
    plan = plan_sparse(segmentations, STEP, stride=2)
    # every active chunk is computed or has a source for each of its speakers
    speaking = segmentations.sum(axis=1) > 0
    for c in active:
        assert plan.computed[c] or all((plan.sources[c, k] >= 0).any() for k in np.flatnonzero(speaking[c]))
    # a stride larger than the overlap: chunks 51-56 (from frames 255-304) share no frame with their
    # computed neighbours 0 and 66 (330-379), so they are computed; chunk 57 (285-334) shares some
    plan = plan_sparse(segmentations, STEP, stride=25)
    assert plan.computed[51:57].all() and not plan.computed[57]
    for c in active:
        assert plan.computed[c] or all((plan.sources[c, k] >= 0).any() for k in np.flatnonzero(speaking[c]))


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
