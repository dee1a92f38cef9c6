"""Gaussian KDE: log-density vs scikit-learn, leave-one-out vs a naive loop, bandwidth rules vs
scipy, likelihood cross-validation vs a brute-force grid, and the plug-in KL vs its Gaussian
closed-form limit at fixed bandwidth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from scipy.stats import gaussian_kde
from sklearn.neighbors import KernelDensity

import divergent.samples.kde as kde_mod
from divergent.samples.kde import kde_bandwidth, kde_kl, kde_log_density


def naive_loo(x: np.ndarray, h: float) -> np.ndarray:
    n, d = x.shape
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return (
        logsumexp(-d2 / (2 * h * h), axis=1)
        - math.log(n - 1)
        - d * math.log(h)
        - 0.5 * d * math.log(2 * math.pi)
    )


@pytest.mark.parametrize("h", [0.05, 0.4, 3.0])
def test_log_density_matches_references(h):
    rng = np.random.default_rng(0)
    data, q = rng.normal(size=(400, 3)), rng.normal(size=(50, 3)) * 2
    got = kde_log_density(q, data, h)
    assert got.dtype == torch.float64 and got.shape == (50,)
    # exact reference: dense log-sum-exp
    ref = (
        logsumexp(-cdist(q, data, "sqeuclidean") / (2 * h * h), axis=1)
        - math.log(400)
        - 3 * math.log(h)
        - 1.5 * math.log(2 * math.pi)
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-11)
    # scikit-learn's tree KDE is only accurate where the density is not tiny: compare there
    sk = KernelDensity(bandwidth=h).fit(data).score_samples(q)
    ok = ref > -20
    np.testing.assert_allclose(got.numpy()[ok], sk[ok], rtol=1e-6)


def test_leave_one_out_blocked_and_many_bandwidths(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 2))
    hs = np.array([0.1, 0.5, 2.0])
    many = kde_log_density(x, x, hs, leave_one_out=True)
    assert many.shape == (3, 60)
    for row, h in zip(many.numpy(), hs):
        np.testing.assert_allclose(row, naive_loo(x, h), rtol=1e-11)
    monkeypatch.setattr(kde_mod, "_BLOCK_ELEMENTS", 7 * 60)  # 7 rows per block, offsets matter
    torch.testing.assert_close(
        kde_log_density(x, x, hs, leave_one_out=True), many, rtol=1e-12, atol=1e-12
    )


def test_tiny_bandwidth_no_underflow():
    x = np.array([[0.0], [1.0], [3.0]])
    lp = kde_log_density(np.array([[0.5]]), x, 1e-3)
    # exact: only the two points at distance 0.5 matter: log(2 K(500)/(3h)), K(u) = φ(u)
    expected = math.log(2 / 3) - 0.5 * 0.5**2 / 1e-6 - math.log(1e-3) - 0.5 * math.log(2 * math.pi)
    assert float(lp[0]) == pytest.approx(expected, rel=1e-12)


def test_gradcheck_through_points_and_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    data = torch.randn(7, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kde_log_density(a, b, 0.7), (x, data))
    assert torch.autograd.gradcheck(
        lambda a: kde_log_density(a, a, 0.7, leave_one_out=True), (data,)
    )


def test_scott_and_silverman_match_scipy_factors():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(700, 3)) * np.array([1.0, 1.5, 0.7])
    sigma = math.sqrt(np.var(x, axis=0, ddof=1).mean())
    kd = gaussian_kde(x.T)
    assert kde_bandwidth(x, "scott") == pytest.approx(sigma * kd.scotts_factor(), rel=1e-12)
    assert kde_bandwidth(x, "silverman") == pytest.approx(sigma * kd.silverman_factor(), rel=1e-12)


@pytest.mark.parametrize("d", [1, 4])
def test_lcv_maximises_leave_one_out_likelihood(d, monkeypatch):
    rng = np.random.default_rng(3 + d)
    x = rng.standard_t(df=5, size=(300, d))
    h = kde_bandwidth(x, "lcv")
    grid = h * np.exp(np.linspace(-0.3, 0.3, 61))  # brute force around the answer
    ll = np.array([naive_loo(x, g).mean() for g in grid])
    best = grid[int(np.argmax(ll))]
    assert naive_loo(x, h).mean() >= ll.max() - 1e-10
    assert abs(math.log(h / best)) <= 0.6 / 60 + 1e-9  # within one grid step
    assert 0.3 < ll.argmax() / 60 < 0.7  # an interior maximum: the grid really brackets it
    # uncached path (distances recomputed per call) gives the same answer
    monkeypatch.setattr(kde_mod, "_BLOCK_ELEMENTS", 50 * 300)
    assert kde_bandwidth(x, "lcv") == pytest.approx(h, rel=1e-6)


def test_lcv_rejects_duplicates():
    x = np.repeat(np.random.default_rng(4).normal(size=(40, 2)), 2, axis=0)
    with pytest.raises(ValueError, match="duplicate"):
        kde_bandwidth(x, "lcv")


def _gauss_expected_log(mu: float, s2: float, a: float, v: float) -> float:
    """E log N(X; a, v) for X ~ N(mu, s2)."""
    return -0.5 * math.log(2 * math.pi * v) - ((mu - a) ** 2 + s2) / (2 * v)


def test_kde_kl_fixed_bandwidth_converges_to_smoothed_closed_form():
    # With fixed h the estimate tends to E_P[log (p*K_hx)(X) − log (q*K_hy)(X)], and for
    # Gaussians p*K_h = N(μ, σ² + h²). The KDE-of-log (Jensen) bias is O(1/(n h)) ≈ 5e-4 here;
    # the tolerance is 4 SE of the mean of the n per-point terms (SD/√n ≈ 0.01).
    rng = np.random.default_rng(5)
    n, hx, hy = 4000, 0.3, 0.4
    x = rng.normal(0.0, 1.0, size=(n, 1))
    y = rng.normal(0.5, 1.5, size=(n, 1))
    truth = _gauss_expected_log(0, 1, 0, 1 + hx**2) - _gauss_expected_log(0, 1, 0.5, 2.25 + hy**2)
    est = float(kde_kl(x, y, (hx, hy)))
    terms = (kde_log_density(x, x, hx, leave_one_out=True) - kde_log_density(x, y, hy)).numpy()
    assert est == pytest.approx(terms.mean(), rel=1e-12)
    assert abs(est - truth) <= 4 * terms.std(ddof=1) / math.sqrt(n), (est, truth)


def test_kde_kl_rules_wiring_and_identity():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 2)), rng.normal(0.3, 1.0, size=(250, 2))
    hx, hy = kde_bandwidth(x), kde_bandwidth(y)
    assert float(kde_kl(x, y)) == pytest.approx(float(kde_kl(x, y, (hx, hy))), rel=1e-12)
    assert float(kde_kl(x, y, "scott")) == pytest.approx(
        float(kde_kl(x, y, (kde_bandwidth(x, "scott"), kde_bandwidth(y, "scott")))), rel=1e-12
    )
    # KL(x‖x) with one h: LOO p̂ vs full p̂ differ only by the self-term,
    # n p̂(x_i) = (n − 1) p̂₋ᵢ(x_i) + K_h(0), K_h(0) = (2π h²)^{-d/2}
    h, n = 0.5, 300
    loo = kde_log_density(x, x, h, leave_one_out=True).numpy()
    k0 = (2 * math.pi * h * h) ** -1.0
    expected = np.mean(-np.log((n - 1) / n + k0 / (n * np.exp(loo))))
    assert float(kde_kl(x, x, h)) == pytest.approx(expected, rel=1e-10)


def test_errors_name_the_argument():
    x = np.random.default_rng(7).normal(size=(20, 2))
    with pytest.raises(ValueError, match="`bandwidth`"):
        kde_log_density(x, x, -1.0)
    with pytest.raises(ValueError, match="`bandwidth`"):
        kde_log_density(x, x, [0.1, -2.0])
    with pytest.raises(ValueError, match="`bandwidth` 'cv' is not a bandwidth rule"):
        kde_log_density(x, x, "cv")
    with pytest.raises(ValueError, match="`rule`"):
        kde_bandwidth(x, "cv")
    with pytest.raises(ValueError, match="leave_one_out"):
        kde_log_density(x[:5], x, 0.3, leave_one_out=True)
    with pytest.raises(ValueError, match="same dimension"):
        kde_kl(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match="`bandwidth`"):
        kde_kl(x, x, (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="`grid_size`"):
        kde_bandwidth(x, "lcv", grid_size=2)
    with pytest.raises(ValueError, match="zero variance"):
        kde_bandwidth(np.ones((5, 2)), "scott")


def test_unknown_bandwidth_name_lists_the_allowed_ones():
    """Issue 8 §1: a clear error listing the allowed names (and a suggestion)."""
    x = np.random.default_rng(8).normal(size=(30, 1))
    for call in (
        lambda: kde_kl(x, x + 1, "silvermann"),
        lambda: kde_kl(x, x + 1, (0.3, "scot")),
        lambda: kde_log_density(x, x, "silvermann"),
    ):
        with pytest.raises(
            ValueError,
            match=r"`bandwidth` .* allowed names: 'scott', "
            r"'silverman', 'lcv', or a number h > 0",
        ):
            call()
    with pytest.raises(ValueError, match="Did you mean 'silverman'"):
        kde_kl(x, x + 1, "Silvermann")
    for bad in (0.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="`bandwidth` must be a finite number > 0"):
            kde_kl(x, x + 1, bad)


def test_kde_kl_returns_a_tensor():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(100, 2)), rng.normal(0.5, 1.0, size=(80, 2))
    out = kde_kl(x, y, 0.5)
    assert isinstance(out, torch.Tensor) and out.dim() == 0 and out.dtype == torch.float64
    out32 = kde_kl(torch.from_numpy(x).float(), torch.from_numpy(y).float(), 0.5)
    assert out32.dtype == torch.float32
    assert float(out32) == pytest.approx(float(out), rel=1e-6)
