"""Mirrors pyannote.audio.core.plda.PLDA: x-vector transform + PLDA projection, in NumPy (float64)."""

from __future__ import annotations

from os import PathLike

import numpy as np

from mlx_diar.clustering.vbx import l2_norm, vbx_setup


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
