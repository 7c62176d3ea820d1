"""The "sparse" embedding mode (opt-in, fast, not exact): the trunk runs on every other active chunk.

Not in pyannote. Consecutive 10 s chunks overlap by 90 %, so a local speaker of a chunk is,
almost always, also a local speaker of the chunks just before and after it. In sparse mode the
trunk computes the exact (pyannote's) embeddings of every `stride`-th active chunk; every other
active chunk's speaker gets the mean direction of the speakers it is matched with in the nearest
computed chunk before and after it: one-to-one, by the frames both chunks' binarized
segmentations hear them in, and only where the match holds most of the speaker's shared frames.
A chunk with a speaker that either neighbour does not match, or that is heard for less than
`MIN_SPEECH` seconds, is computed exactly too. Only computed embeddings train the clustering
(`BaseClustering.trace(..., train_chunks=...)`); every chunk is then assigned to its centroids
as pyannote assigns them.
Chunks with a filled speaker that this assignment cannot tell apart from a second cluster
(`uncertain_chunks`) are then computed exactly too and assigned again to the same centroids.
Last, the clustering is trained again on each half of the computed chunks (`training_halves`):
where either half's diarization disagrees with the whole's on more than `AGREEMENT` of the
speech (`disagreement`), the answer depends on which chunks train, and every remaining chunk is
computed: the recording gets exact mode's clustering, at exact mode's cost.
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
# a filled speaker heard for less than this (seconds) in its chunk is computed: a short turn's own
# embedding is too far from its neighbours' (median cosine 0.4-0.7 under 1 s, 0.9 above 3 s)
MIN_SPEECH = 1.0
# the largest fraction of the speech on which a half-trained diarization may differ from the whole's
# before sparse mode computes every chunk (half of the fast modes' DER budget against exact mode)
AGREEMENT = 0.0025


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


def plan_sparse(segmentations: np.ndarray, frames_per_step: float, stride: int = STRIDE,
                min_frames: int = 0) -> SparsePlan:
    """Plan sparse mode on binarized segmentations (chunks, frames, speakers).

    `frames_per_step`: segmentation frames per chunk step (the shift between consecutive chunks).
    Every `stride`-th active chunk (one with any speaker active) and the last one are computed,
    and so is every other chunk with a speaker that is active in fewer than `min_frames` of its
    frames or that the computed chunk before or after it does not match (at stride 2 both hear
    all but its first or last step: a missing match means the segmentation's speakers disagree);
    all active chunks are where that would leave fewer than two of the (chunk, speaker) pairs
    that train the clustering (`alone_enough`): a short recording keeps them.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    binary = np.nan_to_num(np.asarray(segmentations, dtype=np.float32), nan=0.0)
    num_chunks, num_frames, num_speakers = binary.shape
    heard = binary.sum(axis=1)  # (chunks, speakers) frames
    speaking = heard > 0
    active = np.flatnonzero(speaking.any(axis=1))
    computed = np.zeros(num_chunks, dtype=bool)
    computed[active[::stride]] = True
    computed[active[-1:]] = True
    kept = np.flatnonzero(computed)
    sources = np.full((num_chunks, num_speakers, 2), -1, dtype=np.int64)
    for c in active[~computed[active]]:
        i = int(np.searchsorted(kept, c))
        for side, d in enumerate((kept[i - 1], kept[i])):  # the first and last active chunks are computed
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
        if np.any(speaking[c] & (np.any(sources[c] < 0, axis=1) | (heard[c] < min_frames))):
            computed[c] = True  # a speaker one neighbour does not match, or heard too briefly
            sources[c] = -1
    trainable = alone_enough(binary)
    if stride > 1 and trainable[computed].sum() < min(2, trainable.sum()):
        return plan_sparse(binary, frames_per_step, stride=1, min_frames=min_frames)
    return SparsePlan(computed=computed, sources=sources)


def training_halves(plan: SparsePlan) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean (chunks,) masks splitting the computed chunks alternately (1st, 3rd, ... and
    2nd, 4th, ...): each spans the whole recording with half the training chunks."""
    kept = np.flatnonzero(plan.computed)
    halves = []
    for part in (kept[0::2], kept[1::2]):
        half = np.zeros_like(plan.computed)
        half[part] = True
        halves.append(half)
    return halves[0], halves[1]


def disagreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Frame-level diarization error of `other` against `reference`, both binary (frames,
    clusters) arrays, under the one-to-one mapping of their clusters that agrees most: missed,
    false and confused speaker-frames over `reference`'s speaker-frames (0.0 when both are empty)."""
    reference = np.asarray(reference) > 0
    other = np.asarray(other) > 0
    rows, cols = linear_sum_assignment(reference.T.astype(np.float64) @ other.astype(np.float64), maximize=True)
    correct = np.sum(reference[:, rows] & other[:, cols])
    errors = np.sum(np.maximum(reference.sum(axis=1), other.sum(axis=1))) - correct
    speech = reference.sum()
    return float(errors / speech) if speech else float(errors > 0)
