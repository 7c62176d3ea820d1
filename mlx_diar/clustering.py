"""Clustering stage of speaker-diarization-community-1, in NumPy/SciPy (no neural network here).

Mirrors pyannote.audio 4.0.7:
- `pyannote.audio.core.plda.PLDA` and `pyannote.audio.utils.vbx` (`vbx_setup`, `l2_norm`, `VBx`,
  `cluster_vbx`);
- `pyannote.audio.pipelines.clustering`: `BaseClustering` (`set_num_clusters`,
  `filter_embeddings`, `constrained_argmax`, `assign_embeddings`, `__call__`),
  `VBxClustering` and `AgglomerativeClustering`;
- `sklearn.cluster.KMeans(n_clusters, n_init=3, random_state=42).fit_predict`, which
  `VBxClustering` calls when the number of speakers is forced (see `kmeans`).

Every array is kept in the dtype pyannote would give it (float32 embeddings stay float32 where
pyannote keeps them so; PLDA and VBx work in float64).
"""

from __future__ import annotations

import warnings
from os import PathLike
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import eigh, get_blas_funcs
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.special import logsumexp, softmax

# --------------------------------------------------------------------------- PLDA


def l2_norm(x: np.ndarray) -> np.ndarray:
    """Unit-normalise a vector or each row of a matrix (`utils.vbx.l2_norm`)."""
    if x.ndim == 1:
        return x / np.linalg.norm(x)
    if x.ndim == 2:
        return x / np.linalg.norm(x, axis=1, ord=2)[:, np.newaxis]
    raise ValueError(f"Wrong number of dimensions, 1 or 2 is supported, not {x.ndim}.")


def vbx_setup(tr: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PLDA rotation and across-class variances, sorted decreasingly (`utils.vbx.vbx_setup`).

    Solves the generalised eigenproblem of the between-class (B) and within-class (W)
    covariances implied by the stored PLDA `tr` and `psi`. Returns `(plda_tr, plda_psi)`.
    """
    W = np.linalg.inv(tr.T.dot(tr))
    B = np.linalg.inv((tr.T / psi).dot(tr))
    acvar, wccn = eigh(B, W)
    return wccn.T[::-1], acvar[::-1]


class PLDA:
    """x-vector transform + PLDA projection into the VBx feature space (`core.plda.PLDA`).

    Arrays are the contents of community-1's `xvec_transform.npz` (`mean1`, `mean2`, `lda`)
    and `plda.npz` (`mu`, `tr`, `psi`).
    """

    def __init__(
        self,
        mean1: np.ndarray,
        mean2: np.ndarray,
        lda: np.ndarray,
        mu: np.ndarray,
        tr: np.ndarray,
        psi: np.ndarray,
        lda_dimension: int = 128,
    ):
        self.mean1, self.mean2, self.lda, self.mu = mean1, mean2, lda, mu
        self.plda_tr, self.plda_psi = vbx_setup(tr, psi)
        self.lda_dimension = lda_dimension

    @classmethod
    def from_npz(
        cls, transform_npz: str | PathLike, plda_npz: str | PathLike, lda_dimension: int = 128
    ) -> PLDA:
        """Load from `xvec_transform.npz` and `plda.npz` (as `vbx_setup` reads them)."""
        x, p = np.load(transform_npz), np.load(plda_npz)
        return cls(
            x["mean1"], x["mean2"], x["lda"], p["mu"], p["tr"], p["psi"], lda_dimension
        )

    @property
    def phi(self) -> np.ndarray:
        """Across-class covariance diagonal in the PLDA space (`PLDA.phi`)."""
        return self.plda_psi[: self.lda_dimension]

    def xvec_transform(self, x: np.ndarray) -> np.ndarray:
        """Centre, length-normalise, LDA, centre, length-normalise (`xvec_tf` of `vbx_setup`)."""
        lda = self.lda
        inner = np.sqrt(lda.shape[0]) * l2_norm(x - self.mean1)
        return np.sqrt(lda.shape[1]) * l2_norm(lda.T.dot(inner.T).T - self.mean2)

    def plda_transform(self, x0: np.ndarray) -> np.ndarray:
        """Centre, rotate into the PLDA space, keep `lda_dimension` (`plda_tf` of `vbx_setup`)."""
        return (x0 - self.mu).dot(self.plda_tr.T)[:, : self.lda_dimension]

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """(num_embeddings, 256) embeddings -> (num_embeddings, lda_dimension) VBx features."""
        return self.plda_transform(self.xvec_transform(embeddings))


# --------------------------------------------------------------------------- VBx


def vbx(
    X: np.ndarray,
    Phi: np.ndarray,
    gamma: np.ndarray,
    pi: np.ndarray | int,
    Fa: float = 1.0,
    Fb: float = 1.0,
    max_iters: int = 10,
    epsilon: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Variational Bayes GMM over x-vectors (`utils.vbx.VBx`, which has no HMM any more).

    X (T, D) features, Phi (D,) across-class variances, gamma (T, S) initial responsibilities,
    pi (S,) initial priors or S for uniform. Returns gamma, pi and the ELBO per iteration.
    pyannote's random Dirichlet initialisation (gamma=None) is not ported: `cluster_vbx`,
    the only caller, always passes gamma.
    """
    D = X.shape[1]
    if isinstance(pi, int):
        pi = np.ones(pi) / pi
    if gamma.shape != (X.shape[0], len(pi)):
        raise ValueError(f"gamma must be {(X.shape[0], len(pi))}, got {gamma.shape}")

    G = -0.5 * (np.sum(X**2, axis=1, keepdims=True) + D * np.log(2 * np.pi))  # (23)
    V = np.sqrt(Phi)
    rho = X * V  # (18)
    elbos: list[float] = []
    for ii in range(max_iters):
        invL = 1.0 / (1 + Fa / Fb * gamma.sum(axis=0, keepdims=True).T * Phi)  # (17)
        alpha = Fa / Fb * invL * gamma.T.dot(rho)  # (16)
        log_p_ = Fa * (rho.dot(alpha.T) - 0.5 * (invL + alpha**2).dot(Phi) + G)  # (23)

        lpi = np.log(pi + 1e-8)
        log_p_x = logsumexp(log_p_ + lpi, axis=-1)
        log_pX_ = np.sum(log_p_x, axis=0)
        gamma = np.exp(log_p_ + lpi - log_p_x[:, None])
        pi = np.sum(gamma, axis=0)
        pi = pi / pi.sum()

        elbo = log_pX_ + Fb * 0.5 * np.sum(np.log(invL) - invL - alpha**2 + 1)  # (25)
        elbos.append(elbo)
        if ii > 0 and elbo - elbos[-2] < epsilon:
            if elbo - elbos[-2] < 0:
                warnings.warn("VBx: value of auxiliary function has decreased!", stacklevel=2)
            break
    return gamma, pi, elbos


def cluster_vbx(
    ahc_init: np.ndarray,
    fea: np.ndarray,
    Phi: np.ndarray,
    Fa: float,
    Fb: float,
    max_iters: int = 20,
    init_smoothing: float = 7.0,
) -> tuple[np.ndarray, np.ndarray]:
    """VBx from smoothed one-hot AHC labels (`utils.vbx.cluster_vbx`). Returns (gamma, pi)."""
    qinit = np.zeros((len(ahc_init), ahc_init.max() + 1))
    qinit[range(len(ahc_init)), ahc_init.astype(int)] = 1.0
    if init_smoothing >= 0:
        qinit = softmax(qinit * init_smoothing, axis=1)
    gamma, pi, _ = vbx(fea, Phi, gamma=qinit, pi=qinit.shape[1], Fa=Fa, Fb=Fb, max_iters=max_iters)
    return gamma, pi


def ahc_init(train_embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid-linkage AHC of L2-normalised embeddings cut at `threshold`, labels 0..K-1.

    The AHC step of `VBxClustering.__call__`.
    """
    normed = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
    dendrogram = linkage(normed, method="centroid", metric="euclidean")
    clusters = fcluster(dendrogram, threshold, criterion="distance") - 1
    return np.unique(clusters, return_inverse=True)[1]


# --------------------------------------------------------------------------- BaseClustering


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


def filter_embeddings(
    embeddings: np.ndarray, segmentations: np.ndarray, min_active_ratio: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep embeddings that are not NaN and whose speaker is alone for enough frames.

    `BaseClustering.filter_embeddings`: embeddings (chunks, speakers, dim), binary
    segmentations (chunks, frames, speakers). Returns (train_embeddings, chunk_idx, speaker_idx).
    """
    num_frames = segmentations.shape[1]
    single_active = np.sum(segmentations, axis=2, keepdims=True) == 1
    num_clean_frames = np.sum(segmentations * single_active, axis=1)
    active = num_clean_frames >= min_active_ratio * num_frames
    valid = ~np.any(np.isnan(embeddings), axis=2)
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


def _soft_clusters(embeddings: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
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
    soft_clusters = _soft_clusters(embeddings, centroids, metric)
    if constrained:
        hard_clusters = constrained_argmax(soft_clusters)
    else:
        hard_clusters = np.argmax(soft_clusters, axis=2)
    return hard_clusters, soft_clusters, centroids


def _single_cluster(
    embeddings: np.ndarray, train_embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything in cluster 0: pyannote's answer when there is nothing to cluster."""
    num_chunks, num_speakers, _ = embeddings.shape
    return (
        np.zeros((num_chunks, num_speakers), dtype=np.int8),
        np.ones((num_chunks, num_speakers, 1)),
        np.mean(train_embeddings, axis=0, keepdims=True),
    )


# --------------------------------------------------------------------------- KMeans


_KMEANS_CHUNK = 256  # sklearn.cluster._k_means_common.CHUNK_SIZE


def _row_sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _kpp_sq_distances(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared distances as sklearn's `_euclidean_distances` gives them (float32: via float64)."""
    if a.dtype == np.float32:
        a64, x64 = a.astype(np.float64), x.astype(np.float64)
        d = -2 * (a64 @ x64.T)
        d += _row_sq_norms(a64)[:, None]
        d += _row_sq_norms(x64)[None, :]
        d = d.astype(np.float32)
    else:
        d = -2 * (a @ x.T)
        d += _row_sq_norms(a)[:, None]
        d += _row_sq_norms(x)[None, :]
    return np.maximum(d, 0, out=d)


def _kmeans_plusplus(x: np.ndarray, n_clusters: int, rng: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ seeding (`sklearn.cluster._kmeans._kmeans_plusplus`, unit weights)."""
    n_samples = x.shape[0]
    weights = np.ones(n_samples, dtype=x.dtype)
    n_local_trials = 2 + int(np.log(n_clusters))
    indices = [rng.choice(n_samples, p=weights / weights.sum())]
    closest = _kpp_sq_distances(x[indices], x)
    potential = closest @ weights
    for _ in range(1, n_clusters):
        rand_vals = rng.uniform(size=n_local_trials) * potential
        candidates = np.searchsorted(np.cumsum(weights * closest), rand_vals)
        np.clip(candidates, None, closest.size - 1, out=candidates)
        distances = _kpp_sq_distances(x[candidates], x)
        np.minimum(closest, distances, out=distances)
        candidate_potentials = distances @ weights.reshape(-1, 1)
        best = np.argmin(candidate_potentials)
        potential = candidate_potentials[best]
        closest = distances[best]
        indices.append(candidates[best])
    return x[indices]


def _lloyd_labels(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """E-step: nearest center by ||c||^2 - 2 x.c, first index on ties.

    Same BLAS call as sklearn's `_update_chunk_dense` (scipy's gemm, C = -2 op(A) op(B) + C,
    same operand layout, 256-sample chunks), so near-tied distances round the same way.
    """
    gemm = get_blas_funcs("gemm", dtype=x.dtype)
    norms = _row_sq_norms(centers)
    labels = np.empty(x.shape[0], dtype=np.int32)
    for start in range(0, x.shape[0], _KMEANS_CHUNK):
        chunk = x[start : start + _KMEANS_CHUNK]
        distances = np.tile(norms, (chunk.shape[0], 1))
        distances = gemm(
            -2.0, centers.T, chunk.T, beta=1.0, c=distances.T, trans_a=1, overwrite_c=1
        ).T
        labels[start : start + chunk.shape[0]] = np.argmin(distances, axis=1)
    return labels


def _lloyd_centers(x: np.ndarray, centers_old: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """M-step with sklearn's empty-cluster relocation and in-order averaging.

    Sums are accumulated sample by sample within each 256-sample chunk, then chunk partials are
    added in chunk order: sklearn's order when it has at least one OpenMP thread per chunk.
    """
    n_clusters = centers_old.shape[0]
    sums = np.zeros_like(centers_old)
    for start in range(0, x.shape[0], _KMEANS_CHUNK):
        partial = np.zeros_like(centers_old)
        np.add.at(partial, labels[start : start + _KMEANS_CHUNK], x[start : start + _KMEANS_CHUNK])
        sums += partial
    weight = np.bincount(labels, minlength=n_clusters).astype(x.dtype)

    empty = np.flatnonzero(weight == 0)
    if len(empty):
        distances = ((x - centers_old[labels]) ** 2).sum(axis=1)
        far = np.argpartition(distances, -len(empty))[: -len(empty) - 1 : -1]
        if np.max(distances) > 0:
            for new_id, far_idx in zip(empty, far):
                old_id = labels[far_idx]
                sums[old_id] -= x[far_idx]
                sums[new_id] = x[far_idx]
                weight[new_id] = 1
                weight[old_id] -= 1

    heaviest = np.argmax(weight)
    for j in range(n_clusters):
        if weight[j] > 0:
            sums[j] *= x.dtype.type(1.0 / float(weight[j]))
        else:
            sums[j] = sums[heaviest]
    return sums


def _lloyd(
    x: np.ndarray, centers: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, float]:
    """One k-means run (sklearn `_kmeans_single_lloyd`). Returns (labels, inertia)."""
    labels_old = np.full(x.shape[0], -1, dtype=np.int32)
    strict_convergence = False
    for _ in range(max_iter):
        labels = _lloyd_labels(x, centers)
        centers_new = _lloyd_centers(x, centers, labels)
        shift_sq = ((centers_new - centers) ** 2).sum()
        centers = centers_new
        if np.array_equal(labels, labels_old):
            strict_convergence = True
            break
        if shift_sq <= tol:
            break
        labels_old = labels
    if not strict_convergence:
        labels = _lloyd_labels(x, centers)
    inertia = float(((x - centers[labels]) ** 2).sum(axis=1).sum())
    return labels, inertia


def _same_clustering(labels1: np.ndarray, labels2: np.ndarray, n_clusters: int) -> bool:
    """Whether two labelings are equal up to a permutation (sklearn `_is_same_clustering`)."""
    mapping = np.full(n_clusters, -1)
    for a, b in zip(labels1, labels2):
        if mapping[a] == -1:
            mapping[a] = b
        elif mapping[a] != b:
            return False
    return True


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    n_init: int = 3,
    random_state: int = 42,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> np.ndarray:
    """Labels of `sklearn.cluster.KMeans(n_clusters, n_init, random_state=...).fit_predict(x)`.

    Same k-means++ draws from `np.random.RandomState(random_state)` (same seeds, bit for bit),
    same centring of the data, Lloyd E-step through the same scipy gemm call, tolerance,
    empty-cluster relocation and best-of-`n_init` rule (sklearn 1.9's dense lloyd path).
    Not reproduced bit for bit: the order in which sklearn's OpenMP threads add their partial
    center sums when there are more than two 256-sample chunks, the FMA/unrolled sums of its
    center shift and inertia, and its float64 chunking of k-means++ distances for more than
    ~900 samples. These can only matter when two distances, a shift and the tolerance, or two
    runs' inertias tie to within rounding.
    """
    x = np.array(x, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
    if x.shape[0] < n_clusters:
        raise ValueError(f"n_samples={x.shape[0]} should be >= n_clusters={n_clusters}.")
    tol = np.mean(np.var(x, axis=0)) * tol
    x -= x.mean(axis=0)
    rng = np.random.RandomState(random_state)
    best_labels, best_inertia = None, None
    for _ in range(n_init):
        labels, inertia = _lloyd(x, _kmeans_plusplus(x, n_clusters, rng), max_iter, tol)
        if best_inertia is None or (
            inertia < best_inertia and not _same_clustering(labels, best_labels, n_clusters)
        ):
            best_labels, best_inertia = labels, inertia
    return best_labels


# --------------------------------------------------------------------------- pipelines


def _bounds(
    num_clusters: int | None, min_clusters: int | None, max_clusters: int | float | None
) -> tuple[int, int | float]:
    """min/max as the pipeline's `set_num_speakers` hands them to VBxClustering (None: 1, inf)."""
    return num_clusters or min_clusters or 1, num_clusters or max_clusters or np.inf


class _Clustering:
    """`__call__` shared by the clustering stages: `BaseClustering.__call__`'s outputs from `trace`."""

    def trace(self, embeddings: np.ndarray, segmentations: np.ndarray, num_clusters: int | None = None,
              min_clusters: int | None = None, max_clusters: int | float | None = None) -> dict[str, Any]:
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


class VBxClustering(_Clustering):
    """AHC initialisation + VBx + centroid assignment (`pipelines.clustering.VBxClustering`).

    Defaults are community-1's `config.yaml` (threshold 0.6, Fa 0.07, Fb 0.8).
    """

    def __init__(
        self,
        plda: PLDA,
        threshold: float = 0.6,
        Fa: float = 0.07,
        Fb: float = 0.8,
        metric: str = "cosine",
        constrained_assignment: bool = True,
        max_iters: int = 20,
    ):
        self.plda = plda
        self.threshold, self.Fa, self.Fb = threshold, Fa, Fb
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
    ) -> dict[str, Any]:
        """Run the clustering and return every stage in a dict.

        Keys: train_embeddings, train_chunk_idx, train_speaker_idx, ahc_clusters, plda_features,
        gamma, pi, kmeans_clusters (None unless KMeans re-clustered to a forced count),
        hard_clusters, soft_clusters, centroids. Stages that did not run are None.
        """
        min_clusters, max_clusters = _bounds(num_clusters, min_clusters, max_clusters)
        train_embeddings, chunk_idx, speaker_idx = filter_embeddings(embeddings, segmentations)
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
            hard, soft, centroids = _single_cluster(embeddings, train_embeddings)
            return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)

        out["ahc_clusters"] = ahc = ahc_init(train_embeddings, self.threshold)
        out["plda_features"] = fea = self.plda(train_embeddings)
        gamma, pi = cluster_vbx(ahc, fea, self.plda.phi, self.Fa, self.Fb, self.max_iters)
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
            normed = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
            out["kmeans_clusters"] = labels = kmeans(normed, int(num_clusters))
            centroids = np.vstack(
                [np.mean(train_embeddings[labels == k], axis=0) for k in range(int(num_clusters))]
            )

        soft = _soft_clusters(embeddings, centroids, self.metric)
        if constrained:
            # inactive speakers score below any valid one (NaN if any embedding is NaN, as pyannote)
            soft[segmentations.sum(1) == 0] = soft.min() - 1.0
            hard = constrained_argmax(soft)
        else:
            hard = np.argmax(soft, axis=2)
        return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)


class AgglomerativeClustering(_Clustering):
    """pyannote 3.1-style clustering (`pipelines.clustering.AgglomerativeClustering`).

    `method` is a scipy linkage method; with the cosine metric, centroid/median/ward link
    unit-normalised embeddings with the euclidean metric. Clusters smaller than
    `min_cluster_size` are merged into the closest large cluster.
    """

    def __init__(
        self,
        threshold: float,
        method: str = "centroid",
        min_cluster_size: int = 12,
        metric: str = "cosine",
        constrained_assignment: bool = False,
    ):
        self.threshold, self.method, self.min_cluster_size = threshold, method, min_cluster_size
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
        num_embeddings = embeddings.shape[0]
        # fewer than 10 embeddings per required large cluster: shrink the requirement
        min_cluster_size = min(self.min_cluster_size, max(1, round(0.1 * num_embeddings)))
        if num_embeddings == 1:
            return np.zeros((1,), dtype=np.uint8)

        if self.metric == "cosine" and self.method in ("centroid", "median", "ward"):
            with np.errstate(divide="ignore", invalid="ignore"):
                embeddings = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
            dendrogram = linkage(embeddings, method=self.method, metric="euclidean")
        else:
            dendrogram = linkage(embeddings, method=self.method, metric=self.metric)

        clusters = fcluster(dendrogram, self.threshold, criterion="distance") - 1
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
            for step in np.argsort(np.abs(dendrogram[:, 2] - self.threshold)):
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
    ) -> dict[str, Any]:
        """`BaseClustering.__call__`, its stages in a dict (train_*, train_clusters, outputs)."""
        train_embeddings, chunk_idx, speaker_idx = filter_embeddings(embeddings, segmentations)
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
            hard, soft, centroids = _single_cluster(embeddings, train_embeddings)
            return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)
        out["train_clusters"] = clusters = self.cluster(
            train_embeddings, min_clusters, max_clusters, num_clusters
        )
        hard, soft, centroids = assign_embeddings(
            embeddings, chunk_idx, speaker_idx, clusters, self.metric, self.constrained_assignment
        )
        return out | dict(hard_clusters=hard, soft_clusters=soft, centroids=centroids)
