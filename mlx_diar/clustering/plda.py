"""Mirrors pyannote.audio.core.plda.PLDA: x-vector transform + PLDA projection, in NumPy (float64)."""

from __future__ import annotations

import zipfile
from os import PathLike
from pathlib import Path
from typing import Mapping

import numpy as np

from mlx_diar.clustering.vbx import l2_norm, vbx_setup
from mlx_diar.errors import CheckpointError

# community-1's PLDA files and the arrays each holds
PLDA_NPZ = {"xvec_transform.npz": ("mean1", "mean2", "lda"), "plda.npz": ("mu", "tr", "psi")}


def check_plda_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The six PLDA arrays as float64; ValueError naming the array when one is missing, not a finite
    real array, or shaped unlike the others: mean1 (D,), lda (D, L), mean2, mu, psi (L,), tr (L, L)."""
    out = {}
    for name in (name for names in PLDA_NPZ.values() for name in names):
        if name not in arrays:
            raise ValueError(f"array {name!r} is missing")
        value = np.asarray(arrays[name])
        if value.dtype.kind not in "fiu":
            raise ValueError(f"array {name!r} holds {value.dtype}, not numbers")
        out[name] = value.astype(np.float64)
        if not np.isfinite(out[name]).all():
            raise ValueError(f"array {name!r} holds NaN or infinite values")
    if out["lda"].ndim != 2:
        raise ValueError(f"array 'lda' has shape {out['lda'].shape}, expected 2 dimensions")
    dim, lda_dim = out["lda"].shape
    expected = {"mean1": (dim,), "mean2": (lda_dim,), "mu": (lda_dim,), "psi": (lda_dim,), "tr": (lda_dim, lda_dim)}
    for name, shape in expected.items():
        if out[name].shape != shape:
            raise ValueError(f"array {name!r} has shape {out[name].shape}, expected {shape} (lda is {dim}x{lda_dim})")
    return out


def _read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in names if k not in data.files]
            if missing:
                raise CheckpointError(f"{path}: missing arrays {missing}")
            return {k: data[k] for k in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not an npz, object arrays (pickle)
        raise CheckpointError(f"{path}: cannot read PLDA arrays ({' '.join(str(e).split())})") from None


def read_plda_npz(transform_npz: str | PathLike, plda_npz: str | PathLike) -> dict[str, np.ndarray]:
    """The arrays of an xvec_transform.npz and a plda.npz, read without pickle and checked
    (`check_plda_arrays`); CheckpointError naming the file and the problem."""
    arrays: dict[str, np.ndarray] = {}
    for path, names in zip((Path(transform_npz), Path(plda_npz)), PLDA_NPZ.values()):
        arrays.update(_read_npz(path, names))
    try:
        return check_plda_arrays(arrays)
    except ValueError as e:
        raise CheckpointError(f"{transform_npz} + {plda_npz}: {e}") from None


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
        """Load from `xvec_transform.npz` and `plda.npz` (as `vbx_setup` reads them), checked."""
        a = read_plda_npz(transform_npz, plda_npz)
        return cls(a["mean1"], a["mean2"], a["lda"], a["mu"], a["tr"], a["psi"], lda_dimension)

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
