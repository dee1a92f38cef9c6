"""closed_form / exponential_family_kl against quadrature, Monte Carlo and torch's registry.

Independent references: ``scipy.integrate.quad`` of the defining integrals (1-D), Monte Carlo
with fixed seeds (tolerance 4 standard errors, in settings where the estimator's variance is
finite), ``torch.distributions.kl_divergence`` where it overlaps, textbook numpy formulas for
categorical pairs, and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import rel_entr
from torch.distributions import (
    Bernoulli,
    Beta,
    Categorical,
    Dirichlet,
    Exponential,
    Gamma,
    Independent,
    Laplace,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    Poisson,
    StudentT,
    VonMises,
    kl_divergence,
)

import divergent

F64 = torch.float64


def t(x: float | list) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def quad(f, lo: float = -math.inf, hi: float = math.inf) -> float:
    val, _ = integrate.quad(f, lo, hi, limit=400, epsabs=1e-13, epsrel=1e-11)
    return val


# --------------------------------------------------------------------------------------------
# 1-D references by quadrature
# --------------------------------------------------------------------------------------------
def _quad_divergence(name: str, logp, logq, params: dict) -> float:
    lim = 60.0  # both densities are < e^{-1000} beyond: finite range, no inf·0 in the tails
    kl = lambda lp, lq: quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -lim, lim)  # noqa: E731

    def affinity(a: float) -> float:
        return quad(lambda x: math.exp(a * logp(x) + (1 - a) * logq(x)), -lim, lim)

    if name == "kl":
        return kl(logp, logq)
    if name == "reverse_kl":
        return kl(logq, logp)
    if name == "jeffreys":
        return kl(logp, logq) + kl(logq, logp)
    if name == "renyi":
        return math.log(affinity(params["order"])) / (params["order"] - 1)
    if name == "alpha":
        a = params["alpha"]
        return (affinity(a) - 1) / (a * (a - 1))
    if name == "hellinger":
        return 1 - affinity(0.5)
    if name == "bhattacharyya":
        return -math.log(affinity(0.5))
    if name == "pearson_chi2":
        return affinity(2.0) - 1
    if name == "neyman_chi2":
        return affinity(-1.0) - 1
    raise AssertionError(name)


GAUSS_CASES = [
    ("kl", {}), ("reverse_kl", {}), ("jeffreys", {}), ("renyi", {"order": 0.3}),
    ("renyi", {"order": 2.5}), ("alpha", {"alpha": 0.3}), ("alpha", {"alpha": 1.7}),
    ("alpha", {"alpha": -0.6}), ("hellinger", {}), ("bhattacharyya", {}), ("pearson_chi2", {}),
    ("neyman_chi2", {}),
]


@pytest.mark.parametrize(("name", "params"), GAUSS_CASES)
def test_univariate_gaussian_matches_quadrature(name: str, params: dict) -> None:
    # σ_Q²/σ_P² ∈ (0.6, 2): every integral here is finite (χ² both ways, Rényi 2.5, α −0.6)
    mp, sp, mq, sq = 0.3, 0.9, -0.4, 1.1
    ref = _quad_divergence(
        name, lambda x: stats.norm.logpdf(x, mp, sp), lambda x: stats.norm.logpdf(x, mq, sq),
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
        float(divergent.closed_form("neyman_chi2", p, Normal(t(0.0), t(1.41))).value))
    # multivariate: one bad direction is enough
    pm = MultivariateNormal(t([0.0, 0.0]), t([[1.0, 0.0], [0.0, 1.0]]))
    qm = MultivariateNormal(t([0.0, 0.0]), t([[2.0, 0.0], [0.0, 0.4]]))
    assert math.isinf(float(divergent.closed_form("pearson_chi2", pm, qm).value))


def test_gaussian_identities() -> None:
    p = MultivariateNormal(t([0.1, -0.3, 0.5]), t([[1.0, 0.2, 0.0], [0.2, 0.8, 0.1],
                                                    [0.0, 0.1, 1.5]]))
    q = MultivariateNormal(t([0.4, 0.0, -0.2]), t([[1.2, -0.1, 0.1], [-0.1, 1.0, 0.0],
                                                    [0.1, 0.0, 0.9]]))
    cf = divergent.closed_form
    kl = float(cf("kl", p, q).value)
    assert kl == pytest.approx(float(kl_divergence(p, q)), rel=1e-12)
    assert float(cf("reverse_kl", p, q).value) == pytest.approx(float(kl_divergence(q, p)),
                                                                 rel=1e-12)
    assert float(cf("renyi", p, q, order=1.0).value) == pytest.approx(kl, rel=1e-12)
    assert float(cf("alpha", p, q, alpha=1.0).value) == pytest.approx(kl, rel=1e-12)
    assert float(cf("renyi", p, q, order=1 - 1e-6).value) == pytest.approx(kl, rel=1e-5)
    assert float(cf("renyi", p, q, order=0.0).value) == 0.0
    assert float(cf("alpha", p, q, alpha=0.5).value) == pytest.approx(
        4 * float(cf("hellinger", p, q).value), rel=1e-12)
    assert float(cf("renyi", p, q, order=0.5).value) == pytest.approx(
        2 * float(cf("bhattacharyya", p, q).value), rel=1e-12)
    assert float(cf("alpha", p, q, alpha=2.0).value) == pytest.approx(
        0.5 * float(cf("pearson_chi2", p, q).value), rel=1e-12)
    assert float(cf("neyman_chi2", p, q).value) == pytest.approx(
        float(cf("pearson_chi2", q, p).value), rel=1e-12)


@pytest.mark.parametrize(("name", "params"), [c for c in GAUSS_CASES if c[0] != "jeffreys"])
def test_diagonal_kinds_agree_with_full_covariance(name: str, params: dict) -> None:
    """Independent(Normal) (elementwise code) = MultivariateNormal with diagonal Σ (matrix code)."""
    loc_p, sd_p = t([[0.2, -1.0], [0.0, 0.5]]), t([[1.0, 0.7], [1.2, 0.9]])
    loc_q, sd_q = t([[0.5, 0.3], [-0.2, 0.1]]), t([[1.3, 1.1], [1.4, 1.0]])
    diag = divergent.closed_form(name, Independent(Normal(loc_p, sd_p), 1),
                                 Independent(Normal(loc_q, sd_q), 1), **params)
    full = divergent.closed_form(
        name, MultivariateNormal(loc_p, torch.diag_embed(sd_p**2)),
        MultivariateNormal(loc_q, torch.diag_embed(sd_q**2)), **params)
    mixed = divergent.closed_form(name, Independent(Normal(loc_p, sd_p), 1),
                                  MultivariateNormal(loc_q, torch.diag_embed(sd_q**2)), **params)
    assert diag.value.shape == (2,)
    torch.testing.assert_close(diag.value, full.value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixed.value, full.value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "params"),
    [("kl", {}), ("reverse_kl", {}), ("hellinger", {}), ("bhattacharyya", {}),
     ("renyi", {"order": 0.3}), ("alpha", {"alpha": 0.6}), ("pearson_chi2", {})],
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
    (0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.0, 2.0), (2.0, 1.5, 0.5, 0.4), (-1.0, 0.2, 1.0, 1.0)
]


@pytest.mark.parametrize(("mu", "sigma", "m", "b"), NL_PARAMS)
def test_normal_laplace_matches_quadrature_and_torch(mu: float, sigma: float, m: float,
                                                     b: float) -> None:
    lp = lambda x: stats.norm.logpdf(x, mu, sigma)  # noqa: E731
    lq = lambda x: stats.laplace.logpdf(x, m, b)  # noqa: E731
    lim = 60.0  # finite range: both densities are < e^{-150} beyond
    kl_nl = sum(quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), lo, hi)
                for lo, hi in ((-lim, m), (m, lim)))
    # the Laplace density has a kink at m: split the integral there
    kl_ln = sum(quad(lambda x: math.exp(lq(x)) * (lq(x) - lp(x)), lo, hi)
                for lo, hi in ((-lim, m), (m, lim)))
    normal, laplace = Normal(t(mu), t(sigma)), Laplace(t(m), t(b))
    r1 = divergent.closed_form("kl", normal, laplace)
    r2 = divergent.closed_form("kl", laplace, normal)
    assert r1.method == "normal_laplace" and r1.kind == "exact"
    assert float(r1.value) == pytest.approx(kl_nl, rel=1e-8)
    assert float(r2.value) == pytest.approx(kl_ln, rel=1e-8)
    assert float(divergent.closed_form("reverse_kl", normal, laplace).value) == pytest.approx(
        kl_ln, rel=1e-8)
    assert float(divergent.closed_form("jeffreys", laplace, normal).value) == pytest.approx(
        kl_nl + kl_ln, rel=1e-8)
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
        lambda a, s, c, d: divergent.closed_form("kl", Normal(a, s), Laplace(c, d)).value, args)


# --------------------------------------------------------------------------------------------
# categorical
# --------------------------------------------------------------------------------------------
def _cat_params(name: str) -> list[dict]:
    spec = divergent.get_divergence(name)
    return [{}] if not spec.parameters else [{p.name: p.default} for p in spec.parameters]


@pytest.mark.parametrize("name", [d.name for d in divergent.list_divergences()])
def test_categorical_delegates_to_registry(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    pl = torch.randn(4, 6, generator=g, dtype=F64)
    ql = torch.randn(4, 6, generator=g, dtype=F64)
    for params in _cat_params(name):
        got = divergent.closed_form(name, Categorical(logits=pl), Categorical(logits=ql), **params)
        ref = divergent.divergence(name, pl, ql, reduction="none", **params)
        assert got.method == "categorical"
        torch.testing.assert_close(got.value, ref, rtol=1e-12, atol=1e-14)
        onehot = divergent.closed_form(name, OneHotCategorical(logits=pl),
                                       OneHotCategorical(logits=ql), **params)
        torch.testing.assert_close(onehot.value, ref, rtol=1e-12, atol=1e-14)


def test_categorical_exact_with_zero_probabilities() -> None:
    """Built from probabilities with zeros: exact values (torch clamps probs into logits)."""
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    pp, qq = Categorical(probs=torch.from_numpy(p)), Categorical(probs=torch.from_numpy(q))
    cf = divergent.closed_form
    assert float(cf("kl", pp, qq).value) == pytest.approx(rel_entr(p, q).sum(), rel=1e-14)
    assert float(cf("reverse_kl", pp, qq).value) == math.inf
    assert float(cf("tv", pp, qq).value) == pytest.approx(0.5 * np.abs(p - q).sum(), rel=1e-14)
    bc = np.sqrt(p * q).sum()
    assert float(cf("hellinger", pp, qq).value) == pytest.approx(1 - bc, rel=1e-14)
    assert float(cf("bhattacharyya", pp, qq).value) == pytest.approx(-math.log(bc), rel=1e-14)
    assert float(cf("renyi", pp, qq, order=0.5).value) == pytest.approx(-2 * math.log(bc),
                                                                         rel=1e-14)
    m = 0.5 * (p + q)
    js = 0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum()
    assert float(cf("js", pp, qq).value) == pytest.approx(js, rel=1e-13)


def test_bernoulli_pairs() -> None:
    p, q = Bernoulli(probs=t([0.2, 0.9])), Bernoulli(probs=t([0.5, 0.6]))
    torch.testing.assert_close(divergent.closed_form("kl", p, q).value, kl_divergence(p, q),
                               rtol=1e-12, atol=0)
    h = divergent.closed_form("hellinger", p, q).value
    ref = 1 - (torch.sqrt(p.probs * q.probs) + torch.sqrt((1 - p.probs) * (1 - q.probs)))
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------
def _mix1d(w: list, mu: list, sd: list) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(probs=t(w)), Normal(t(mu), t(sd)))


def _mix_logpdf(w: list, mu: list, sd: list):
    from scipy.special import logsumexp

    return lambda x: float(logsumexp(np.log(w) + stats.norm.logpdf(x, mu, sd)))


MIXTURES = [
    (([0.3, 0.7], [-1.0, 2.0], [0.5, 1.0]), ([0.5, 0.2, 0.3], [-0.5, 1.0, 3.0], [1.0, 0.5, 0.7])),
    (([0.5, 0.5], [-2.0, 2.0], [0.6, 0.6]), ([0.5, 0.5], [-1.8, 2.3], [0.7, 0.5])),
    (([0.2, 0.3, 0.5], [0.0, 1.0, 4.0], [1.0, 0.3, 0.8]), ([1.0], [1.5], [2.0])),
]


@pytest.mark.parametrize(("fp", "fq"), MIXTURES)
def test_mixture_bounds_bracket_the_quadrature_value(fp: tuple, fq: tuple) -> None:
    lp, lq = _mix_logpdf(*fp), _mix_logpdf(*fq)
    truth = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -30, 30)
    p, q = _mix1d(*fp), _mix1d(*fq)
    res = divergent.closed_form("kl", p, q, seed=0)  # auto: Monte Carlo + certified bounds
    assert res.kind == "monte_carlo" and float(res.stderr) > 0
    assert abs(float(res.value) - truth) <= 4 * float(res.stderr)
    assert res.lower is not None and res.upper is not None
    assert float(res.lower) <= truth + 1e-10 <= float(res.upper) + 2e-10
    lower = divergent.closed_form("kl", p, q, method="lower")
    upper = divergent.closed_form("kl", p, q, method="upper")
    assert lower.kind == "lower_bound" and upper.kind == "upper_bound"
    assert float(lower.value) == float(res.lower) and float(upper.value) == float(res.upper)
    for method in ("variational", "goldberger", "product"):
        approx = divergent.closed_form("kl", p, q, method=method)
        assert approx.kind == "approximation" and math.isfinite(float(approx.value))
    # reverse direction and Jeffreys: bounds add up
    rev = divergent.closed_form("reverse_kl", q, p, method="upper")
    assert float(rev.value) == pytest.approx(float(upper.value), rel=1e-12)
    jef = divergent.closed_form("jeffreys", p, q, method="lower")
    assert float(jef.value) == pytest.approx(
        float(lower.value) + float(divergent.closed_form("kl", q, p, method="lower").value),
        rel=1e-12)


def test_mixture_approximations_are_not_bounds() -> None:
    """The Hershey–Olsen variational value can be far from the truth (hence MC by default)."""
    fp, fq = MIXTURES[0]
    lp, lq = _mix_logpdf(*fp), _mix_logpdf(*fq)
    truth = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -30, 30)
    var = divergent.closed_form("kl", _mix1d(*fp), _mix1d(*fq), method="variational")
    assert truth == pytest.approx(0.1852, abs=1e-3)
    assert float(var.value) > truth + 0.5


def test_single_components_are_exact() -> None:
    p = MultivariateNormal(t([0.0, 1.0]), t([[1.0, 0.2], [0.2, 0.5]]))
    q = MultivariateNormal(t([0.5, 0.0]), t([[2.0, 0.0], [0.0, 1.0]]))
    as_mix = MixtureSameFamily(Categorical(probs=t([1.0])),
                               MultivariateNormal(p.loc[None], p.covariance_matrix[None]))
    exact = float(kl_divergence(p, q))
    for method in ("variational", "goldberger", "upper"):
        got = divergent.closed_form("kl", as_mix, q, method=method)
        assert float(got.value) == pytest.approx(exact, rel=1e-10)


def test_multivariate_mixture_bounds_and_monte_carlo() -> None:
    g = torch.Generator().manual_seed(3)
    mus_p, mus_q = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(2, 2, generator=g,
                                                                             dtype=F64)
    covs = torch.eye(2, dtype=F64) * t([[[0.5]], [[0.8]], [[1.2]]])
    p = MixtureSameFamily(Categorical(probs=t([0.2, 0.5, 0.3])), MultivariateNormal(mus_p, covs))
    q = MixtureSameFamily(Categorical(probs=t([0.6, 0.4])),
                          Independent(Normal(mus_q, t([[1.0, 0.7], [0.6, 1.1]])), 1))
    res = divergent.closed_form("kl", p, q, seed=2, num_samples=200_000)
    assert float(res.lower) <= float(res.value) + 4 * float(res.stderr)
    assert float(res.upper) >= float(res.value) - 4 * float(res.stderr)
    assert float(res.upper) > float(res.lower)


# --------------------------------------------------------------------------------------------
# Monte Carlo fallback
# --------------------------------------------------------------------------------------------
def test_monte_carlo_fallback_for_pairs_without_closed_form() -> None:
    p, q = StudentT(t(5.0), t(0.0), t(1.0)), Normal(t(0.2), t(1.3))
    with pytest.raises(ValueError, match="method='mc'"):
        divergent.closed_form("kl", p, q)
    lp = lambda x: stats.t.logpdf(x, 5.0)  # noqa: E731
    lq = lambda x: stats.norm.logpdf(x, 0.2, 1.3)  # noqa: E731
    truth = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -1e4, 1e4)
    res = divergent.closed_form("kl", p, q, method="mc", seed=0)
    assert abs(float(res.value) - truth) <= 4 * float(res.stderr)
    truth_tv = 0.5 * quad(lambda x: abs(math.exp(lp(x)) - math.exp(lq(x))), -1e4, 1e4)
    tv = divergent.closed_form("tv", p, q, method="mc", seed=0)
    assert abs(float(tv.value) - truth_tv) <= 4 * float(tv.stderr)
    js = divergent.closed_form("js", Normal(t(0.0), t(1.0)), Normal(t(1.0), t(1.0)), method="mc",
                               seed=0)
    lp2, lq2 = (lambda x: stats.norm.logpdf(x)), (lambda x: stats.norm.logpdf(x, 1.0))

    def js_integrand(x: float) -> float:
        la, lb = lp2(x), lq2(x)
        lm = np.logaddexp(la, lb) - math.log(2)
        return 0.5 * math.exp(la) * (la - lm) + 0.5 * math.exp(lb) * (lb - lm)

    assert abs(float(js.value) - quad(js_integrand, -40, 40)) <= 4 * float(js.stderr)


def test_monte_carlo_seed_and_rng_state() -> None:
    p, q = Normal(t(0.0), t(1.0)), Normal(t(0.5), t(1.2))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    r1 = divergent.closed_form("hellinger", p, q, method="mc", seed=7, num_samples=1000)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    r2 = divergent.closed_form("hellinger", p, q, method="mc", seed=7, num_samples=1000)
    assert float(r1.value) == float(r2.value)
    r3 = divergent.closed_form("hellinger", p, q, method="mc", seed=8, num_samples=1000)
    assert float(r1.value) != float(r3.value)


# --------------------------------------------------------------------------------------------
# exponential families as Bregman divergences of the log-partition
# --------------------------------------------------------------------------------------------
TORCH_FAMILIES = [
    (Poisson(t([1.0, 3.5])), Poisson(t([2.0, 0.7])), 0),
    (Exponential(t([0.5, 2.0])), Exponential(t([1.5, 1.0])), 0),
    (Gamma(t([2.0, 0.7]), t([1.0, 3.0])), Gamma(t([1.2, 2.0]), t([0.5, 1.0])), 0),
    (Normal(t([0.0, 1.0]), t([1.0, 0.3])), Normal(t([0.5, -1.0]), t([2.0, 0.8])), 0),
    (Beta(t([2.0, 0.5]), t([3.0, 0.8])), Beta(t([1.0, 2.0]), t([1.0, 4.0])), 0),
    (Dirichlet(t([[1.0, 2.0, 3.0]])), Dirichlet(t([[0.5, 0.5, 4.0]])), 1),
]


@pytest.mark.parametrize(("p", "q", "event"), TORCH_FAMILIES,
                         ids=[type(f[0]).__name__ for f in TORCH_FAMILIES])
def test_exponential_family_kl_matches_torch(p, q, event: int) -> None:
    got = divergent.exponential_family_kl(p._natural_params, q._natural_params,
                                          p._log_normalizer, event_ndims=event)
    torch.testing.assert_close(got, kl_divergence(p, q), rtol=1e-10, atol=1e-12)


def test_exponential_family_kl_own_families() -> None:
    # categorical: θ = logits, A = logsumexp (overparametrised but the Bregman form holds)
    g = torch.Generator().manual_seed(0)
    pl, ql = torch.randn(3, 5, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64)
    got = divergent.exponential_family_kl(pl, ql, lambda th: torch.logsumexp(th, -1),
                                          event_ndims=1)
    torch.testing.assert_close(got, divergent.kl(pl, ql, reduction="none"), rtol=1e-12, atol=0)
    # von Mises: θ = κ(cos μ, sin μ), A(θ) = log 2π I₀(‖θ‖); against Monte Carlo
    def log_partition(eta: torch.Tensor) -> torch.Tensor:
        k = eta.norm(dim=-1)
        return math.log(2 * math.pi) + torch.log(torch.special.i0e(k)) + k

    def theta(mu: float, kappa: float) -> torch.Tensor:
        return kappa * t([math.cos(mu), math.sin(mu)])

    p, q = VonMises(t(0.3), t(2.0)), VonMises(t(-0.5), t(0.8))
    exact = divergent.exponential_family_kl(theta(0.3, 2.0), theta(-0.5, 0.8), log_partition,
                                            event_ndims=1)
    lp = lambda x: stats.vonmises.logpdf(x, 2.0, loc=0.3)  # noqa: E731
    lq = lambda x: stats.vonmises.logpdf(x, 0.8, loc=-0.5)  # noqa: E731
    quad_ref = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -math.pi, math.pi)
    assert float(exact) == pytest.approx(quad_ref, rel=1e-8)
    mc = divergent.closed_form("kl", p, q, method="mc", seed=0, num_samples=50_000)
    assert abs(float(exact) - float(mc.value)) <= 4 * float(mc.stderr)


def test_exponential_family_kl_gradients() -> None:
    th1 = t([0.2, -0.4]).requires_grad_(True)
    th2 = t([1.0, 0.3]).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: divergent.exponential_family_kl(a, b, torch.exp), (th1, th2))
    # Normal in natural parameters (μ/σ², −1/(2σ²)): gradient w.r.t. both sets
    n1 = tuple(x.clone().requires_grad_(True) for x in Normal(t([0.3]), t([1.2]))._natural_params)
    n2 = tuple(x.clone().requires_grad_(True) for x in Normal(t([-0.1]), t([0.7]))._natural_params)
    a_fn = Normal(t([0.0]), t([1.0]))._log_normalizer
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: divergent.exponential_family_kl((a, b), (c, d), a_fn), (*n1, *n2))


# --------------------------------------------------------------------------------------------
# errors and the support table
# --------------------------------------------------------------------------------------------
def test_errors_name_what_is_supported() -> None:
    p, q = Normal(t(0.0), t(1.0)), Normal(t(1.0), t(1.0))
    with pytest.raises(ValueError, match=r"unknown divergence `wasserstein`.*Gaussian"):
        divergent.closed_form("wasserstein", p, q)
    with pytest.raises(ValueError, match=r"no closed form between Gaussians.*method='mc'"):
        divergent.closed_form("tv", p, q)
    with pytest.raises(ValueError, match="`method`"):
        divergent.closed_form("kl", p, q, method="quadrature")
    with pytest.raises(ValueError, match="Gaussian mixtures only"):
        divergent.closed_form("kl", p, q, method="upper")
    with pytest.raises(ValueError, match="`order`"):
        divergent.closed_form("renyi", p, q, order=-1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        divergent.closed_form("kl", p, q, beta=0.3)
    with pytest.raises(ValueError, match="`num_samples`"):
        divergent.closed_form("kl", p, q, method="mc", num_samples=1)
    with pytest.raises(ValueError, match=r"`P` must be a torch\.distributions"):
        divergent.closed_form("kl", torch.zeros(2), q)
    mix = _mix1d(*MIXTURES[0][0])
    with pytest.raises(ValueError, match="no closed form"):
        divergent.closed_form("kl", mix, q, method="exact")
    with pytest.raises(ValueError, match="between Gaussian mixtures"):
        divergent.closed_form("hellinger", mix, q)
    with pytest.raises(ValueError, match="different numbers of categories"):
        divergent.closed_form("kl", Categorical(logits=torch.zeros(3)),
                              Categorical(logits=torch.zeros(4)))
    with pytest.raises(ValueError, match="same number of natural parameters"):
        divergent.exponential_family_kl((t([1.0]),), (t([1.0]), t([2.0])), torch.exp)
    with pytest.raises(ValueError, match="shape"):
        divergent.exponential_family_kl(t([1.0]), t([1.0, 2.0]), torch.exp)
    support = divergent.closed_form_support()
    assert "bhattacharyya" in support["Categorical | OneHotCategorical | Bernoulli (both sides)"]
