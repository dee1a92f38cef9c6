"""KDE regime diagnostics (divergent.analysis.kde_regimes) against independent references.

* the participation ratio against explicitly formed kernel weights (numpy softmax);
* the large-d thresholds against a numerical computation of the same large-deviation
  quantities (Gauss–Hermite quadrature for the log-moment generating function, numerical
  Legendre transform for the Cramér rate), and the annealed branch of the KL curve against
  ``torch.distributions``' closed-form Normal KL.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from divergent.analysis.kde_regimes import (
    GaussianKDERegimes,
    gaussian_kde_kl_per_dim,
    gaussian_kde_regimes,
    kde_participation_ratio,
)


def _ref_y2(x: np.ndarray, data: np.ndarray, h: float) -> np.ndarray:
    logw = -cdist(x, data, "sqeuclidean") / (2 * h * h)
    logw -= logsumexp(logw, axis=1, keepdims=True)
    return np.exp(2 * logw).sum(1)


@pytest.mark.parametrize("d", [1, 5, 30])
def test_participation_ratio_matches_explicit_weights(d: int) -> None:
    rng = np.random.default_rng(d)
    data = rng.normal(size=(300, d))
    x = rng.normal(size=(50, d))
    hs = np.array([0.05, 0.3, 1.0, 4.0])
    got = kde_participation_ratio(x, data, hs).numpy()
    assert got.shape == (4, 50)
    for i, h in enumerate(hs):
        np.testing.assert_allclose(got[i], _ref_y2(x, data, h), rtol=1e-9, atol=1e-12)
    single = kde_participation_ratio(torch.from_numpy(x), torch.from_numpy(data), 1.0)
    np.testing.assert_allclose(single.numpy(), got[2], rtol=1e-12)


def test_participation_ratio_limits() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 3))
    x = rng.normal(size=(20, 3))
    wide = kde_participation_ratio(x, data, 1e3)
    narrow = kde_participation_ratio(x, data, 1e-3)
    np.testing.assert_allclose(wide.numpy(), 1 / 200, rtol=1e-3)  # uniform weights
    np.testing.assert_allclose(narrow.numpy(), 1.0, atol=1e-9)  # the nearest point only


def test_participation_ratio_rejects_bad_bandwidths() -> None:
    x = np.zeros((2, 1))
    for bad in ("scott", -1.0, [0.5, 0.0], float("nan")):
        with pytest.raises(ValueError, match="bandwidth"):
            kde_participation_ratio(x, x, bad)


# --------------------------------------------------------------------------- large-d theory
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)  # ∫ f(x) e^{-x²/2} dx
_GH_W = _GH_W / _GH_W.sum()


def _log_mgf_numeric(lam: float) -> float:
    """E_x log E_y exp(−λ (x − y)²), x, y ~ N(0, 1), both by Gauss–Hermite quadrature."""
    inner = np.exp(-lam * (_GH_X[:, None] - _GH_X[None, :]) ** 2) @ _GH_W
    return float(_GH_W @ np.log(inner))


def _rate_numeric(e: float) -> tuple[float, float]:
    """Cramér rate I(e) = sup_λ≥0 [−λ e − Λ(λ)] and its maximiser, numerically."""
    res = minimize_scalar(
        lambda s: math.exp(s) * e + _log_mgf_numeric(math.exp(s)),
        bounds=(-8, 6),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return -float(res.fun), math.exp(res.x)


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.3, 0.5])
def test_thresholds_match_a_numerical_large_deviation_computation(alpha: float) -> None:
    r = gaussian_kde_regimes(alpha)
    assert isinstance(r, GaussianKDERegimes)
    rate, lam = _rate_numeric(r.e_min)
    assert rate == pytest.approx(alpha, rel=1e-5)  # I(e_min) = α
    assert lam == pytest.approx(1 / (2 * r.h_g**2), rel=1e-3)  # slope at e_min = c_G
    assert r.h_clt == pytest.approx(math.sqrt(2) * r.h_g, rel=1e-12)
    assert r.h_kl**2 == pytest.approx(r.e_min, rel=1e-12)
    assert r.h_kl < r.h_g < r.h_clt
    assert 0 < r.participation_at_h_kl < 1
    assert r.participation_at_h_kl == pytest.approx(1 - lam * 2 * r.h_kl**2, rel=1e-3)


def test_thresholds_decrease_with_alpha() -> None:
    rs = [gaussian_kde_regimes(a) for a in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)]
    for key in ("h_kl", "h_g", "h_clt", "participation_at_h_kl", "kl_per_dim_at_h_kl"):
        vals = [getattr(r, key) for r in rs]
        assert all(a > b for a, b in itertools.pairwise(vals)), key


def test_kl_curve_annealed_branch_is_the_normal_kl_and_minimum_is_h_kl() -> None:
    alpha = 0.25
    r = gaussian_kde_regimes(alpha)
    hs = np.geomspace(r.h_g * 1.001, 5.0, 30)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(0.0, 1.0),
        torch.distributions.Normal(0.0, torch.from_numpy(np.sqrt(1 + hs**2))),
    ).numpy()
    np.testing.assert_allclose(gaussian_kde_kl_per_dim(hs, alpha), ref, rtol=1e-10)
    grid = np.geomspace(0.2, 3.0, 20001)
    curve = gaussian_kde_kl_per_dim(grid, alpha)
    assert grid[curve.argmin()] == pytest.approx(r.h_kl, rel=1e-3)
    assert curve.min() == pytest.approx(r.kl_per_dim_at_h_kl, abs=1e-9)
    # continuous at h_G
    left, right = gaussian_kde_kl_per_dim([r.h_g * (1 - 1e-9), r.h_g * (1 + 1e-9)], alpha)
    assert left == pytest.approx(right, abs=1e-8)


def test_invalid_alpha_and_h() -> None:
    for bad in (0.0, -1.0, float("inf"), "0.2", True):
        with pytest.raises(ValueError, match="alpha"):
            gaussian_kde_regimes(bad)
    with pytest.raises(ValueError, match="`h`"):
        gaussian_kde_kl_per_dim([0.5, -1.0], 0.2)
