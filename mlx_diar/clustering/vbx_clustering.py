"""Mirrors pyannote.audio.pipelines.clustering.VBxClustering: AHC initialisation, VBx, centroid assignment.

The AHC is scipy's centroid `linkage` (run by `centroid_linkage`, which holds one distance
matrix where scipy holds two) and `fcluster`, and the forced-count re-clustering scikit-learn's
`KMeans`, called with pyannote's arguments. Every array keeps the dtype pyannote gives it
(float32 embeddings stay float32 where pyannote keeps them so; PLDA and VBx work in float64).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster

from mlx_diar.clustering.assignment import (
    BaseClustering,
    constrained_argmax,
    filter_embeddings,
    single_cluster,
    soft_clusters,
)
from mlx_diar.clustering.linkage import centroid_linkage
from mlx_diar.clustering.plda import PLDA
from mlx_diar.clustering.vbx import cluster_vbx
from mlx_diar.runtime.parameters import Parameters


@dataclasses.dataclass(frozen=True)
class VBxParameters(Parameters):
    """Hyper-parameters of `VBxClustering`; defaults are community-1's config.yaml."""

    group = "clustering"

    threshold: float = 0.6
    Fa: float = 0.07
    Fb: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require("Fa", self.Fa > 0, "expected a number > 0")
        self.require("Fb", self.Fb > 0, "expected a number > 0")


def ahc_init(train_embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid-linkage AHC of L2-normalised embeddings cut at `threshold`, labels 0..K-1.

    The AHC step of `VBxClustering.__call__`.
    """
    normed = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
    dendrogram = centroid_linkage(normed)
    clusters = fcluster(dendrogram, threshold, criterion="distance") - 1
    return np.unique(clusters, return_inverse=True)[1]


def kmeans(train_embeddings: np.ndarray, num_clusters: int) -> np.ndarray:
    """K-means labels of the L2-normalised embeddings, as `VBxClustering.__call__` computes them.

    scikit-learn is imported here, not at module level: only a forced speaker count needs it,
    and its import takes longer than this package's SciPy imports together (`python -X importtime`).
    """
    from sklearn.cluster import KMeans

    normed = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
    return KMeans(n_clusters=num_clusters, n_init=3, random_state=42, copy_x=False).fit_predict(normed)


def _bounds(
    num_clusters: int | None, min_clusters: int | None, max_clusters: int | float | None
) -> tuple[int, int | float]:
    """min/max as the pipeline's `set_num_speakers` hands them to VBxClustering (None: 1, inf)."""
    return num_clusters or min_clusters or 1, num_clusters or max_clusters or np.inf


class VBxClustering(BaseClustering):
    """AHC initialisation + VBx + centroid assignment (`pipelines.clustering.VBxClustering`)."""

    def __init__(
        self,
        plda: PLDA,
        params: VBxParameters | None = None,
        metric: str = "cosine",
        constrained_assignment: bool = True,
        max_iters: int = 20,
    ):
        self.plda = plda
        self.params = params or VBxParameters()
        self.metric = metric
        self.constrained_assignment = constrained_assignment
        self.max_iters = max_iters

    def trace(
        self,
        embeddings: np.ndarray,
        segmentations: np.ndarray,
        num_clusters: int | None = None,
        min_clusters: int | None = None,
        max_clusters: int | float | None = None,
        train_chunks: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Run the clustering and return every stage in a dict.

        Keys: train_embeddings, train_chunk_idx, train_speaker_idx, ahc_clusters, plda_features,
        gamma, pi, kmeans_clusters (None unless KMeans re-clustered to a forced count),
        hard_clusters, soft_clusters, centroids. Stages that did not run are None.
        `train_chunks`: as in `BaseClustering.trace`.
        """
        min_clusters, max_clusters = _bounds(num_clusters, min_clusters, max_clusters)
        train_embeddings, chunk_idx, speaker_idx = filter_embeddings(
            embeddings, segmentations, train_chunks=train_chunks
        )
        out: dict[str, Any] = dict(
            train_embeddings=train_embeddings,
            train_chunk_idx=chunk_idx,
            train_speaker_idx=speaker_idx,
            ahc_clusters=None,
            plda_features=None,
            gamma=None,
            pi=None,
            kmeans_clusters=None,
        )
        if train_embeddings.shape[0] < 2:
            hard, soft, centroids = single_cluster(embeddings, train_embeddings)
            return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)

        p = self.params
        out["ahc_clusters"] = ahc = ahc_init(train_embeddings, p.threshold)
        out["plda_features"] = fea = self.plda(train_embeddings)
        gamma, pi = cluster_vbx(ahc, fea, self.plda.phi, p.Fa, p.Fb, self.max_iters)
        out["gamma"], out["pi"] = gamma, pi

        dimension = embeddings.shape[2]
        W = gamma[:, pi > 1e-7]  # responsibilities of the speakers VBx kept
        centroids = W.T @ train_embeddings.reshape(-1, dimension) / W.sum(0, keepdims=True).T

        constrained = self.constrained_assignment
        auto_num_clusters = centroids.shape[0]
        if auto_num_clusters < min_clusters:
            num_clusters = min_clusters
        elif auto_num_clusters > max_clusters:
            num_clusters = max_clusters
        if num_clusters and num_clusters != auto_num_clusters:
            constrained = False  # as pyannote: forcing K must not add clusters via -2
            out["kmeans_clusters"] = labels = kmeans(train_embeddings, int(num_clusters))
            centroids = np.vstack(
                [np.mean(train_embeddings[labels == k], axis=0) for k in range(int(num_clusters))]
            )

        soft = soft_clusters(embeddings, centroids, self.metric)
        if constrained:
            # inactive speakers score below any valid one (NaN if any embedding is NaN, as pyannote)
            soft[segmentations.sum(1) == 0] = soft.min() - 1.0
            hard = constrained_argmax(soft)
        else:
            hard = np.argmax(soft, axis=2)
        return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)
