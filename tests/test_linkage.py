"""`centroid_linkage` against scipy's own `linkage(X, "centroid")`: same matrix, one copy of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage

from mlx_diar.clustering import linkage as lean


def _points(seed: int) -> np.ndarray:
    """Random sets with what makes linkage fragile: exact ties, duplicates, tight clusters."""
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(2, 150)), int(rng.integers(1, 8))
    X = rng.normal(size=(n, dim))
    if seed % 3 == 0:
        X = np.round(X, 1)  # many equal distances
    if seed % 4 == 0:
        X[rng.integers(0, n, n // 2)] = X[0]  # duplicates: zero distances, ties at 0
    if seed % 5 == 0:
        centers = rng.normal(size=(3, dim))
        X = centers[rng.integers(0, 3, n)] + 0.05 * X
    if seed % 7 == 0:
        X = rng.integers(0, 4, size=(n, 2)).astype(float)  # a lattice: ties everywhere
    return X


@pytest.mark.parametrize("seed", range(60))
def test_same_linkage_matrix_as_scipy(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "LEAN_LINKAGE_BYTES", 0)  # the lean algorithm even for tiny sets
    X = _points(seed)
    np.testing.assert_array_equal(lean.centroid_linkage(X), linkage(X, method="centroid"))


def test_float32_embeddings_as_pyannote_passes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "LEAN_LINKAGE_BYTES", 0)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 256)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_array_equal(lean.centroid_linkage(X), linkage(X, method="centroid"))


def test_non_finite_raises_like_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    X = np.random.default_rng(0).normal(size=(20, 4))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        linkage(X, method="centroid")
    monkeypatch.setattr(lean, "LEAN_LINKAGE_BYTES", 0)
    with pytest.raises(ValueError, match="finite"):
        lean.centroid_linkage(X)


_PEAK = """
import sys
import numpy as np
from scipy.cluster.hierarchy import linkage
from mlx_diar.clustering.linkage import _lean_centroid

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

X = np.random.default_rng(3).normal(size=(int(sys.argv[2]), 32))
before = status("VmRSS")
_lean_centroid(X) if sys.argv[1] == "lean" else linkage(X, method="centroid")
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_one_distance_matrix_where_scipy_holds_two() -> None:
    n = 2600  # a 27 MB condensed matrix, ~1 s per run
    condensed = n * (n - 1) // 2 * 8

    def peak(which: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _PEAK, which, str(n)], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    assert peak("scipy") > 1.8 * condensed  # what the test guards against
    assert peak("lean") < 1.3 * condensed


def test_scipy_runs_below_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(lean, "linkage", lambda *a, **k: calls.append(a) or linkage(*a, **k))
    X = np.random.default_rng(1).normal(size=(50, 3))
    lean.centroid_linkage(X)
    assert len(calls) == 1
    monkeypatch.setattr(lean, "LEAN_LINKAGE_BYTES", 0)
    lean.centroid_linkage(X)
    assert len(calls) == 1
