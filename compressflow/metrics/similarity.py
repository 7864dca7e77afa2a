"""Representation similarity (ALGORITHMS §4): SVCCA (Raghu et al. 2017) and linear CKA
(Kornblith et al. 2019) between two layers' activations on the same inputs.

Activations come as ``(datapoints, neurons)`` after :func:`as_matrix` (conv maps average-
pooled over H×W, or H×W folded into the datapoints). All arithmetic is float64."""

from __future__ import annotations

from typing import Literal

import numpy as np

from compressflow.errors import InputError

__all__ = ["as_matrix", "cca_correlations", "linear_cka", "svcca"]


def as_matrix(acts: np.ndarray, conv: Literal["pool", "fold"] = "pool") -> np.ndarray:
    """``(N, C, H, W)`` conv maps → ``(N, C)`` (``pool``: mean over H×W) or ``(N·H·W, C)``
    (``fold``: every position a datapoint); ``(N, D)`` is returned as is (float64)."""
    a = np.asarray(acts, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim != 4:
        raise InputError(f"svcca: activations must be (N, D) or (N, C, H, W), got shape {a.shape}")
    if conv == "pool":
        return a.mean(axis=(2, 3))
    if conv == "fold":
        return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
    raise InputError(f"svcca.conv: unknown {conv!r}; choose from pool, fold")


def _reduce(x: np.ndarray, keep: float) -> np.ndarray:
    """Mean-centre and keep the top singular directions: ``keep`` ≥ 1 → that many (at most
    the rank), ``0 < keep < 1`` → the fewest explaining that fraction of the variance."""
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    s = s[s > s[0] * 1e-10] if s.size and s[0] > 0 else s[:0]
    if keep < 1:
        var = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(var, keep) + 1)
    else:
        k = min(int(keep), s.size)
    return u[:, :k] * s[:k]


def cca_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations of two centred ``(datapoints, dims)`` matrices, largest first:
    the singular values of ``Qxᵀ Qy`` for orthonormal bases ``Qx``, ``Qy`` of their column
    spaces (Björck & Golub), clipped to [0, 1]."""
    qx, _ = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 20) -> tuple[float, np.ndarray]:
    """SVCCA similarity of two ``(datapoints, neurons)`` representations of the same inputs.

    Parameters
    ----------
    a, b : array (N, D_a), (N, D_b)
        Same datapoints in the same order.
    keep : float
        SVD directions kept per side (20, Raghu et al.), or a variance fraction in (0, 1).

    Returns
    -------
    (float, array)
        Mean canonical correlation ρ̄ (distance = 1 − ρ̄) and the correlations.

    Raises
    ------
    InputError
        Different numbers of datapoints.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise InputError(f"svcca: the representations cover different datapoints ({a.shape[0]} vs {b.shape[0]}); "
                         f"capture both on the same probe set")
    if not keep > 0:
        raise InputError(f"svcca.keep: must be > 0 (got {keep!r})")
    rho = cca_correlations(_reduce(a, keep), _reduce(b, keep))
    return (float(rho.mean()) if rho.size else 0.0), rho


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA: ``‖Bᵀ A‖²_F / (‖Aᵀ A‖_F ‖Bᵀ B‖_F)`` of the mean-centred representations."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise InputError(f"cka: the representations cover different datapoints ({a.shape[0]} vs {b.shape[0]})")
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else 0.0
