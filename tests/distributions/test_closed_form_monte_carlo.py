"""method='mc' against quadrature for pairs without a closed form; seeding and the RNG state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _distributions_refs import quad, t
from scipy import stats
from torch.distributions import (
    Normal,
    StudentT,
)

import divergent

F64 = torch.float64


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
    js = divergent.closed_form(
        "js", Normal(t(0.0), t(1.0)), Normal(t(1.0), t(1.0)), method="mc", seed=0
    )
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
