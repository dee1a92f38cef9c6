"""MLE KL-risk expansion and p-n criterion (divergent.analysis.mle_risk) vs exact references.

Exact finite-n risks (derived from Gamma / chi-square laws, themselves checked by Monte Carlo
below) give the n⁻¹ and n⁻² coefficients independently of the cumulant formulas:

* exponential model, Exp(1) data: R_n = ψ(n) − log n + 1/(n − 1) = 1/(2n) + (11/12)/n² + …
* exponential model, Gamma(k) data (misspecified): R_n = the same with n → nk,
  so a = 1/(2k), b = 11/(12k²);
* Gaussian with unknown mean and variance: R_n = ½[4/(n−3) + ψ((n−1)/2) + log(2/n)]
  = 1/n + (61/12)/n² + ….
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from divergent.analysis.mle_risk import (
    MLERiskExpansion,
    PNVerdict,
    discrete_feature_cumulants,
    exponential_family_moment_match,
    mle_kl_risk_expansion,
    pn_criterion,
    pn_max_risk,
)


def _exp_family_exact(m: float) -> float:
    return float(digamma(m) - math.log(m) + 1.0 / (m - 1.0))


def _gauss_exact(n: float) -> float:
    return 0.5 * (4.0 / (n - 3.0) + float(digamma((n - 1) / 2)) + math.log(2.0 / n))


def _psi_exponential(th: torch.Tensor) -> torch.Tensor:
    return -torch.log(-th[0])


def _psi_gauss(th: torch.Tensor) -> torch.Tensor:
    return -(th[0] ** 2) / (4 * th[1]) - 0.5 * torch.log(-2 * th[1])


def _coefficients_from_exact(exact, a: float) -> float:
    """b from n²(R_n − a/n) at large n (Richardson step removes the n⁻³ term)."""
    n1, n2 = 2.0e4, 4.0e4
    b1 = n1**2 * (exact(n1) - a / n1)
    b2 = n2**2 * (exact(n2) - a / n2)
    return 2 * b2 - b1


def test_exponential_family_well_specified() -> None:
    e = mle_kl_risk_expansion(_psi_exponential, [-1.0], [[1.0]], [[[2.0]]])
    assert e == MLERiskExpansion(first=pytest.approx(0.5), second=pytest.approx(11 / 12), dim=1)
    assert e.second == pytest.approx(_coefficients_from_exact(_exp_family_exact, 0.5), rel=1e-4)


@pytest.mark.parametrize("k", [0.5, 3.0])
def test_exponential_model_misspecified_gamma_data(k: float) -> None:
    # g = Gamma(shape k, scale 1): mean k, variance k, third cumulant 2k; θ* = −1/k
    e = mle_kl_risk_expansion(_psi_exponential, [-1.0 / k], [[k]], [[[2.0 * k]]])
    assert e.first == pytest.approx(1 / (2 * k), rel=1e-12)
    assert e.first != pytest.approx(0.5)  # not p/2: the model is misspecified
    exact = lambda n: _exp_family_exact(n * k)  # noqa: E731
    assert e.second == pytest.approx(_coefficients_from_exact(exact, 1 / (2 * k)), rel=1e-4)


@pytest.mark.parametrize(("mu", "var"), [(0.0, 1.0), (1.5, 4.0)])
def test_gaussian_unknown_mean_and_variance(mu: float, var: float) -> None:
    # cumulants of t = (x, x²) under N(μ, σ²), from Gaussian moments
    m = [
        1.0,
        mu,
        mu**2 + var,
        mu**3 + 3 * mu * var,
        mu**4 + 6 * mu**2 * var + 3 * var**2,
        mu**5 + 10 * mu**3 * var + 15 * mu * var**2,
        mu**6 + 15 * mu**4 * var + 45 * mu**2 * var**2 + 15 * var**3,
    ]
    mean = np.array([m[1], m[2]])

    def raw(i: int, j: int, k: int = 0) -> float:  # E[t_i t_j t_k], t_1 = x, t_2 = x²
        return m[i + j + k]

    cov = np.array(
        [
            [raw(1, 1) - mean[0] ** 2, raw(1, 2) - mean[0] * mean[1]],
            [raw(2, 1) - mean[1] * mean[0], raw(2, 2) - mean[1] ** 2],
        ]
    )
    third = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            for c in range(2):
                pa, pb, pc = a + 1, b + 1, c + 1
                third[a, b, c] = (
                    raw(pa, pb, pc)
                    - mean[a] * raw(pb, pc)
                    - mean[b] * raw(pa, pc)
                    - mean[c] * raw(pa, pb)
                    + 2 * mean[a] * mean[b] * mean[c]
                )
    theta = [mu / var, -1.0 / (2 * var)]
    e = mle_kl_risk_expansion(_psi_gauss, theta, cov, third)
    assert e.first == pytest.approx(1.0, rel=1e-9)  # p/2, well specified
    assert e.second == pytest.approx(61 / 12, rel=1e-8)
    assert e.second == pytest.approx(_coefficients_from_exact(_gauss_exact, 1.0), rel=1e-4)


def test_exact_gaussian_risk_formula_by_monte_carlo() -> None:
    """The exact reference above, checked by simulation at n = 12."""
    rng = np.random.default_rng(0)
    n, reps = 12, 200_000
    x = rng.normal(size=(reps, n))
    mu_hat, var_hat = x.mean(1), x.var(1)
    kl = 0.5 * (1 / var_hat + mu_hat**2 / var_hat - 1 + np.log(var_hat))
    se = kl.std() / math.sqrt(reps)
    assert abs(kl.mean() - _gauss_exact(n)) < 4 * se


def test_discrete_feature_cumulants_match_raw_moment_formulas() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(30))
    feats = rng.normal(size=(30, 3))
    mean, cov, third = discrete_feature_cumulants(probs, feats)
    e1 = probs @ feats
    e2 = np.einsum("k,ka,kb->ab", probs, feats, feats)
    e3 = np.einsum("k,ka,kb,kc->abc", probs, feats, feats, feats)
    ref3 = (
        e3
        - np.einsum("a,bc->abc", e1, e2)
        - np.einsum("b,ac->abc", e1, e2)
        - np.einsum("c,ab->abc", e1, e2)
        + 2 * np.einsum("a,b,c->abc", e1, e1, e1)
    )
    np.testing.assert_allclose(mean.numpy(), e1, rtol=1e-12)
    np.testing.assert_allclose(
        cov.numpy(), np.cov(feats.T, aweights=probs, bias=True), rtol=1e-10, atol=1e-14
    )
    np.testing.assert_allclose(third.numpy(), ref3, rtol=1e-9, atol=1e-12)


def test_discrete_family_expansion_matches_simulation() -> None:
    """A misspecified 2-parameter family on a grid: a, b against simulated MLE risks."""
    x = np.linspace(-1, 1, 41)
    g = np.exp(-0.5 * ((x - 0.3) / 0.2) ** 2) + 0.5 * np.exp(-0.5 * ((x + 0.5) / 0.15) ** 2)
    g /= g.sum()
    feats = torch.from_numpy(np.stack([x, x**3], 1))  # the model misses the x² moment
    gt = torch.from_numpy(g)
    mean_g, cov_g, k3_g = discrete_feature_cumulants(gt, feats)
    theta = torch.zeros(2, dtype=torch.float64)
    for _ in range(50):  # moment matching by Newton (the projection)
        p = torch.softmax(feats @ theta, 0)
        m = p @ feats
        u = feats - m
        theta = theta + torch.linalg.solve(torch.einsum("k,ka,kb->ab", p, u, u), mean_g - m)
    e = mle_kl_risk_expansion(lambda th: torch.logsumexp(feats @ th, 0), theta, cov_g, k3_g)
    assert abs(e.first - 1.0) > 0.1  # clearly misspecified
    rng = np.random.default_rng(3)
    n, reps = 400, 4000
    tbar = torch.from_numpy(rng.multinomial(n, g, size=reps) / n) @ feats
    th = theta.expand(reps, 2).clone()
    for _ in range(40):
        p = torch.softmax(th @ feats.T, 1)
        m = p @ feats
        u = feats[None] - m[:, None]
        th = th + torch.linalg.solve(torch.einsum("rk,rka,rkb->rab", p, u, u), tbar - m)
    lp_star = torch.log_softmax(feats @ theta, 0)
    lp_hat = torch.log_softmax(th @ feats.T, 1)
    kls = (lp_star.exp() * (lp_star - lp_hat)).sum(1).numpy()
    se = kls.std(ddof=1) / math.sqrt(reps)
    assert abs(kls.mean() - e.risk(n)) < 3 * se
    assert abs(kls.mean() - 1.0 / n) > 3 * se  # p/(2n) is off


def test_pn_max_risk_is_a_valid_sufficient_condition() -> None:
    """Pinsker: any pair with KL ≤ 2(1 − 2ε)² has Bayes error ½(1 − TV) ≥ ε."""
    assert pn_max_risk(0.45) == pytest.approx(2 * 0.1**2)
    rng = np.random.default_rng(5)
    eps = 0.4
    limit = pn_max_risk(eps)
    checked = 0
    for _ in range(2000):
        p = rng.dirichlet(np.ones(6))
        q = np.abs(p + rng.normal(scale=0.05, size=6)) + 1e-9
        q /= q.sum()
        kl = float(np.sum(p * np.log(p / q)))
        if kl <= limit:
            checked += 1
            assert 0.5 * (1 - 0.5 * np.abs(p - q).sum()) >= eps - 1e-12
    assert checked > 100


def test_pn_criterion_verdicts() -> None:
    e = MLERiskExpansion(first=2.0, second=10.0, dim=4)
    limit = pn_max_risk(0.45)
    accepts = [n for n in (10, 50, 100, 200, 1000) if pn_criterion(e, n, 0.45).accept]
    assert accepts == [n for n in (10, 50, 100, 200, 1000) if 2 / n + 10 / n**2 <= limit]
    v = pn_criterion(e, 200, 0.45, order=1)
    assert isinstance(v, PNVerdict) and v.risk == pytest.approx(0.01) and v.max_risk == limit


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="bayes_error"):
        pn_max_risk(0.5)
    with pytest.raises(ValueError, match="`n`"):
        pn_criterion(MLERiskExpansion(1.0, 0.0, 2), 0)
    with pytest.raises(ValueError, match="expansion"):
        pn_criterion((1.0, 0.0, 2), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order"):
        MLERiskExpansion(1.0, 0.0, 2).risk(10, order=3)
    with pytest.raises(ValueError, match="true_cov"):
        mle_kl_risk_expansion(_psi_gauss, [0.0, -0.5], np.eye(3), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="true_third_cumulant"):
        mle_kl_risk_expansion(_psi_gauss, [0.0, -0.5], np.eye(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="theta_star"):
        mle_kl_risk_expansion(_psi_gauss, [[0.0, -0.5]], np.eye(2), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="callable"):
        mle_kl_risk_expansion(None, [0.0], np.eye(1), np.zeros((1, 1, 1)))  # type: ignore
    with pytest.raises(ValueError, match="probs"):
        discrete_feature_cumulants([0.5, 0.6], np.zeros((2, 1)))


def test_moment_match_reaches_the_target_mean() -> None:
    x = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    feats = torch.stack([x, 1.5 * x**2 - 0.5], dim=1)
    targets = torch.tensor([[0.1, -0.2], [-0.3, 0.1], [1.0, 1.0]], dtype=torch.float64)
    theta, ok = exponential_family_moment_match(feats, targets)
    assert ok.tolist() == [True, True, True]
    probs = torch.softmax(theta @ feats.T, dim=1)
    torch.testing.assert_close(probs @ feats, targets, atol=1e-9, rtol=0)
    # (1, 1) is a vertex of the hull (no MLE): matched by a nearly degenerate distribution
    assert float(probs[2, -1]) > 1 - 1e-6 and float(theta[2].abs().max()) > 10
    with pytest.raises(ValueError, match="features"):
        exponential_family_moment_match(feats, targets[:, :1])
