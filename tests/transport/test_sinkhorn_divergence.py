"""sinkhorn_divergence against POT's entropic objectives, its limits (MMD, W_p), gradients."""

from __future__ import annotations

import math

import pytest
import torch
from _transport_refs import exact_ot, pot_entropic

import divergent

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# Sinkhorn divergence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_divergence_matches_pot_composition(p: int) -> None:
    g = torch.Generator().manual_seed(p)
    x = torch.rand(15, 2, generator=g, dtype=F64)
    y = torch.rand(11, 2, generator=g, dtype=F64) + 0.2
    xw = torch.rand(15, generator=g, dtype=F64) + 0.1
    xw = xw / xw.sum()
    eps = 0.1
    value = divergent.sinkhorn_divergence(x, y, eps, p=p, x_weights=xw, tol=1e-13, max_iter=100_000)
    yw = torch.full((11,), 1 / 11, dtype=F64)
    cxy = torch.cdist(x, y) ** p
    cxx = torch.cdist(x, x) ** p
    cyy = torch.cdist(y, y) ** p
    ref = (
        pot_entropic(xw, yw, cxy, eps)
        - 0.5 * pot_entropic(xw, xw, cxx, eps)
        - 0.5 * pot_entropic(yw, yw, cyy, eps)
    )
    assert float(value) == pytest.approx(ref, abs=1e-9)


def test_sinkhorn_divergence_zero_at_identity_and_nonnegative() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 2, generator=g, dtype=F64)
    assert torch.equal(divergent.sinkhorn_divergence(x, x, 0.05), torch.zeros(3, dtype=F64))
    shift = torch.tensor([1e-3, -2e-3], dtype=F64)
    for p in (1, 2):
        for eps in (0.1, 0.3, 1.0):
            y = torch.rand(3, 17, 2, generator=g, dtype=F64)
            s = divergent.sinkhorn_divergence(x, y, eps, p=p)
            assert bool((s >= -1e-9).all()), (p, eps, s)
            # a small translation: non-negative and small; for p = 2 exactly |δ|² (the squared
            # cost of a translate differs by separable terms, which the debiasing removes)
            s_close = divergent.sinkhorn_divergence(x, x + shift, eps, p=p)
            assert bool((s_close >= -1e-12).all())
            if p == 2:
                torch.testing.assert_close(
                    s_close, torch.full_like(s_close, 5e-6), rtol=0, atol=1e-10
                )
            else:
                assert bool((s_close <= 2 * float(shift.norm())).all())


@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_divergence_large_eps_is_half_mmd(p: int) -> None:
    """ε → ∞: S_ε → ½ MMD²_{−C} = E C(x,y) − ½E C(x,x') − ½E C(y,y') (Feydy et al., Thm 1)."""
    g = torch.Generator().manual_seed(10 + p)
    x = torch.rand(12, 2, generator=g, dtype=F64)
    y = torch.rand(9, 2, generator=g, dtype=F64) * 1.5
    half_mmd = (
        (torch.cdist(x, y) ** p).mean()
        - 0.5 * (torch.cdist(x, x) ** p).mean()
        - 0.5 * (torch.cdist(y, y) ** p).mean()
    )
    s = divergent.sinkhorn_divergence(x, y, 1e5, p=p, tol=1e-13)
    assert float(s) == pytest.approx(float(half_mmd), rel=1e-4)


def test_sinkhorn_divergence_small_eps_tends_to_wasserstein() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, generator=g, dtype=F64)
    y = torch.rand(6, 2, generator=g, dtype=F64)
    w = torch.full((6,), 1 / 6, dtype=F64)
    exact = exact_ot(w.numpy(), w.numpy(), (torch.cdist(x, y) ** 2).numpy())
    errors = [
        abs(float(divergent.sinkhorn_divergence(x, y, eps, tol=1e-11, max_iter=20_000)) - exact)
        / exact
        for eps in (0.1, 0.03, 0.01)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03


def test_sinkhorn_divergence_gradcheck_points() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 2, generator=g, dtype=F64).requires_grad_(True)
    y = torch.rand(4, 2, generator=g, dtype=F64).requires_grad_(True)

    def fn(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return divergent.sinkhorn_divergence(xx, yy, 0.1, tol=1e-14, max_iter=100_000)

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_sinkhorn_divergence_errors() -> None:
    with pytest.raises(ValueError, match="same point dimension"):
        divergent.sinkhorn_divergence(torch.rand(4, 2), torch.rand(4, 3), 0.1)
    with pytest.raises(ValueError, match="`p`"):
        divergent.sinkhorn_divergence(torch.rand(4, 2), torch.rand(4, 2), 0.1, p=0.5)


def test_sinkhorn_divergence_weight_errors_name_the_argument() -> None:
    x, y = torch.rand(4, 2, dtype=F64), torch.rand(3, 2, dtype=F64)
    neg = torch.tensor([0.5, 0.7, -0.2, 0.0], dtype=F64)
    with pytest.raises(ValueError, match=r"`x_weights` must be non-negative.*-0\.2"):
        divergent.sinkhorn_divergence(x, y, 0.1, x_weights=neg)
    with pytest.raises(ValueError, match=r"`y_weights` must sum to 1.*sums to 2"):
        divergent.sinkhorn_divergence(x, y, 0.1, y_weights=torch.full((3,), 2 / 3, dtype=F64))
    with pytest.raises(ValueError, match=r"`y_weights` has 4 entries.*`y` has 3 points"):
        divergent.sinkhorn_divergence(x, y, 0.1, y_weights=torch.full((4,), 0.25, dtype=F64))
    with pytest.raises(ValueError, match=r"`x_weights` must be finite"):
        divergent.sinkhorn_divergence(x, y, 0.1, x_weights=torch.full((4,), math.nan))
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"`x` \(the points\) must be finite"):
        divergent.sinkhorn_divergence(bad, y, 0.1)
