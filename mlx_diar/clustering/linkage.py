"""Centroid linkage with one condensed distance matrix: scipy's `linkage(X, "centroid")`, lean.

scipy's `linkage` keeps the condensed distance matrix it computes and works on a copy of it:
two copies of n (n - 1) / 2 doubles, ~400 MB for the ~7 000 embeddings that an hour of
conversation clusters. `centroid_linkage` runs the same algorithm (Müllner's generic
clustering algorithm, as scipy's `fast_linkage`: the same nearest-neighbour candidates, the
same binary heap and its tie-breaking, the same Lance-Williams update evaluated in the same
order) in place on the one matrix `pdist` returns: the same linkage matrix bit for bit where
scipy's compiled update does not fuse multiply-adds (x86-64 wheels; elsewhere a height may differ
in its last bit). Below `LEAN_LINKAGE_BYTES` scipy's own `linkage` runs, so short recordings call
exactly what pyannote calls.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist

# condensed matrices up to this size go to scipy's `linkage` (its second copy costs this much)
LEAN_LINKAGE_BYTES = 32 * 2**20


class _Heap:
    """The binary min-heap of scipy's `_structures.pxi`: keys 0..n-1, same sifts, same ties."""

    def __init__(self, values: list[float]):
        self.size = len(values)
        self.values = list(values)
        self.key_by_index = list(range(self.size))
        self.index_by_key = list(range(self.size))
        for i in reversed(range(self.size // 2)):
            self._sift_down(i)

    def get_min(self) -> tuple[int, float]:
        return self.key_by_index[0], self.values[0]

    def remove_min(self) -> None:
        self._swap(0, self.size - 1)
        self.size -= 1
        self._sift_down(0)

    def change_value(self, key: int, value: float) -> None:
        index = self.index_by_key[key]
        old = self.values[index]
        self.values[index] = value
        if value < old:
            self._sift_up(index)
        else:
            self._sift_down(index)

    def _sift_up(self, index: int) -> None:
        values = self.values
        parent = (index - 1) >> 1
        while index > 0 and values[parent] > values[index]:
            self._swap(index, parent)
            index = parent
            parent = (index - 1) >> 1

    def _sift_down(self, index: int) -> None:
        values = self.values
        child = 2 * index + 1
        while child < self.size:
            if child + 1 < self.size and values[child + 1] < values[child]:
                child += 1
            if values[index] > values[child]:
                self._swap(index, child)
                index = child
                child = 2 * index + 1
            else:
                break

    def _swap(self, i: int, j: int) -> None:
        values, keys, where = self.values, self.key_by_index, self.index_by_key
        values[i], values[j] = values[j], values[i]
        key_i, key_j = keys[i], keys[j]
        keys[i], keys[j] = key_j, key_i
        where[key_i], where[key_j] = j, i


def centroid_linkage(observations: np.ndarray) -> np.ndarray:
    """`scipy.cluster.hierarchy.linkage(observations, method="centroid")`, one distance matrix.

    Same linkage matrix as scipy's (same merges, heights and ties); raises scipy's ValueError
    when a distance is not finite.
    """
    X = np.asarray(observations, dtype=np.float64, order="C")
    n = X.shape[0]
    if n * (n - 1) // 2 * 8 <= LEAN_LINKAGE_BYTES:
        return linkage(X, method="centroid", metric="euclidean")
    return _lean_centroid(X)


def _lean_centroid(X: np.ndarray) -> np.ndarray:
    """pdist, its finiteness checked in blocks, then the generic algorithm in place."""
    n = X.shape[0]
    D = pdist(X, "euclidean")
    for start in range(0, D.shape[0], 1 << 22):
        if not np.isfinite(D[start : start + (1 << 22)]).all():
            raise ValueError("The condensed distance matrix must contain only finite values.")
    return _generic_centroid(D, n)


def _generic_centroid(D: np.ndarray, n: int) -> np.ndarray:
    """scipy's `fast_linkage` for the centroid method, updating the condensed `D` in place."""
    arange = np.arange(n, dtype=np.int64)
    # D[offset[i] + j] is the distance between i and j > i
    offset = n * arange - arange * (arange + 1) // 2 - arange - 1
    size = np.ones(n, dtype=np.int64)
    cluster_id = np.arange(n, dtype=np.int64)
    Z = np.empty((n - 1, 4))

    def pair_index(z: np.ndarray, y: int) -> np.ndarray:
        return np.where(z < y, offset[z] + y, offset[y] + z)

    def find_min_dist(x: int) -> tuple[int, float]:
        row = D[offset[x] + x + 1 : offset[x] + n].copy()
        row[(size[x + 1 :] == 0) | np.isnan(row)] = np.inf
        j = int(np.argmin(row))
        if not row[j] < np.inf:
            raise ValueError(
                "find_min_dist cannot find any neighbors closer than inf away. "
                "Check that distances contain no negative/infinite/NaN entries. "
            )
        return x + 1 + j, float(row[j])

    neighbor = np.empty(n - 1, dtype=np.int64)
    min_dist = np.empty(n - 1)
    for x in range(n - 1):
        neighbor[x], min_dist[x] = find_min_dist(x)
    heap = _Heap(min_dist.tolist())

    x = y = 0
    dist = 0.0
    with np.errstate(invalid="ignore"):
        for k in range(n - 1):
            for _ in range(n - k):
                x, dist = heap.get_min()
                y = int(neighbor[x])
                if dist == D[offset[x] + y]:
                    break
                y, dist = find_min_dist(x)
                neighbor[x], min_dist[x] = y, dist
                heap.change_value(x, dist)
            heap.remove_min()

            nx, ny = int(size[x]), int(size[y])
            Z[k] = min(cluster_id[x], cluster_id[y]), max(cluster_id[x], cluster_id[y]), dist, nx + ny
            size[x] = 0
            size[y] = nx + ny
            cluster_id[y] = n + k

            # Lance-Williams update, term by term as scipy's `_centroid`
            z = np.flatnonzero(size)
            z = z[z != y]
            zy = pair_index(z, y)
            d_xi, d_yi = D[pair_index(z, x)], D[zy]
            cross = (nx * ny * dist * dist) / (nx + ny)
            D[zy] = np.sqrt((((nx * d_xi * d_xi) + (ny * d_yi * d_yi)) - cross) / (nx + ny))

            # candidates that pointed at x now point at y; lower bounds from the new distances
            candidates = neighbor[:x]
            candidates[(candidates == x) & (size[:x] > 0)] = y
            below = z < y
            w, d = z[below], D[zy[below]]
            closer = d < min_dist[w]
            w, d = w[closer], d[closer]
            neighbor[w], min_dist[w] = y, d
            for key, value in zip(w.tolist(), d.tolist()):
                heap.change_value(key, value)
            if y < n - 1:
                neighbor[y], min_dist[y] = find_min_dist(y)
                heap.change_value(y, float(min_dist[y]))
    return Z
