"""exponential_family_kl (Bregman form) against torch's kl_divergence and own families."""

from __future__ import annotations

import math

import pytest
import torch
from _distributions_refs import quad, t
from scipy import stats
from torch.distributions import (
    Beta,
    Dirichlet,
    Exponential,
    Gamma,
    Normal,
    Poisson,
    VonMises,
    kl_divergence,
)

import divergent

F64 = torch.float64


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


@pytest.mark.parametrize(
    ("p", "q", "event"), TORCH_FAMILIES, ids=[type(f[0]).__name__ for f in TORCH_FAMILIES]
)
def test_exponential_family_kl_matches_torch(p, q, event: int) -> None:
    got = divergent.exponential_family_kl(
        p._natural_params, q._natural_params, p._log_normalizer, event_ndims=event
    )
    torch.testing.assert_close(got, kl_divergence(p, q), rtol=1e-10, atol=1e-12)


def test_exponential_family_kl_own_families() -> None:
    # categorical: θ = logits, A = logsumexp (overparametrised but the Bregman form holds)
    g = torch.Generator().manual_seed(0)
    pl, ql = torch.randn(3, 5, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64)
    got = divergent.exponential_family_kl(pl, ql, lambda th: torch.logsumexp(th, -1), event_ndims=1)
    torch.testing.assert_close(got, divergent.kl(pl, ql, reduction="none"), rtol=1e-12, atol=0)

    # von Mises: θ = κ(cos μ, sin μ), A(θ) = log 2π I₀(‖θ‖); against Monte Carlo
    def log_partition(eta: torch.Tensor) -> torch.Tensor:
        k = eta.norm(dim=-1)
        return math.log(2 * math.pi) + torch.log(torch.special.i0e(k)) + k

    def theta(mu: float, kappa: float) -> torch.Tensor:
        return kappa * t([math.cos(mu), math.sin(mu)])

    p, q = VonMises(t(0.3), t(2.0)), VonMises(t(-0.5), t(0.8))
    exact = divergent.exponential_family_kl(
        theta(0.3, 2.0), theta(-0.5, 0.8), log_partition, event_ndims=1
    )
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
        lambda a, b: divergent.exponential_family_kl(a, b, torch.exp), (th1, th2)
    )
    # Normal in natural parameters (μ/σ², −1/(2σ²)): gradient w.r.t. both sets
    n1 = tuple(x.clone().requires_grad_(True) for x in Normal(t([0.3]), t([1.2]))._natural_params)
    n2 = tuple(x.clone().requires_grad_(True) for x in Normal(t([-0.1]), t([0.7]))._natural_params)
    a_fn = Normal(t([0.0]), t([1.0]))._log_normalizer
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: divergent.exponential_family_kl((a, b), (c, d), a_fn), (*n1, *n2)
    )
