"""Clustering stage: the real community-1 fixture (speakrs) and pyannote/sklearn run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import targets
from mlx_diar.clustering import linkage as lean_linkage
from mlx_diar.clustering import (
    PLDA,
    AgglomerativeClustering,
    AgglomerativeParameters,
    VBxClustering,
    VBxParameters,
    ahc_init,
    cluster_vbx,
    filter_embeddings,
)

DATA = Path(__file__).parent / "data" / "speakrs"


def _fixture(name: str) -> np.ndarray:
    return np.load(DATA / f"pipeline_{name}.npy")


class _FixturePLDA:
    """Stands in for the real PLDA, which the fixture only gives as its output."""

    phi = _fixture("plda_phi")

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        assert np.array_equal(embeddings, _fixture("train_embeddings"))
        return _fixture("plda_features")


# --------------------------------------------------------------------------- (a) real fixture


@pytest.mark.parametrize("lean_bytes", [None, 0], ids=["scipy", "lean"])
def test_fixture_ahc_exact(lean_bytes: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if lean_bytes is not None:  # the one-matrix linkage that long recordings take
        monkeypatch.setattr(lean_linkage, "LEAN_LINKAGE_BYTES", lean_bytes)
    ahc = ahc_init(_fixture("train_embeddings"), threshold=0.6)
    np.testing.assert_array_equal(ahc, _fixture("ahc_clusters"))


def test_fixture_vbx() -> None:
    gamma, pi = cluster_vbx(
        _fixture("ahc_clusters"), _fixture("plda_features"), _fixture("plda_phi"), Fa=0.07, Fb=0.8
    )
    np.testing.assert_allclose(gamma, _fixture("vbx_gamma"), rtol=0, atol=targets.VBX_ATOL)
    np.testing.assert_allclose(pi, _fixture("vbx_pi"), rtol=0, atol=targets.VBX_ATOL)


def test_fixture_full_clustering() -> None:
    embeddings, segmentations = _fixture("embeddings_data"), _fixture("segmentation_data")
    clustering = VBxClustering(_FixturePLDA(), VBxParameters(threshold=0.6, Fa=0.07, Fb=0.8))
    t = clustering.trace(embeddings, segmentations)
    np.testing.assert_array_equal(t["train_chunk_idx"], _fixture("train_chunk_idx"))
    np.testing.assert_array_equal(t["train_speaker_idx"], _fixture("train_speaker_idx"))
    np.testing.assert_array_equal(t["ahc_clusters"], _fixture("ahc_clusters"))
    np.testing.assert_allclose(t["gamma"], _fixture("vbx_gamma"), rtol=0, atol=targets.VBX_ATOL)
    np.testing.assert_allclose(t["pi"], _fixture("vbx_pi"), rtol=0, atol=targets.VBX_ATOL)
    # speakrs NaN-ed some embeddings after the run (fixture README): compare the others only
    valid = ~np.isnan(embeddings).any(axis=2)
    expected = _fixture("hard_clusters")
    assert valid.sum() > 0.5 * valid.size
    np.testing.assert_array_equal(t["hard_clusters"][valid], expected[valid])
    # with the pipeline's next step (inactive speakers -> -2), every pair matches here
    hard = t["hard_clusters"].copy()
    hard[segmentations.sum(axis=1) == 0] = -2
    np.testing.assert_array_equal(hard, expected)


# --------------------------------------------------------------------------- synthetic data

DIM, LDA_DIM = 256, 128


def _write_random_plda(tmp: Path, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((LDA_DIM, LDA_DIM)))
    np.savez(
        tmp / "xvec_transform.npz",
        mean1=0.1 * rng.standard_normal(DIM),
        mean2=0.1 * rng.standard_normal(LDA_DIM),
        lda=rng.standard_normal((DIM, LDA_DIM)) / np.sqrt(DIM),
    )
    np.savez(
        tmp / "plda.npz",
        mu=0.1 * rng.standard_normal(LDA_DIM),
        tr=q * rng.uniform(0.5, 2.0, LDA_DIM),  # well-conditioned
        psi=np.sort(rng.uniform(0.5, 25.0, LDA_DIM))[::-1].copy(),
    )
    return tmp / "xvec_transform.npz", tmp / "plda.npz"


def _synthetic(
    seed: int,
    nan_inactive: bool,
    num_chunks: int = 60,
    num_frames: int = 200,
    num_global: int = 3,
    noise: float = 0.02,
    rare: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`num_global` speakers; per chunk 0-3 active local speakers in random slots, overlapping
    turns, some too short to be trained on; inactive slots get NaN (or, if not nan_inactive,
    noise). With 2 global speakers, a chunk may hold one speaker twice (-> -2 assignments).
    `rare` more speakers appear seldom (small AHC clusters)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_global + rare, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    embeddings = np.empty((num_chunks, 3, DIM), dtype=np.float32)
    segmentations = np.zeros((num_chunks, num_frames, 3), dtype=np.float32)
    for c in range(num_chunks):
        num_active = rng.choice(4, p=[0.05, 0.35, 0.4, 0.2])
        if rare:
            p = np.r_[np.ones(num_global), np.full(rare, 0.05)]
            speakers = rng.choice(num_global + rare, size=num_active, replace=False, p=p / p.sum())
        else:
            speakers = rng.choice(num_global, size=num_active, replace=num_active > num_global)
        slots = rng.permutation(3)
        bounds = np.sort(rng.integers(0, num_frames, size=num_active - 1)) if num_active else []
        edges = np.concatenate([[0], bounds, [num_frames]]).astype(int)
        for i, slot in enumerate(slots):
            if i < num_active:
                start, end = max(0, edges[i] - 8), min(num_frames, edges[i + 1] + 8)
                segmentations[c, start:end, slot] = 1
                jitter = noise * rng.standard_normal(DIM)
                embeddings[c, slot] = rng.uniform(3, 6) * (centers[speakers[i]] + jitter)
            elif nan_inactive:
                embeddings[c, slot] = np.nan
            else:
                embeddings[c, slot] = rng.standard_normal(DIM)
    return embeddings, segmentations


@pytest.fixture(scope="module")
def pyannote_clustering():
    pytest.importorskip("pyannote.audio")
    from pyannote.audio.pipelines import clustering

    return clustering


@pytest.fixture(scope="module")
def plda_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_random_plda(tmp_path_factory.mktemp("plda"))


@pytest.fixture(scope="module")
def plda(plda_files) -> PLDA:
    return PLDA.from_npz(*plda_files)


@pytest.fixture(scope="module")
def ref_plda(pyannote_clustering, plda_files):
    from pyannote.audio.core.plda import PLDA as RefPLDA

    return RefPLDA(*plda_files)


def _ref_vbx(pyannote_clustering, ref_plda):
    ref = pyannote_clustering.VBxClustering(ref_plda)
    ref.instantiate({"threshold": 0.6, "Fa": 0.07, "Fb": 0.8})
    return ref


def _swf(segmentations: np.ndarray):
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    return SlidingWindowFeature(segmentations, SlidingWindow(start=0.0, duration=10.0, step=1.0))


def _pipeline_bounds(num: int | None, lo: int | None, hi: int | None):
    """What pyannote's SpeakerDiarization hands its clustering (set_num_speakers)."""
    from pyannote.audio.pipelines.utils.diarization import set_num_speakers

    return set_num_speakers(num_speakers=num, min_speakers=lo, max_speakers=hi)


def _assert_same_outputs(ours, theirs, atol: float = 1e-10) -> None:
    (hard, soft, centroids), (ref_hard, ref_soft, ref_centroids) = ours, theirs
    assert hard.dtype == ref_hard.dtype
    np.testing.assert_array_equal(hard, ref_hard)
    np.testing.assert_allclose(soft, ref_soft, rtol=0, atol=atol)
    np.testing.assert_allclose(centroids, ref_centroids, rtol=0, atol=atol)


# --------------------------------------------------------------------------- (b) PLDA + VBx


@pytest.mark.parity
def test_plda_matches_pyannote(plda, ref_plda) -> None:
    embeddings, segmentations = _synthetic(1, nan_inactive=True)
    train, _, _ = filter_embeddings(embeddings, segmentations)
    np.testing.assert_allclose(plda.phi, ref_plda.phi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(plda(train), ref_plda(train), rtol=0, atol=1e-10)


@pytest.mark.parity
@pytest.mark.parametrize(
    "nan_inactive, num_global, rare", [(True, 3, 0), (False, 3, 0), (True, 2, 0), (True, 3, 3)]
)
@pytest.mark.parametrize(
    "num, lo, hi",
    [(None, None, None), (2, None, None), (3, None, None), (4, None, None),
     (None, 4, None), (None, None, 2), (None, 2, 4), (None, 3, 3)],
)
def test_vbx_clustering_matches_pyannote(
    pyannote_clustering, plda, ref_plda, nan_inactive, num_global, rare, num, lo, hi
) -> None:
    from pyannote.audio.utils.vbx import cluster_vbx as ref_cluster_vbx

    embeddings, segmentations = _synthetic(2, nan_inactive, num_global=num_global, rare=rare)
    ref = _ref_vbx(pyannote_clustering, ref_plda)
    ref_num, ref_lo, ref_hi = _pipeline_bounds(num, lo, hi)
    theirs = ref(embeddings.copy(), _swf(segmentations), num_clusters=ref_num,
                 min_clusters=ref_lo, max_clusters=ref_hi)

    ours = VBxClustering(plda, VBxParameters(threshold=0.6, Fa=0.07, Fb=0.8))
    t = ours.trace(embeddings, segmentations, num_clusters=num, min_clusters=lo, max_clusters=hi)
    _assert_same_outputs((t["hard_clusters"], t["soft_clusters"], t["centroids"]), theirs)

    # the stages, against pyannote's own functions
    ref_fea = ref.plda(t["train_embeddings"])
    np.testing.assert_allclose(t["plda_features"], ref_fea, rtol=0, atol=1e-10)
    gamma, pi = ref_cluster_vbx(
        t["ahc_clusters"], ref_fea, ref.plda.phi, Fa=0.07, Fb=0.8, maxIters=20
    )
    np.testing.assert_allclose(t["gamma"], gamma, rtol=0, atol=targets.VBX_ATOL)
    np.testing.assert_allclose(t["pi"], pi, rtol=0, atol=targets.VBX_ATOL)
    assert (t["kmeans_clusters"] is not None) == (t["centroids"].shape[0] != (pi > 1e-7).sum())


@pytest.mark.parity
def test_vbx_clustering_synthetic_finds_three_speakers(plda) -> None:
    embeddings, segmentations = _synthetic(2, nan_inactive=True)
    t = VBxClustering(plda).trace(embeddings, segmentations)
    assert t["centroids"].shape[0] == 3 and t["kmeans_clusters"] is None


@pytest.mark.parity
def test_vbx_clustering_single_embedding(pyannote_clustering, plda, ref_plda) -> None:
    embeddings, segmentations = _synthetic(3, nan_inactive=True, num_chunks=4)
    segmentations[1:] = 0
    segmentations[0, :, 1:] = 0
    segmentations[0, :, 0] = 1
    theirs = _ref_vbx(pyannote_clustering, ref_plda)(
        embeddings, _swf(segmentations), min_clusters=1, max_clusters=np.inf
    )
    ours = VBxClustering(plda)(embeddings, segmentations)
    _assert_same_outputs(ours, theirs)


# --------------------------------------------------------------------------- (c) AHC (3.1 style)


@pytest.mark.parity
@pytest.mark.parametrize(
    "method, min_cluster_size, threshold",
    [("centroid", 12, 0.7045654963945799), ("average", 3, 0.5)],
)
@pytest.mark.parametrize(
    "num, lo, hi",
    [(None, None, None), (2, None, None), (4, None, None), (None, 4, 6), (None, 1, 2)],
)
def test_agglomerative_matches_pyannote(
    pyannote_clustering, method, min_cluster_size, threshold, num, lo, hi
) -> None:
    # 3 large clusters + 3 small ones to merge
    embeddings, segmentations = _synthetic(6, nan_inactive=True, rare=3)
    ref = pyannote_clustering.AgglomerativeClustering(metric="cosine")
    ref.instantiate(
        {"method": method, "min_cluster_size": min_cluster_size, "threshold": threshold}
    )
    theirs = ref(
        embeddings.copy(), _swf(segmentations), num_clusters=num, min_clusters=lo, max_clusters=hi
    )
    ours = AgglomerativeClustering(
        AgglomerativeParameters(threshold=threshold, method=method, min_cluster_size=min_cluster_size)
    )
    with np.errstate(invalid="ignore"):
        _assert_same_outputs(ours(embeddings, segmentations, num, lo, hi), theirs)


@pytest.mark.parity
@pytest.mark.parametrize("clustering", ["vbx", "agglomerative"])
def test_one_matrix_linkage_matches_pyannote(
    pyannote_clustering, plda, ref_plda, clustering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The linkage long recordings take (forced here on a short one) gives pyannote's output."""
    monkeypatch.setattr(lean_linkage, "LEAN_LINKAGE_BYTES", 0)
    embeddings, segmentations = _synthetic(6, nan_inactive=True, rare=3)
    if clustering == "vbx":
        ref = _ref_vbx(pyannote_clustering, ref_plda)
        ours = VBxClustering(plda, VBxParameters(threshold=0.6, Fa=0.07, Fb=0.8))
    else:
        params = dict(method="centroid", min_cluster_size=12, threshold=0.7045654963945799)
        ref = pyannote_clustering.AgglomerativeClustering(metric="cosine")
        ref.instantiate(params)
        ours = AgglomerativeClustering(AgglomerativeParameters(**params))
    theirs = ref(embeddings.copy(), _swf(segmentations), min_clusters=1, max_clusters=np.inf)
    with np.errstate(invalid="ignore"):
        _assert_same_outputs(ours(embeddings, segmentations), theirs)


@pytest.mark.parametrize("method", ["vbx", "agglomerative"])
def test_train_chunks_train_the_clustering_alone_and_every_chunk_is_assigned(method: str, plda) -> None:
    """`train_chunks` (sparse embedding mode): the same clustering as on those chunks alone, and
    the other chunks assigned to its centroids."""
    embeddings, segmentations = _synthetic(2, nan_inactive=False)
    keep = np.arange(len(embeddings)) % 2 == 0
    train, chunk_idx, _ = filter_embeddings(embeddings, segmentations, train_chunks=keep)
    assert len(chunk_idx) > 10 and keep[chunk_idx].all()
    np.testing.assert_array_equal(train, filter_embeddings(embeddings[keep], segmentations[keep])[0])
    clustering = (VBxClustering(plda, VBxParameters(threshold=0.6, Fa=0.07, Fb=0.8)) if method == "vbx" else
                  AgglomerativeClustering(AgglomerativeParameters(threshold=0.6)))
    alone = clustering.trace(embeddings[keep], segmentations[keep])
    restricted = clustering.trace(embeddings, segmentations, train_chunks=keep)
    np.testing.assert_allclose(restricted["centroids"], alone["centroids"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(restricted["hard_clusters"][keep], alone["hard_clusters"])
    assert restricted["hard_clusters"].shape == embeddings.shape[:2]
    assert (restricted["hard_clusters"][~keep][segmentations[~keep].sum(axis=1) > 0] >= 0).all()
