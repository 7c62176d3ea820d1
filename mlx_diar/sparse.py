"""The "sparse" embedding mode (opt-in, fast, not exact): the trunk runs on every other active chunk.

Not in pyannote. Consecutive 10 s chunks overlap by 90 %, so a local speaker of a chunk is,
almost always, also a local speaker of the chunks just before and after it. In sparse mode the
trunk computes the exact (pyannote's) embeddings of every `stride`-th active chunk; every other
active chunk's speaker gets the mean direction of the speakers it is matched with in the nearest
computed chunk before and after it: one-to-one, by the frames both chunks' binarized
segmentations hear them in, and only where the match holds most of the speaker's shared frames.
A chunk with a speaker heard in neither neighbour is computed exactly too. Only computed embeddings train the clustering (`BaseClustering.trace(...,
train_chunks=...)`); every chunk is then assigned to its centroids as pyannote assigns them.
Chunks with a filled speaker that this assignment cannot tell apart from a second cluster
(`uncertain_chunks`) are then computed exactly too and assigned again to the same centroids.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from mlx_diar.clustering.assignment import alone_enough

STRIDE = 2  # every STRIDE-th active chunk through the trunk (see docs/performance.md)
# a filled (chunk, speaker) whose two best clusters score closer than this (cosine similarity with
# the default metric) is recomputed exactly: where a neighbour's embedding could pick another cluster
MARGIN = 0.1


@dataclasses.dataclass(frozen=True)
class SparsePlan:
    """Which chunks the trunk computes, and where every other active (chunk, speaker) comes from.

    computed: boolean (chunks,); sources: int (chunks, speakers, 2), the flat index
    ``chunk * speakers + speaker`` of the matched speaker in the computed chunk before and after
    it, -1 where there is none (and everywhere in computed or silent chunks).
    """

    computed: np.ndarray
    sources: np.ndarray

    def fill(self, embeddings: np.ndarray) -> None:
        """Write the matched speakers' mean direction, at their mean norm, into every
        (chunk, speaker) that has a source; `embeddings` (chunks, speakers, dim) must already hold
        the computed chunks' embeddings."""
        found = self.sources >= 0
        targets = found.any(axis=2)
        if not targets.any():
            return
        flat = embeddings.reshape(-1, embeddings.shape[2]).astype(np.float64)
        picks = self.sources[targets]  # (n, 2)
        used = found[targets]
        vectors = flat[np.maximum(picks, 0)]  # (n, 2, dim)
        norms = np.linalg.norm(vectors, axis=2)
        unit = vectors / np.maximum(norms, np.finfo(np.float64).tiny)[..., None]
        count = used.sum(axis=1)
        direction = np.sum(unit * used[..., None], axis=1)
        direction /= np.maximum(np.linalg.norm(direction, axis=1), np.finfo(np.float64).tiny)[:, None]
        scale = np.sum(norms * used, axis=1) / count
        embeddings[targets] = (direction * scale[:, None]).astype(embeddings.dtype)


def uncertain_chunks(plan: SparsePlan, soft_clusters: np.ndarray, margin: float | None = None) -> np.ndarray:
    """Chunks holding a filled (chunk, speaker) whose best two clusters in `soft_clusters`
    (chunks, speakers, clusters) score within `margin` (default `MARGIN`) of each other."""
    margin = MARGIN if margin is None else margin
    if soft_clusters.shape[2] < 2:
        return np.zeros(0, dtype=np.int64)
    top = np.sort(soft_clusters, axis=2)
    close = (top[..., -1] - top[..., -2]) < margin
    return np.flatnonzero(np.any(close & (plan.sources >= 0).any(axis=2), axis=1))


def plan_sparse(segmentations: np.ndarray, frames_per_step: float, stride: int = STRIDE) -> SparsePlan:
    """Plan sparse mode on binarized segmentations (chunks, frames, speakers).

    `frames_per_step`: segmentation frames per chunk step (the shift between consecutive chunks).
    Every `stride`-th active chunk (one with any speaker active) and the last one are computed;
    all active chunks are where that would leave fewer than two of the (chunk, speaker) pairs
    that train the clustering (`alone_enough`): a short recording keeps them.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    binary = np.nan_to_num(np.asarray(segmentations, dtype=np.float32), nan=0.0)
    num_chunks, num_frames, num_speakers = binary.shape
    speaking = binary.sum(axis=1) > 0  # (chunks, speakers)
    active = np.flatnonzero(speaking.any(axis=1))
    computed = np.zeros(num_chunks, dtype=bool)
    computed[active[::stride]] = True
    computed[active[-1:]] = True
    kept = np.flatnonzero(computed)
    sources = np.full((num_chunks, num_speakers, 2), -1, dtype=np.int64)
    for c in active[~computed[active]]:
        i = int(np.searchsorted(kept, c))
        for side, d in ((0, kept[i - 1] if i > 0 else None), (1, kept[i] if i < len(kept) else None)):
            if d is None:
                continue
            shift = int(round((d - c) * frames_per_step))
            if abs(shift) >= num_frames:
                continue  # the two chunks share no frame
            mine = binary[c, max(shift, 0): num_frames + min(shift, 0)]
            theirs = binary[d, max(-shift, 0): num_frames + min(-shift, 0)]
            together = mine.T @ theirs  # frames each pair of speakers is heard in both chunks
            rows, cols = linear_sum_assignment(together, maximize=True)  # one-to-one
            # a match must hold most of the speaker's shared frames (not a voice overlapping it)
            found = (together[rows, cols] > 0) & (2 * together[rows, cols] >= mine.sum(axis=0)[rows])
            sources[c, rows[found], side] = d * num_speakers + cols[found]
        if np.any(speaking[c] & np.all(sources[c] < 0, axis=1)):
            computed[c] = True  # a speaker heard in neither neighbour: this chunk is computed
            sources[c] = -1
    trainable = alone_enough(binary)
    if stride > 1 and trainable[computed].sum() < min(2, trainable.sum()):
        return plan_sparse(binary, frames_per_step, stride=1)
    return SparsePlan(computed=computed, sources=sources)
