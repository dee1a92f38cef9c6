"""wasserstein_1d against scipy.stats.wasserstein_distance, sorted samples, LP and POT."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from _transport_refs import exact_ot
from scipy.stats import wasserstein_distance

import divergent

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# exact 1-D Wasserstein
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_1d_p1_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=13)
    v = rng.normal(loc=0.5, size=9)
    u[3] = u[5]  # ties
    uw = rng.random(13)
    vw = rng.random(9)
    vw[2] = 0.0  # zero weight
    ref = wasserstein_distance(u, v, uw, vw)
    got = divergent.wasserstein_1d(
        torch.from_numpy(u), torch.from_numpy(v), torch.from_numpy(uw), torch.from_numpy(vw)
    )
    assert float(got) == pytest.approx(ref, rel=1e-12, abs=1e-14)
    assert float(divergent.wasserstein_1d(torch.from_numpy(u), torch.from_numpy(v))) == (
        pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    )


def test_wasserstein_1d_p2_sorted_and_lp() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=20), rng.exponential(size=20)
    # equal sizes, uniform weights: W₂² is the mean squared difference of the sorted samples
    direct = math.sqrt(float(np.mean((np.sort(u) - np.sort(v)) ** 2)))
    got = divergent.wasserstein_1d(torch.from_numpy(u), torch.from_numpy(v), p=2)
    assert float(got) == pytest.approx(direct, rel=1e-12)
    # weighted, different sizes, p = 3: exact LP with |x − y|^p
    u2, v2 = rng.normal(size=7), rng.normal(size=5)
    uw, vw = rng.random(7), rng.random(5)
    uw, vw = uw / uw.sum(), vw / vw.sum()
    lp = exact_ot(uw, vw, np.abs(u2[:, None] - v2[None, :]) ** 3)
    got3 = divergent.wasserstein_1d(
        torch.from_numpy(u2), torch.from_numpy(v2), torch.from_numpy(uw), torch.from_numpy(vw), p=3
    )
    assert float(got3) == pytest.approx(lp ** (1 / 3), rel=1e-9)
    # POT returns W_p^p
    pot = ot.wasserstein_1d(u2, v2, uw, vw, p=3)
    assert float(got3) ** 3 == pytest.approx(float(pot), rel=1e-9)


def test_wasserstein_1d_batched_and_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 6, generator=g, dtype=F64)
    v = torch.randn(2, 3, 4, generator=g, dtype=F64)
    batched = divergent.wasserstein_1d(u, v, p=2)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            single = divergent.wasserstein_1d(u[i, j], v[i, j], p=2)
            assert float(batched[i, j]) == pytest.approx(float(single), rel=1e-13)
    uu = u[0, 0].clone().requires_grad_(True)
    vv = v[0, 0].clone().requires_grad_(True)
    uw = torch.rand(6, generator=g, dtype=F64).add(0.1).requires_grad_(True)
    for p in (1, 2):
        assert torch.autograd.gradcheck(
            lambda a_, b_, w_, p=p: divergent.wasserstein_1d(a_, b_, w_, None, p=p),
            (uu, vv, uw),
        )


def test_wasserstein_1d_errors() -> None:
    with pytest.raises(ValueError, match="`p`"):
        divergent.wasserstein_1d(torch.rand(3), torch.rand(3), p=0.5)
    with pytest.raises(ValueError, match="leading"):
        divergent.wasserstein_1d(torch.rand(2, 3), torch.rand(3, 3))
    with pytest.raises(ValueError, match="`u_weights`"):
        divergent.wasserstein_1d(torch.rand(3), torch.rand(3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="`v_weights` must have the shape"):
        divergent.wasserstein_1d(torch.rand(3), torch.rand(3), None, torch.rand(4))
