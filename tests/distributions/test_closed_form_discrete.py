"""closed_form between Categorical / OneHotCategorical / Bernoulli against numpy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _distributions_refs import t
from scipy.special import rel_entr
from torch.distributions import (
    Bernoulli,
    Categorical,
    OneHotCategorical,
    kl_divergence,
)

import divergent

F64 = torch.float64


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
        onehot = divergent.closed_form(
            name, OneHotCategorical(logits=pl), OneHotCategorical(logits=ql), **params
        )
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
    assert float(cf("renyi", pp, qq, order=0.5).value) == pytest.approx(
        -2 * math.log(bc), rel=1e-14
    )
    m = 0.5 * (p + q)
    js = 0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum()
    assert float(cf("js", pp, qq).value) == pytest.approx(js, rel=1e-13)


def test_bernoulli_pairs() -> None:
    p, q = Bernoulli(probs=t([0.2, 0.9])), Bernoulli(probs=t([0.5, 0.6]))
    torch.testing.assert_close(
        divergent.closed_form("kl", p, q).value, kl_divergence(p, q), rtol=1e-12, atol=0
    )
    h = divergent.closed_form("hellinger", p, q).value
    ref = 1 - (torch.sqrt(p.probs * q.probs) + torch.sqrt((1 - p.probs) * (1 - q.probs)))
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=0)
