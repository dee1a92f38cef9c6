"""Gaussian mixtures: certified bounds bracket the quadrature value; approximations; Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from _distributions_refs import MIXTURES, mix1d, mix_logpdf, quad, t
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

import divergent

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fp", "fq"), MIXTURES)
def test_mixture_bounds_bracket_the_quadrature_value(fp: tuple, fq: tuple) -> None:
    lp, lq = mix_logpdf(*fp), mix_logpdf(*fq)
    truth = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -30, 30)
    p, q = mix1d(*fp), mix1d(*fq)
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
        rel=1e-12,
    )


def test_mixture_approximations_are_not_bounds() -> None:
    """The Hershey–Olsen variational value can be far from the truth (hence MC by default)."""
    fp, fq = MIXTURES[0]
    lp, lq = mix_logpdf(*fp), mix_logpdf(*fq)
    truth = quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -30, 30)
    var = divergent.closed_form("kl", mix1d(*fp), mix1d(*fq), method="variational")
    assert truth == pytest.approx(0.1852, abs=1e-3)
    assert float(var.value) > truth + 0.5


def test_single_components_are_exact() -> None:
    p = MultivariateNormal(t([0.0, 1.0]), t([[1.0, 0.2], [0.2, 0.5]]))
    q = MultivariateNormal(t([0.5, 0.0]), t([[2.0, 0.0], [0.0, 1.0]]))
    as_mix = MixtureSameFamily(
        Categorical(probs=t([1.0])), MultivariateNormal(p.loc[None], p.covariance_matrix[None])
    )
    exact = float(kl_divergence(p, q))
    for method in ("variational", "goldberger", "upper"):
        got = divergent.closed_form("kl", as_mix, q, method=method)
        assert float(got.value) == pytest.approx(exact, rel=1e-10)


def test_multivariate_mixture_bounds_and_monte_carlo() -> None:
    g = torch.Generator().manual_seed(3)
    mus_p, mus_q = (
        torch.randn(3, 2, generator=g, dtype=F64),
        torch.randn(2, 2, generator=g, dtype=F64),
    )
    covs = torch.eye(2, dtype=F64) * t([[[0.5]], [[0.8]], [[1.2]]])
    p = MixtureSameFamily(Categorical(probs=t([0.2, 0.5, 0.3])), MultivariateNormal(mus_p, covs))
    q = MixtureSameFamily(
        Categorical(probs=t([0.6, 0.4])), Independent(Normal(mus_q, t([[1.0, 0.7], [0.6, 1.1]])), 1)
    )
    res = divergent.closed_form("kl", p, q, seed=2, num_samples=200_000)
    assert float(res.lower) <= float(res.value) + 4 * float(res.stderr)
    assert float(res.upper) >= float(res.value) - 4 * float(res.stderr)
    assert float(res.upper) > float(res.lower)
