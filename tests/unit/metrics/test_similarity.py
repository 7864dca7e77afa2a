"""SVCCA and linear CKA: the properties Raghu et al. and Kornblith et al. state, and agreement
with a straightforward NumPy transcription of the published SVCCA algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from compressflow.errors import InputError
from compressflow.metrics.similarity import as_matrix, linear_cka, svcca


def reference_svcca(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Raghu et al. 2017 as published: activations as (neurons × datapoints), centred per
    neuron; SVD, keep the top-k directions; CCA via Σaa^{-1/2} Σab Σbb^{-1/2}."""

    def reduce(x):
        x = x.T - x.T.mean(axis=1, keepdims=True)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return np.diag(s[:k]) @ vt[:k]

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(w ** -0.5) @ v.T

    ra, rb = reduce(a), reduce(b)
    m = inv_sqrt(ra @ ra.T) @ (ra @ rb.T) @ inv_sqrt(rb @ rb.T)
    return float(np.linalg.svd(m, compute_uv=False).mean())


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 8))  # shared latent factors
    a = z @ rng.normal(size=(8, 30)) + 0.5 * rng.normal(size=(400, 30))
    b = z @ rng.normal(size=(8, 40)) + 0.5 * rng.normal(size=(400, 40))
    return a, b


def test_identical_representations_give_one(pair):
    a, _ = pair
    assert svcca(a, a)[0] == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-12)


def test_invertible_linear_transform_gives_one():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 12))
    t = rng.normal(size=(12, 12)) + 3 * np.eye(12)  # invertible, not orthogonal
    assert abs(np.linalg.det(t)) > 1e-3
    assert svcca(a, a @ t, keep=20)[0] == pytest.approx(1.0, abs=1e-6)  # 12 neurons ≤ keep: no truncation
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(a, 3.0 * a @ q) == pytest.approx(1.0, abs=1e-9)  # CKA: orthogonal + isotropic scale


def test_independent_random_representations_are_dissimilar():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2000, 20)), rng.normal(size=(2000, 20))
    sim, rho = svcca(a, b)
    assert sim < 0.1 and rho.max() < 0.2
    assert linear_cka(a, b) < 0.05


def test_symmetric_and_matches_the_published_algorithm(pair):
    a, b = pair
    assert svcca(a, b, keep=10)[0] == pytest.approx(svcca(b, a, keep=10)[0], abs=1e-12)
    assert linear_cka(a, b) == pytest.approx(linear_cka(b, a), abs=1e-12)
    for k in (5, 10, 20):
        assert svcca(a, b, keep=k)[0] == pytest.approx(reference_svcca(a, b, k), abs=1e-6)
    related = svcca(a, b, keep=8)[0]
    assert related > 0.8  # they share 8 latent factors


def test_variance_fraction_and_conv_layouts():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 6)) * np.array([10, 5, 1, 0.1, 0.01, 0.001])
    _, rho = svcca(a, a, keep=0.99)
    assert len(rho) == 2  # 10² + 5² = 125 of 126.01 → 99.2 % with two directions
    maps = rng.normal(size=(4, 3, 2, 5))
    assert as_matrix(maps, "pool").shape == (4, 3)
    np.testing.assert_allclose(as_matrix(maps, "pool"), maps.mean(axis=(2, 3)))
    folded = as_matrix(maps, "fold")
    assert folded.shape == (4 * 2 * 5, 3) and folded[1, 2] == maps[0, 2, 0, 1]


def test_mismatched_datapoints_and_bad_keep_are_input_errors():
    a, b = np.zeros((10, 3)), np.zeros((11, 3))
    with pytest.raises(InputError, match=r"different datapoints \(10 vs 11\)"):
        svcca(a, b)
    with pytest.raises(InputError, match=r"svcca\.keep: must be > 0"):
        svcca(a, a, keep=0)
