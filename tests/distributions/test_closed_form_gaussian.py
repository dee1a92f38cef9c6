"""closed_form between Gaussians (all kinds) and Normal <-> Laplace.

References: ``scipy.integrate.quad`` of the defining integrals (1-D), Monte Carlo with fixed
seeds (4 standard errors, where the estimator's variance is finite), torch's ``kl_divergence``,
``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _distributions_refs import quad, quad_divergence, t
from scipy import stats
from torch.distributions import (
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

import divergent

F64 = torch.float64


GAUSS_CASES = [
    ("kl", {}),
    ("reverse_kl", {}),
    ("jeffreys", {}),
    ("renyi", {"order": 0.3}),
    ("renyi", {"order": 2.5}),
    ("alpha", {"alpha": 0.3}),
    ("alpha", {"alpha": 1.7}),
    ("alpha", {"alpha": -0.6}),
    ("hellinger", {}),
    ("bhattacharyya", {}),
    ("pearson_chi2", {}),
    ("neyman_chi2", {}),
]


@pytest.mark.parametrize(("name", "params"), GAUSS_CASES)
def test_univariate_gaussian_matches_quadrature(name: str, params: dict) -> None:
    # σ_Q²/σ_P² ∈ (0.6, 2): every integral here is finite (χ² both ways, Rényi 2.5, α −0.6)
    mp, sp, mq, sq = 0.3, 0.9, -0.4, 1.1
    ref = quad_divergence(
        name,
        lambda x: stats.norm.logpdf(x, mp, sp),
        lambda x: stats.norm.logpdf(x, mq, sq),
        params,
    )
    got = divergent.closed_form(name, Normal(t(mp), t(sp)), Normal(t(mq), t(sq)), **params)
    assert got.kind == "exact" and got.method == "gaussian"
    assert float(got.value) == pytest.approx(ref, rel=1e-8, abs=1e-12)
    assert float(got.stderr) == 0.0


def test_gaussian_infinite_where_the_integral_diverges() -> None:
    """∫p²/q < ∞ iff 2σ_Q² > σ_P² (M = 2Σ_Q − Σ_P ≻ 0): +∞ on the other side."""
    p = Normal(t(0.0), t(1.0))
    narrow, wide = Normal(t(0.0), t(0.70)), Normal(t(0.0), t(0.71))  # 2·0.49 < 1 < 2·0.5041
    assert math.isinf(float(divergent.closed_form("pearson_chi2", p, narrow).value))
    assert math.isfinite(float(divergent.closed_form("pearson_chi2", p, wide).value))
    assert math.isinf(float(divergent.closed_form("renyi", p, narrow, order=2.0).value))
    assert math.isinf(float(divergent.closed_form("alpha", p, narrow, alpha=2.0).value))
    # Neyman χ² = ∫q²/p < ∞ iff 2σ_P² > σ_Q²
    assert math.isinf(float(divergent.closed_form("neyman_chi2", p, Normal(t(0.0), t(1.42))).value))
    assert math.isfinite(
        float(divergent.closed_form("neyman_chi2", p, Normal(t(0.0), t(1.41))).value)
    )
    # multivariate: one bad direction is enough
    pm = MultivariateNormal(t([0.0, 0.0]), t([[1.0, 0.0], [0.0, 1.0]]))
    qm = MultivariateNormal(t([0.0, 0.0]), t([[2.0, 0.0], [0.0, 0.4]]))
    assert math.isinf(float(divergent.closed_form("pearson_chi2", pm, qm).value))


def test_gaussian_identities() -> None:
    p = MultivariateNormal(
        t([0.1, -0.3, 0.5]), t([[1.0, 0.2, 0.0], [0.2, 0.8, 0.1], [0.0, 0.1, 1.5]])
    )
    q = MultivariateNormal(
        t([0.4, 0.0, -0.2]), t([[1.2, -0.1, 0.1], [-0.1, 1.0, 0.0], [0.1, 0.0, 0.9]])
    )
    cf = divergent.closed_form
    kl = float(cf("kl", p, q).value)
    assert kl == pytest.approx(float(kl_divergence(p, q)), rel=1e-12)
    assert float(cf("reverse_kl", p, q).value) == pytest.approx(
        float(kl_divergence(q, p)), rel=1e-12
    )
    assert float(cf("renyi", p, q, order=1.0).value) == pytest.approx(kl, rel=1e-12)
    assert float(cf("alpha", p, q, alpha=1.0).value) == pytest.approx(kl, rel=1e-12)
    assert float(cf("renyi", p, q, order=1 - 1e-6).value) == pytest.approx(kl, rel=1e-5)
    assert float(cf("renyi", p, q, order=0.0).value) == 0.0
    assert float(cf("alpha", p, q, alpha=0.5).value) == pytest.approx(
        4 * float(cf("hellinger", p, q).value), rel=1e-12
    )
    assert float(cf("renyi", p, q, order=0.5).value) == pytest.approx(
        2 * float(cf("bhattacharyya", p, q).value), rel=1e-12
    )
    assert float(cf("alpha", p, q, alpha=2.0).value) == pytest.approx(
        0.5 * float(cf("pearson_chi2", p, q).value), rel=1e-12
    )
    assert float(cf("neyman_chi2", p, q).value) == pytest.approx(
        float(cf("pearson_chi2", q, p).value), rel=1e-12
    )


@pytest.mark.parametrize(("name", "params"), [c for c in GAUSS_CASES if c[0] != "jeffreys"])
def test_diagonal_kinds_agree_with_full_covariance(name: str, params: dict) -> None:
    """Independent(Normal) (elementwise code) = MultivariateNormal with diagonal Σ (matrix code)."""
    loc_p, sd_p = t([[0.2, -1.0], [0.0, 0.5]]), t([[1.0, 0.7], [1.2, 0.9]])
    loc_q, sd_q = t([[0.5, 0.3], [-0.2, 0.1]]), t([[1.3, 1.1], [1.4, 1.0]])
    diag = divergent.closed_form(
        name, Independent(Normal(loc_p, sd_p), 1), Independent(Normal(loc_q, sd_q), 1), **params
    )
    full = divergent.closed_form(
        name,
        MultivariateNormal(loc_p, torch.diag_embed(sd_p**2)),
        MultivariateNormal(loc_q, torch.diag_embed(sd_q**2)),
        **params,
    )
    mixed = divergent.closed_form(
        name,
        Independent(Normal(loc_p, sd_p), 1),
        MultivariateNormal(loc_q, torch.diag_embed(sd_q**2)),
        **params,
    )
    assert diag.value.shape == (2,)
    torch.testing.assert_close(diag.value, full.value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixed.value, full.value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kl", {}),
        ("reverse_kl", {}),
        ("hellinger", {}),
        ("bhattacharyya", {}),
        ("renyi", {"order": 0.3}),
        ("alpha", {"alpha": 0.6}),
        ("pearson_chi2", {}),
    ],
)
def test_multivariate_gaussian_matches_monte_carlo(name: str, params: dict) -> None:
    p = MultivariateNormal(t([0.0, 1.0]), t([[1.0, 0.3], [0.3, 0.8]]))
    # Q wide (3Σ_Q − 2Σ_P ≻ 0) so the Monte Carlo estimators have finite variance
    q = MultivariateNormal(t([0.4, 0.5]), t([[2.5, -0.2], [-0.2, 2.0]]))
    exact = divergent.closed_form(name, p, q, **params)
    mc = divergent.closed_form(name, p, q, method="mc", seed=1, num_samples=200_000, **params)
    assert mc.kind == "monte_carlo" and float(mc.stderr) > 0
    assert abs(float(exact.value) - float(mc.value)) <= 4 * float(mc.stderr)


def test_gaussian_closed_forms_are_differentiable() -> None:
    def fn(mp: torch.Tensor, sp: torch.Tensor, mq: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        p = MultivariateNormal(mp, scale_tril=torch.diag_embed(sp))
        q = MultivariateNormal(mq, scale_tril=torch.diag_embed(sq))
        return divergent.closed_form("renyi", p, q, order=0.7).value

    args = (t([0.1, 0.2]), t([1.0, 0.8]), t([0.3, -0.1]), t([1.2, 1.1]))
    assert torch.autograd.gradcheck(fn, tuple(a.requires_grad_(True) for a in args))


# --------------------------------------------------------------------------------------------
# Normal ↔ Laplace
# --------------------------------------------------------------------------------------------
NL_PARAMS = [
    (0.0, 1.0, 0.0, 1.0),
    (0.3, 0.5, -1.0, 2.0),
    (2.0, 1.5, 0.5, 0.4),
    (-1.0, 0.2, 1.0, 1.0),
]


@pytest.mark.parametrize(("mu", "sigma", "m", "b"), NL_PARAMS)
def test_normal_laplace_matches_quadrature_and_torch(
    mu: float, sigma: float, m: float, b: float
) -> None:
    lp = lambda x: stats.norm.logpdf(x, mu, sigma)  # noqa: E731
    lq = lambda x: stats.laplace.logpdf(x, m, b)  # noqa: E731
    lim = 60.0  # finite range: both densities are < e^{-150} beyond
    kl_nl = sum(
        quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), lo, hi)
        for lo, hi in ((-lim, m), (m, lim))
    )
    # the Laplace density has a kink at m: split the integral there
    kl_ln = sum(
        quad(lambda x: math.exp(lq(x)) * (lq(x) - lp(x)), lo, hi)
        for lo, hi in ((-lim, m), (m, lim))
    )
    normal, laplace = Normal(t(mu), t(sigma)), Laplace(t(m), t(b))
    r1 = divergent.closed_form("kl", normal, laplace)
    r2 = divergent.closed_form("kl", laplace, normal)
    assert r1.method == "normal_laplace" and r1.kind == "exact"
    assert float(r1.value) == pytest.approx(kl_nl, rel=1e-8)
    assert float(r2.value) == pytest.approx(kl_ln, rel=1e-8)
    assert float(divergent.closed_form("reverse_kl", normal, laplace).value) == pytest.approx(
        kl_ln, rel=1e-8
    )
    assert float(divergent.closed_form("jeffreys", laplace, normal).value) == pytest.approx(
        kl_nl + kl_ln, rel=1e-8
    )
    # torch registers both directions in recent versions: same numbers
    assert float(r1.value) == pytest.approx(float(kl_divergence(normal, laplace)), rel=1e-10)
    assert float(r2.value) == pytest.approx(float(kl_divergence(laplace, normal)), rel=1e-10)


def test_normal_laplace_batched_monte_carlo_and_gradient() -> None:
    mu, sigma = t([0.0, 1.0, -0.5]), t([1.0, 0.5, 2.0])
    m, b = t([0.5, 0.0, 0.0]), t([1.0, 2.0, 1.5])
    for p, q in ((Normal(mu, sigma), Laplace(m, b)), (Laplace(m, b), Normal(mu, sigma))):
        exact = divergent.closed_form("kl", p, q)
        mc = divergent.closed_form("kl", p, q, method="mc", seed=0, num_samples=200_000)
        assert exact.value.shape == (3,)
        assert bool(((exact.value - mc.value).abs() <= 4 * mc.stderr).all())
    args = tuple(x.clone().requires_grad_(True) for x in (mu, sigma, m, b))
    assert torch.autograd.gradcheck(
        lambda a, s, c, d: divergent.closed_form("kl", Normal(a, s), Laplace(c, d)).value, args
    )
