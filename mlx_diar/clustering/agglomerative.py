"""Mirrors pyannote.audio.pipelines.clustering.AgglomerativeClustering (pyannote 3.1-style clustering).

Linkage and cuts are scipy's `linkage` / `fcluster`, called as pyannote calls them (centroid
linkage through `centroid_linkage`, the same merges with one distance matrix).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from mlx_diar.clustering.assignment import (
    BaseClustering,
    assign_embeddings,
    filter_embeddings,
    set_num_clusters,
    single_cluster,
)
from mlx_diar.clustering.linkage import centroid_linkage
from mlx_diar.runtime.parameters import Parameters

# pyannote's Categorical choices for `method` (scipy linkage methods)
LINKAGE_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")


@dataclasses.dataclass(frozen=True)
class AgglomerativeParameters(Parameters):
    """Hyper-parameters of `AgglomerativeClustering`; defaults are speaker-diarization-3.1's config."""

    group = "clustering"

    threshold: float = 0.7045654963945799
    method: str = "centroid"
    min_cluster_size: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require("method", self.method in LINKAGE_METHODS, f"expected one of {', '.join(LINKAGE_METHODS)}")
        self.require("min_cluster_size", self.min_cluster_size >= 1, "expected an integer >= 1")


class AgglomerativeClustering(BaseClustering):
    """pyannote 3.1-style clustering (`pipelines.clustering.AgglomerativeClustering`).

    `method` is a scipy linkage method; with the cosine metric, centroid/median/ward link
    unit-normalised embeddings with the euclidean metric. Clusters smaller than
    `min_cluster_size` are merged into the closest large cluster.
    """

    def __init__(
        self,
        params: AgglomerativeParameters | None = None,
        metric: str = "cosine",
        constrained_assignment: bool = False,
    ):
        self.params = params or AgglomerativeParameters()
        self.metric = metric
        self.constrained_assignment = constrained_assignment

    @staticmethod
    def _large_clusters(clusters: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
        unique, counts = np.unique(clusters, return_counts=True)
        return unique[counts >= min_size], unique[counts < min_size]

    def cluster(
        self,
        embeddings: np.ndarray,
        min_clusters: int,
        max_clusters: int,
        num_clusters: int | None = None,
    ) -> np.ndarray:
        """(num_embeddings, dim) -> 0-indexed cluster labels (`AgglomerativeClustering.cluster`)."""
        threshold, method = self.params.threshold, self.params.method
        num_embeddings = embeddings.shape[0]
        # fewer than 10 embeddings per required large cluster: shrink the requirement
        min_cluster_size = min(self.params.min_cluster_size, max(1, round(0.1 * num_embeddings)))
        if num_embeddings == 1:
            return np.zeros((1,), dtype=np.uint8)

        if self.metric == "cosine" and method in ("centroid", "median", "ward"):
            with np.errstate(divide="ignore", invalid="ignore"):
                embeddings = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
            if method == "centroid":
                dendrogram = centroid_linkage(embeddings)
            else:
                dendrogram = linkage(embeddings, method=method, metric="euclidean")
        else:
            dendrogram = linkage(embeddings, method=method, metric=self.metric)

        clusters = fcluster(dendrogram, threshold, criterion="distance") - 1
        large, small = self._large_clusters(clusters, min_cluster_size)
        num_large = len(large)

        if num_large < min_clusters:
            num_clusters = min_clusters
        elif num_large > max_clusters:
            num_clusters = max_clusters

        if num_clusters is not None and num_large != num_clusters:
            # walk merge steps in order of closeness to the threshold, cutting by step index
            by_step = np.copy(dendrogram)
            by_step[:, 2] = np.arange(num_embeddings - 1)
            best_step, best_num_large = num_embeddings - 1, 1
            for step in np.argsort(np.abs(dendrogram[:, 2] - threshold)):
                if by_step[step, 3] < min_cluster_size:
                    continue  # this merge cannot change the number of large clusters
                clusters = fcluster(by_step, step, criterion="distance") - 1
                large, small = self._large_clusters(clusters, min_cluster_size)
                num_large = len(large)
                if abs(num_large - num_clusters) < abs(best_num_large - num_clusters):
                    best_step, best_num_large = step, num_large
                if num_large == num_clusters:
                    break
            if best_num_large != num_clusters:
                clusters = fcluster(by_step, best_step, criterion="distance") - 1
                large, small = self._large_clusters(clusters, min_cluster_size)
                num_large = len(large)
                warnings.warn(
                    f"Found only {num_large} clusters. Using a smaller value than "
                    f"{min_cluster_size} for `min_cluster_size` might help.",
                    stacklevel=2,
                )

        if num_large == 0:
            clusters[:] = 0
            return clusters
        if len(small) == 0:
            return clusters

        # merge each small cluster into the large cluster with the closest centroid
        large_centroids = np.vstack([np.mean(embeddings[clusters == k], axis=0) for k in large])
        small_centroids = np.vstack([np.mean(embeddings[clusters == k], axis=0) for k in small])
        nearest = np.argmin(cdist(large_centroids, small_centroids, metric=self.metric), axis=0)
        for small_k, large_k in zip(small, large[nearest]):
            clusters[clusters == small_k] = large_k
        return np.unique(clusters, return_inverse=True)[1]

    def trace(
        self,
        embeddings: np.ndarray,
        segmentations: np.ndarray,
        num_clusters: int | None = None,
        min_clusters: int | None = None,
        max_clusters: int | None = None,
        train_chunks: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """`BaseClustering.__call__`, its stages in a dict (train_*, train_clusters, outputs);
        `train_chunks` as in `BaseClustering.trace`."""
        train_embeddings, chunk_idx, speaker_idx = filter_embeddings(
            embeddings, segmentations, train_chunks=train_chunks
        )
        num_clusters, min_clusters, max_clusters = set_num_clusters(
            train_embeddings.shape[0], num_clusters, min_clusters, max_clusters
        )
        out: dict[str, Any] = dict(
            train_embeddings=train_embeddings,
            train_chunk_idx=chunk_idx,
            train_speaker_idx=speaker_idx,
            train_clusters=None,
        )
        if max_clusters < 2:
            hard, soft, centroids = single_cluster(embeddings, train_embeddings)
            return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)
        out["train_clusters"] = clusters = self.cluster(
            train_embeddings, min_clusters, max_clusters, num_clusters
        )
        hard, soft, centroids = assign_embeddings(
            embeddings, chunk_idx, speaker_idx, clusters, self.metric, self.constrained_assignment
        )
        return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)
