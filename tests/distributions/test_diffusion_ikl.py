"""Diffusion paths, diffused Gaussians and the Integral KL against independent references:
numpy and torch.distributions' Gaussian KL / log_prob, scipy quadrature over t and over x,
Monte Carlo, gradcheck."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch.distributions import MultivariateNormal, kl_divergence

from divergent.distributions.diffusion import (
    VEPath,
    VPPath,
    diffused_gaussian,
    diffused_gaussian_kl,
    diffused_gaussian_score,
    gauss_legendre_times,
    integral_kl,
)

F64 = torch.float64


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


LINE = t64([[1.0, 2.0], [2.0, 4.0]])  # rank 1: a line in R²
MEAN_P = t64([0.5, -0.3])
MEAN_Q = t64([-0.2, 0.4])
COV_Q = t64([[1.2, 0.3], [0.3, 0.7]])
FULL_P = t64([[0.8, -0.2], [-0.2, 0.5]])


def ref_kl_t(mp, cp, mq, cq, t: float, path) -> float:
    """KL(P_t‖Q_t) by numpy (inverse and log-determinants), the marginals written out."""
    tt = t64(t)
    a, s2 = float(path.alpha(tt)), float(path.sigma2(tt))
    mp, cp, mq, cq = (x.numpy() for x in (mp, cp, mq, cq))
    sp, sq = a * a * cp + s2 * np.eye(len(mp)), a * a * cq + s2 * np.eye(len(mp))
    inv = np.linalg.inv(sq)
    d = a * (mq - mp)
    logdet = np.linalg.slogdet(sq)[1] - np.linalg.slogdet(sp)[1]
    return 0.5 * float(np.trace(inv @ sp) + d @ inv @ d - len(mp) + logdet)


def quad_ikl(mp, cp, mq, cq, path, w=lambda t: 1.0, lo=0.0, hi=1.0) -> float:
    val, _ = integrate.quad(
        lambda t: w(t) * ref_kl_t(mp, cp, mq, cq, t, path),
        lo,
        hi,
        limit=200,
        epsabs=1e-11,
        epsrel=1e-9,
    )
    return val


# --------------------------------------------------------------------------------------------
# paths and marginals
# --------------------------------------------------------------------------------------------
def test_vp_preserves_variance_and_ve_explodes() -> None:
    t = torch.linspace(0, 1, 11, dtype=F64)
    vp = VPPath()
    assert torch.allclose(vp.alpha(t).square() + vp.sigma2(t), torch.ones_like(t))
    # α_t = exp(−½ ∫β), β(s) = 0.1 + 19.9 s, by numerical integration
    for ti in (0.3, 0.9):
        integral, _ = integrate.quad(lambda s: 0.1 + 19.9 * s, 0, ti)
        assert float(vp.alpha(t64(ti))) == pytest.approx(math.exp(-0.5 * integral), rel=1e-12)
    ve = VEPath(sigma_min=0.02, sigma_max=30.0)
    assert torch.equal(ve.alpha(t), torch.ones_like(t))
    assert float(ve.sigma(t64(0.0))) == 0.0
    # the VE-SDE kernel: σ_t² = σ(t)² − σ(0)², σ(t) = σ_min (σ_max/σ_min)^t
    for ti in (0.25, 1.0):
        s = 0.02 * (30.0 / 0.02) ** ti
        assert float(ve.sigma2(t64(ti))) == pytest.approx(s * s - 0.02**2, rel=1e-12)


@pytest.mark.parametrize("path", [VPPath(), VEPath(sigma_min=0.05, sigma_max=3.0)])
def test_diffused_gaussian_matches_sampled_marginal(path) -> None:
    g = torch.Generator().manual_seed(0)
    factor = t64([[1.0], [2.0]])  # x0 = μ + A z on a line
    n, t = 100_000, t64(0.3)
    x0 = MEAN_P + torch.randn(n, 1, generator=g, dtype=F64) @ factor.T
    xt = path.alpha(t) * x0 + path.sigma(t) * torch.randn(n, 2, generator=g, dtype=F64)
    mean_t, cov_t = diffused_gaussian(MEAN_P, factor @ factor.T, t, path)
    assert torch.allclose(xt.mean(0), mean_t, atol=0.02)
    assert torch.allclose(torch.cov(xt.T), cov_t, rtol=0.03, atol=0.02)


def test_diffused_gaussian_broadcasts_times() -> None:
    t = t64([0.1, 0.5, 0.9])
    mean_t, cov_t = diffused_gaussian(MEAN_P.expand(4, 2), LINE, t)
    assert mean_t.shape == (3, 4, 2) and cov_t.shape == (3, 4, 2, 2)
    m1, c1 = diffused_gaussian(MEAN_P, LINE, 0.5)
    assert torch.allclose(mean_t[1, 2], m1) and torch.allclose(cov_t[1, 0], c1)


# --------------------------------------------------------------------------------------------
# KL(P_t‖Q_t), scores
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [VPPath(), VEPath()])
def test_diffused_kl_equals_numpy_and_torch_gaussian_kl(path) -> None:
    times = t64([1e-4, 0.05, 0.4, 1.0])
    got = diffused_gaussian_kl(MEAN_P, LINE, MEAN_Q, COV_Q, times, path)
    ref = [ref_kl_t(MEAN_P, LINE, MEAN_Q, COV_Q, float(t), path) for t in times]
    assert torch.allclose(got, t64(ref), rtol=1e-9, atol=1e-12)
    a, s2 = path.alpha(times)[:, None], path.sigma2(times)[:, None, None]
    eye = torch.eye(2, dtype=F64)
    p = MultivariateNormal(a * MEAN_P, a[..., None] ** 2 * LINE + s2 * eye)
    q = MultivariateNormal(a * MEAN_Q, a[..., None] ** 2 * COV_Q + s2 * eye)
    assert torch.allclose(got, kl_divergence(p, q), rtol=1e-9, atol=1e-12)


def test_diffused_kl_one_dimensional_by_quadrature() -> None:
    """An independent 1-D check: ∫ p_t log(p_t/q_t) by scipy with written-out densities."""
    path, t = VPPath(), 0.2
    a, s2 = float(path.alpha(t64(t))), float(path.sigma2(t64(t)))
    mp, vp, mq, vq = a * 0.7, a * a * 0.0 + s2, a * -0.4, a * a * 2.0 + s2  # P_0 a point mass

    def logn(x, m, v):
        return -0.5 * (math.log(2 * math.pi * v) + (x - m) ** 2 / v)

    ref, _ = integrate.quad(
        lambda x: math.exp(logn(x, mp, vp)) * (logn(x, mp, vp) - logn(x, mq, vq)), -30, 30
    )
    got = diffused_gaussian_kl(t64([0.7]), t64([[0.0]]), t64([-0.4]), t64([[2.0]]), t, path)
    assert float(got) == pytest.approx(ref, rel=1e-9)


def test_diffused_kl_at_zero_is_refused_for_a_singular_covariance() -> None:
    with pytest.raises(ValueError, match=r"cov_p.*singular"):
        diffused_gaussian_kl(MEAN_P, LINE, MEAN_Q, COV_Q, 0.0)
    # full rank at t = 0 is the plain Gaussian KL
    got = diffused_gaussian_kl(MEAN_P, FULL_P, MEAN_Q, COV_Q, 0.0)
    ref = kl_divergence(MultivariateNormal(MEAN_P, FULL_P), MultivariateNormal(MEAN_Q, COV_Q))
    assert float(got) == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("path", [VPPath(), VEPath()])
def test_score_is_the_gradient_of_the_log_density(path) -> None:
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = t64([0.01, 0.1, 0.3, 0.6, 1.0])
    mean_t, cov_t = diffused_gaussian(MEAN_P, LINE, t, path)
    xr = x.clone().requires_grad_(True)
    MultivariateNormal(mean_t, cov_t).log_prob(xr).sum().backward()
    assert torch.allclose(diffused_gaussian_score(x, t, MEAN_P, LINE, path), xr.grad, rtol=1e-8)


# --------------------------------------------------------------------------------------------
# the Integral KL
# --------------------------------------------------------------------------------------------
def _vp_sigma2(t: float) -> float:
    return -math.expm1(-0.5 * t - 4.75 * t**2)  # β ∈ [0.5, 10]


@pytest.mark.parametrize(
    "path,weight,w_ref",
    [
        (VPPath(), None, lambda t: 1.0),
        (
            VPPath(beta_min=0.5, beta_max=10.0),
            "sigma2",
            lambda t: -math.expm1(-0.5 * t - 4.75 * t * t),
        ),
        (VEPath(sigma_min=0.05, sigma_max=5.0), lambda t: 1.0 + t, lambda t: 1.0 + t),
    ],
)
def test_integral_kl_singular_p_equals_quadrature(path, weight, w_ref) -> None:
    got = integral_kl(MEAN_P, LINE, MEAN_Q, COV_Q, path=path, weight=weight, n_nodes=64)
    ref = quad_ikl(MEAN_P, LINE, MEAN_Q, COV_Q, path, w_ref)
    assert math.isfinite(float(got))
    assert float(got) == pytest.approx(ref, rel=1e-6)


def test_integral_kl_on_a_sub_interval_equals_quadrature() -> None:
    got = integral_kl(MEAN_P, FULL_P, MEAN_Q, LINE, t_min=0.05, t_max=0.6)
    ref = quad_ikl(MEAN_P, FULL_P, MEAN_Q, LINE, VPPath(), lo=0.05, hi=0.6)
    assert float(got) == pytest.approx(ref, rel=1e-9)


def test_integral_kl_equals_monte_carlo() -> None:
    """t ~ U(0, 1), x_t ~ P_t: E[log p_t(x_t) − log q_t(x_t)] by torch's log_prob."""
    g = torch.Generator().manual_seed(3)
    n = 100_000
    t = torch.rand(n, generator=g, dtype=F64)
    mp, cp = diffused_gaussian(MEAN_P, LINE, t)
    mq, cq = diffused_gaussian(MEAN_Q, COV_Q, t)
    p, q = MultivariateNormal(mp, cp), MultivariateNormal(mq, cq)
    x = (
        p.sample(generator=None)
        if False
        else mp
        + (torch.linalg.cholesky(cp) @ torch.randn(n, 2, 1, generator=g, dtype=F64)).squeeze(-1)
    )
    vals = p.log_prob(x) - q.log_prob(x)
    est, se = float(vals.mean()), float(vals.std() / math.sqrt(n))
    got = float(integral_kl(MEAN_P, LINE, MEAN_Q, COV_Q))
    assert abs(got - est) < 4 * se


def test_quadrature_rule_integrates_a_log_singularity() -> None:
    t, w = gauss_legendre_times(0.0, 0.5, 48)
    assert float((w * torch.log(t)).sum()) == pytest.approx(0.5 * math.log(0.5) - 0.5, rel=1e-5)
    assert float(t.min()) > 0 and float(t.max()) < 0.5


def test_integral_kl_is_zero_on_equal_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        a = torch.randn(2, 2, generator=g, dtype=F64)
        m = torch.randn(2, generator=g, dtype=F64)
        assert abs(float(integral_kl(m, a @ a.T, m, a @ a.T, t_min=1e-3))) < 1e-12
        b = torch.randn(2, 1, generator=g, dtype=F64)
        assert float(integral_kl(m, b @ b.T, m + 0.1, a @ a.T + 0.1 * torch.eye(2))) > 0


def test_point_mass_at_zero_recovers_kl() -> None:
    """w = 1/ε on [0, ε] → KL(P_0‖Q_0) for a full-rank P_0 (error O(ε)); for a singular P_0
    the same average grows without bound as ε → 0 (KL(P_0‖Q_0) = ∞)."""
    ref = float(
        kl_divergence(MultivariateNormal(MEAN_P, FULL_P), MultivariateNormal(MEAN_Q, COV_Q))
    )
    errs = []
    for eps in (1e-3, 1e-5):
        got = integral_kl(
            MEAN_P, FULL_P, MEAN_Q, COV_Q, t_max=eps, weight=lambda t, e=eps: t * 0 + 1 / e
        )
        errs.append(abs(float(got) - ref))
    assert errs[1] < 1e-4 * ref and errs[1] < errs[0]
    singular = [
        float(
            integral_kl(
                MEAN_P, LINE, MEAN_Q, COV_Q, t_max=eps, weight=lambda t, e=eps: t * 0 + 1 / e
            )
        )
        for eps in (1e-2, 1e-4, 1e-6)
    ]
    assert singular[0] < singular[1] < singular[2] and singular[2] > 6.0


def test_integral_kl_batches_broadcast() -> None:
    means = torch.stack([MEAN_P, MEAN_Q, MEAN_P + 1])
    got = integral_kl(means, LINE, MEAN_Q, COV_Q)
    assert got.shape == (3,)
    for i in range(3):
        assert float(got[i]) == pytest.approx(
            float(integral_kl(means[i], LINE, MEAN_Q, COV_Q)), rel=1e-12
        )


def test_integral_kl_dtype() -> None:
    v32 = integral_kl(MEAN_P.float(), LINE.float(), MEAN_Q.float(), COV_Q.float())
    assert v32.dtype == torch.float32
    assert float(v32) == pytest.approx(float(integral_kl(MEAN_P, LINE, MEAN_Q, COV_Q)), rel=1e-6)


@pytest.mark.filterwarnings("ignore:integral_kl. `cov_p` is .nearly. singular:UserWarning")
def test_integral_kl_gradcheck_through_generator_factors() -> None:
    """Gradients in the means and in factors A (Σ = AAᵀ), P's of rank 1."""

    def f(mp, ap, mq, aq):
        return integral_kl(mp, ap @ ap.T, mq, aq @ aq.T + 0.1 * torch.eye(2, dtype=F64), n_nodes=24)

    g = torch.Generator().manual_seed(7)
    args = (
        MEAN_P.clone(),
        torch.randn(2, 1, generator=g, dtype=F64),
        MEAN_Q.clone(),
        torch.randn(2, 2, generator=g, dtype=F64),
    )
    assert torch.autograd.gradcheck(f, tuple(a.requires_grad_(True) for a in args))
    # and the ve path with the sigma2 weight
    assert torch.autograd.gradcheck(
        lambda mp, ap: integral_kl(
            mp, ap @ ap.T, MEAN_Q, COV_Q, path="ve", weight="sigma2", n_nodes=16
        ),
        (args[0], args[1]),
    )


def test_gradient_of_ikl_is_finite_at_a_singular_generator() -> None:
    a = t64([[1.0, 0.0], [0.5, 0.0]]).requires_grad_(True)  # x0 = A z on a line
    m = torch.zeros(2, dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match="depends on n_nodes"):
        integral_kl(m, a @ a.T, MEAN_Q, COV_Q).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(m.grad).all()
    assert float(a.grad[:, 1].abs().sum()) == 0.0  # Σ = AAᵀ does not see a zero column ...
    assert float(a.grad[:, 0].abs().sum()) > 0


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mean_p=t64([math.nan, 0.0])), "mean_p.*NaN"),
        (dict(cov_q=t64([[1.0, math.inf], [0.0, 1.0]])), "cov_q.*infinite"),
        (dict(cov_q=t64([[1.0, 0.5], [0.0, 1.0]])), "cov_q.*symmetric"),
        (dict(cov_p=t64([[1.0, 0.0], [0.0, -0.5]])), "cov_p.*positive semi-definite"),
        (dict(cov_p=t64([[1.0]])), "cov_p.*\\(2, 2\\)"),
        (dict(mean_q=t64([0.0, 0.0, 0.0]), cov_q=torch.eye(3, dtype=F64)), "same dimension"),
        (dict(mean_p=torch.zeros(2, dtype=torch.int64)), "mean_p.*floating"),
        (dict(cov_q=LINE), "cov_q.*singular.*t_min > 0"),
        (dict(t_min=0.5, t_max=0.2), "t_min.*t_max"),
        (dict(t_max=1.5), "t_max"),
        (dict(n_nodes=1), "n_nodes"),
        (dict(path="edm"), "path"),
        (dict(weight="sigma"), "weight"),
        (dict(weight=lambda t: t - 0.5), "weight.*>= 0"),
        (dict(weight=lambda t: torch.full_like(t, math.nan)), "weight.*finite"),
        (dict(weight=lambda t: t[:3]), "weight.*shape"),
    ],
)
def test_bad_input_is_refused(kwargs: dict, match: str) -> None:
    args = dict(mean_p=MEAN_P, cov_p=LINE, mean_q=MEAN_Q, cov_q=COV_Q)
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        integral_kl(args["mean_p"], args["cov_p"], args["mean_q"], args["cov_q"], **opts)


def test_singular_q_is_accepted_away_from_zero() -> None:
    assert math.isfinite(float(integral_kl(MEAN_P, COV_Q, MEAN_Q, LINE, t_min=0.01)))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: diffused_gaussian(MEAN_P, LINE, 1.5), "`t`.*\\[0, 1\\]"),
        (lambda: diffused_gaussian(MEAN_P, LINE, t64([0.1, math.nan])), "`t`"),
        (lambda: diffused_gaussian_score(t64([[math.nan, 0.0]]), 0.1, MEAN_P, LINE), "`x`"),
        (lambda: diffused_gaussian_score(t64([[0.0, 0.0]]), 0.0, MEAN_P, LINE), "singular"),
        (lambda: diffused_gaussian_score(t64([[0.0, 0.0]]), t64([0.1, 0.2]), MEAN_P, LINE), "`t`"),
        (lambda: VPPath(beta_min=2.0, beta_max=1.0), "beta_max"),
        (lambda: VPPath(beta_min=math.nan), "beta_min"),
        (lambda: VEPath(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
    ],
)
def test_bad_input_elsewhere_is_refused(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# nearly singular Σ_Q, singular-Σ_P gradients, shapes (review findings 6, 7, 14)
# --------------------------------------------------------------------------------------------
def quad_ikl_decades(mp, cp, mq, cq, path, lo=0.0, hi=1.0) -> float:
    """scipy quad over decades of t − lo (resolves a spike of any width ≥ 1e-17 at lo)."""
    edges = [lo] + [lo + (hi - lo) * 10.0**k for k in range(-17, 1)]
    return sum(
        integrate.quad(
            lambda t: ref_kl_t(mp, cp, mq, cq, t, path), a, b, limit=200, epsabs=0, epsrel=1e-11
        )[0]
        for a, b in itertools.pairwise(edges)
    )


@pytest.mark.parametrize("lam,old_value", [(1e-8, 60.13), (1e-11, 65.62)])
def test_nearly_singular_q_at_t_min_zero_equals_quadrature(lam, old_value) -> None:
    """The trial's two examples: the fixed nodes gave 60.13 and 65.62 (5 % and 28 % off)."""
    zero, cq = torch.zeros(2, dtype=F64), torch.diag(t64([1.0, lam]))
    got = float(integral_kl(zero, torch.eye(2, dtype=F64), zero, cq))
    ref = quad_ikl_decades(zero, torch.eye(2, dtype=F64), zero, cq, VPPath())
    assert got == pytest.approx(ref, rel=1e-8)
    assert abs(old_value - ref) > 0.04 * ref


# scipy's quad may warn about roundoff on the sharpest decade; the 1e-6 comparison still binds
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("path,t_min", [(VPPath(), 0.0), (VEPath(), 0.0), (VPPath(), 1e-7)])
def test_nearly_singular_q_two_scales_equals_quadrature(path, t_min) -> None:
    rot = t64([[0.8, -0.6], [0.6, 0.8]])
    cq = rot @ torch.diag(t64([1e-3, 1e-9])) @ rot.T
    got = float(integral_kl(MEAN_P, FULL_P, MEAN_Q, cq, path=path, t_min=t_min))
    ref = quad_ikl_decades(MEAN_P, FULL_P, MEAN_Q, cq, path, lo=t_min)
    assert got == pytest.approx(ref, rel=1e-6)


def test_node_adaptation_switches_at_its_threshold() -> None:
    """Under VP ρ(0.01) = e^{B(0.01)} − 1 ≈ 2.0e-3, so λ = 2.2e-3 (τ > 1e-2 L) keeps the plain
    rule (bit for bit), λ = 1.8e-3 (τ < 1e-2 L) adapts; both agree with scipy."""
    from divergent.distributions.diffusion import _kl_at

    for lam, plain in ((2.2e-3, True), (1.8e-3, False)):
        cq = torch.diag(t64([1.0, lam]))
        got = integral_kl(MEAN_P, FULL_P, MEAN_Q, cq)
        t, w = gauss_legendre_times(0.0, 1.0, 48)
        fixed = (w * _kl_at(MEAN_P, FULL_P, MEAN_Q, cq, t, VPPath())).sum()
        assert (float(got) == float(fixed)) is plain
        ref = quad_ikl_decades(MEAN_P, FULL_P, MEAN_Q, cq, VPPath())
        assert float(got) == pytest.approx(ref, rel=1e-9)


def test_adapted_rule_integrates_the_spike_exactly() -> None:
    t, w = gauss_legendre_times(0.0, 1.0, 16, scale=1e-11)
    assert float((w / (1e-11 + t)).sum()) == pytest.approx(math.log1p(1e11), rel=1e-12)
    assert float(t.min()) > 0 and float(t.max()) <= 1.0
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="scale"):
        gauss_legendre_times(0.0, 1.0, 16, scale=-1.0)


def test_gradient_at_a_singular_p_from_zero_warns_and_not_away_from_zero() -> None:
    lam = torch.tensor(0.0, dtype=F64, requires_grad=True)
    cp = torch.diag(torch.stack([torch.tensor(1.0, dtype=F64), lam]))
    zero = torch.zeros(2, dtype=F64)
    with pytest.warns(UserWarning, match="cov_p.*singular.*n_nodes"):
        integral_kl(zero, cp, zero, torch.eye(2, dtype=F64)).backward()
    near = torch.diag(t64([1.0, 1e-8])).requires_grad_(True)  # finite but unresolved
    with pytest.warns(UserWarning, match="n_nodes"):
        integral_kl(zero, near, zero, torch.eye(2, dtype=F64))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integral_kl(zero, cp, zero, torch.eye(2, dtype=F64), t_min=1e-3)  # resolved there
        integral_kl(zero, cp, zero, torch.eye(2, dtype=F64), weight="sigma2")  # w/ρ bounded
        with torch.no_grad():
            integral_kl(zero, cp, zero, torch.eye(2, dtype=F64))  # no gradient asked
        integral_kl(zero, cp.detach(), zero, torch.eye(2, dtype=F64))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(
                mean_p=torch.zeros(3, 2, dtype=F64), cov_p=torch.eye(2, dtype=F64).expand(4, 2, 2)
            ),
            "mean_p.*cov_p.*broadcast",
        ),
        (dict(mean_q=torch.zeros(3, 2, dtype=F64)), "batch shapes.*mean_q"),
        (
            dict(mean_p=torch.zeros(0, dtype=F64), cov_p=torch.zeros(0, 0, dtype=F64)),
            "mean_p.*d = 0",
        ),
    ],
)
def test_shape_errors_name_the_arguments(kwargs: dict, match: str) -> None:
    args = dict(mean_p=MEAN_P, cov_p=FULL_P, mean_q=MEAN_Q, cov_q=COV_Q.expand(4, 2, 2))
    if "mean_q" not in kwargs:
        args["cov_q"] = COV_Q
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        integral_kl(args["mean_p"], args["cov_p"], args["mean_q"], args["cov_q"])
