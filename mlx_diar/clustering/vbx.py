"""Mirrors pyannote.audio.utils.vbx: `l2_norm`, `vbx_setup`, `VBx` (as `vbx`) and `cluster_vbx`.

NumPy/SciPy in float64, as pyannote computes them.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import eigh
from scipy.special import logsumexp, softmax


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
