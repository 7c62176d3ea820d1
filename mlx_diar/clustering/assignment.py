"""Mirrors pyannote.audio.pipelines.clustering.BaseClustering: cluster counts, training embeddings, assignment.

`set_num_clusters`, `filter_embeddings`, `constrained_argmax` and `assign_embeddings` are
BaseClustering's methods as functions; `BaseClustering` is the `__call__` both clustering
classes share.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def set_num_clusters(
    num_embeddings: int,
    num_clusters: int | None = None,
    min_clusters: int | None = None,
    max_clusters: int | None = None,
) -> tuple[int | None, int, int]:
    """Bound the cluster counts by the number of embeddings (`BaseClustering.set_num_clusters`)."""
    min_clusters = max(1, min(num_embeddings, num_clusters or min_clusters or 1))
    max_clusters = max(1, min(num_embeddings, num_clusters or max_clusters or num_embeddings))
    if min_clusters > max_clusters:
        raise ValueError(
            f"min_clusters must be smaller than (or equal to) max_clusters "
            f"(here: min_clusters={min_clusters:g} and max_clusters={max_clusters:g})."
        )
    if min_clusters == max_clusters:
        num_clusters = min_clusters
    return num_clusters, min_clusters, max_clusters


def alone_enough(segmentations: np.ndarray, min_active_ratio: float = 0.2) -> np.ndarray:
    """(chunks, speakers): whether the speaker is the only one active in at least `min_active_ratio`
    of the chunk's frames (`filter_embeddings`' criterion for training the clustering)."""
    num_frames = segmentations.shape[1]
    single_active = np.sum(segmentations, axis=2, keepdims=True) == 1
    num_clean_frames = np.sum(segmentations * single_active, axis=1)
    return num_clean_frames >= min_active_ratio * num_frames


def filter_embeddings(
    embeddings: np.ndarray, segmentations: np.ndarray, min_active_ratio: float = 0.2,
    train_chunks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep embeddings that are not NaN and whose speaker is alone for enough frames.

    `BaseClustering.filter_embeddings`: embeddings (chunks, speakers, dim), binary
    segmentations (chunks, frames, speakers). Returns (train_embeddings, chunk_idx, speaker_idx).
    `train_chunks` (boolean per chunk; not in pyannote) keeps only those chunks' embeddings.
    """
    active = alone_enough(segmentations, min_active_ratio)
    valid = ~np.any(np.isnan(embeddings), axis=2)
    if train_chunks is not None:
        valid &= np.asarray(train_chunks, dtype=bool)[:, None]
    chunk_idx, speaker_idx = np.where(active * valid)
    return embeddings[chunk_idx, speaker_idx], chunk_idx, speaker_idx


def constrained_argmax(soft_clusters: np.ndarray) -> np.ndarray:
    """Per chunk, a one-to-one speaker -> cluster assignment maximising the total score.

    `BaseClustering.constrained_argmax` (Hungarian algorithm); NaN scores count as the lowest
    score; speakers left without a cluster get -2. Returns int8 (chunks, speakers).
    """
    soft_clusters = np.nan_to_num(soft_clusters, nan=np.nanmin(soft_clusters))
    num_chunks, num_speakers, _ = soft_clusters.shape
    hard_clusters = -2 * np.ones((num_chunks, num_speakers), dtype=np.int8)
    for c, cost in enumerate(soft_clusters):
        speakers, clusters = linear_sum_assignment(cost, maximize=True)
        hard_clusters[c, speakers] = clusters
    return hard_clusters


def soft_clusters(embeddings: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
    """2 - distance between every (chunk, speaker) embedding and every centroid."""
    num_chunks, num_speakers, dimension = embeddings.shape
    distance = cdist(embeddings.reshape(-1, dimension), centroids, metric=metric)
    return 2 - distance.reshape(num_chunks, num_speakers, -1)


def assign_embeddings(
    embeddings: np.ndarray,
    train_chunk_idx: np.ndarray,
    train_speaker_idx: np.ndarray,
    train_clusters: np.ndarray,
    metric: str = "cosine",
    constrained: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign every embedding to the closest training-cluster mean.

    `BaseClustering.assign_embeddings`. Returns hard_clusters (chunks, speakers),
    soft_clusters (chunks, speakers, K) and centroids (K, dim).
    """
    num_clusters = np.max(train_clusters) + 1
    train_embeddings = embeddings[train_chunk_idx, train_speaker_idx]
    centroids = np.vstack(
        [np.mean(train_embeddings[train_clusters == k], axis=0) for k in range(num_clusters)]
    )
    soft = soft_clusters(embeddings, centroids, metric)
    hard = constrained_argmax(soft) if constrained else np.argmax(soft, axis=2)
    return hard, soft, centroids


def single_cluster(
    embeddings: np.ndarray, train_embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything in cluster 0: pyannote's answer when there is nothing to cluster (its centroid, the mean
    of no training embedding, is NaN as pyannote's, without NumPy's empty-mean warnings)."""
    num_chunks, num_speakers, _ = embeddings.shape
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        centroid = np.mean(train_embeddings, axis=0, keepdims=True)
    return (
        np.zeros((num_chunks, num_speakers), dtype=np.int8),
        np.ones((num_chunks, num_speakers, 1)),
        centroid,
    )


class BaseClustering:
    """`BaseClustering.__call__`: its outputs, from the stages a subclass's `trace` returns."""

    def trace(
        self,
        embeddings: np.ndarray,
        segmentations: np.ndarray,
        num_clusters: int | None = None,
        min_clusters: int | None = None,
        max_clusters: int | float | None = None,
        train_chunks: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Run the clustering; every stage in a dict with hard_clusters, soft_clusters, centroids.

        With `train_chunks` (boolean per chunk), only those chunks' embeddings train the
        clustering (see `filter_embeddings`); every chunk is assigned.
        """
        raise NotImplementedError

    def __call__(
        self,
        embeddings: np.ndarray,
        segmentations: np.ndarray,
        num_clusters: int | None = None,
        min_clusters: int | None = None,
        max_clusters: int | float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """embeddings (chunks, speakers, dim), binary segmentations (chunks, frames, speakers)
        -> hard_clusters (chunks, speakers), soft_clusters (chunks, speakers, K),
        centroids (K, dim).
        """
        t = self.trace(embeddings, segmentations, num_clusters, min_clusters, max_clusters)
        return t["hard_clusters"], t["soft_clusters"], t["centroids"]
