"""sinkhorn_unbalanced against POT, the primal minimum (L-BFGS-B), gradcheck, balanced limit."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from _transport_refs import problem

import divergent

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# unbalanced OT
# --------------------------------------------------------------------------------------------
def _unbalanced_problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(4, 3, generator=g, dtype=F64)
    a = torch.rand(4, generator=g, dtype=F64)  # masses ≠ 1 and ≠ each other
    b = 2.0 * torch.rand(3, generator=g, dtype=F64)
    return a, b, cost


@pytest.mark.parametrize(
    ("eps", "rho"), [(0.1, 1.0), (0.05, 0.3), (0.5, (5.0, 0.2)), (0.1, (math.inf, 0.5))]
)
def test_unbalanced_transport_and_plan_match_pot(eps: float, rho) -> None:
    a, b, cost = _unbalanced_problem(0)
    value, plan = divergent.sinkhorn_unbalanced(
        a, b, cost, eps, rho, tol=1e-13, max_iter=100_000, return_plan=True
    )
    ref_plan = ot.unbalanced.sinkhorn_unbalanced(
        a, b, cost, eps, rho, stopThr=1e-15, numItermax=200_000
    )
    torch.testing.assert_close(plan, ref_plan, rtol=1e-9, atol=1e-13)
    assert float(value) == pytest.approx(float((ref_plan * cost).sum()), rel=1e-10)


def _uot_objective(t_flat: np.ndarray, a, b, cost, eps, rho) -> float:
    t = t_flat.reshape(cost.shape)

    def gkl(x, y):
        return float(np.sum(x * np.log(x / y) - x + y))

    return float(
        (t * cost).sum()
        + eps * gkl(t, np.outer(a, b))
        + rho * gkl(t.sum(1), a)
        + rho * gkl(t.sum(0), b)
    )


def test_unbalanced_total_is_the_minimum_of_the_primal() -> None:
    """Against a direct numerical minimisation of the convex primal (scipy L-BFGS-B)."""
    from scipy.optimize import minimize

    a, b, cost = _unbalanced_problem(1)
    eps, rho = 0.2, 0.7
    total, plan = divergent.sinkhorn_unbalanced(
        a, b, cost, eps, rho, objective="total", tol=1e-13, max_iter=100_000, return_plan=True
    )
    args = (a.numpy(), b.numpy(), cost.numpy(), eps, rho)
    at_plan = _uot_objective(plan.numpy().ravel(), *args)
    assert float(total) == pytest.approx(at_plan, rel=1e-12)
    res = minimize(
        _uot_objective,
        np.full(12, 0.1),
        args=args,
        method="L-BFGS-B",
        bounds=[(1e-12, None)] * 12,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    assert res.fun >= float(total) - 1e-9  # nothing beats the Sinkhorn optimum
    assert res.fun == pytest.approx(float(total), abs=1e-6)


@pytest.mark.parametrize("objective", ["transport", "total"])
def test_unbalanced_gradcheck(objective: str) -> None:
    a, b, cost = _unbalanced_problem(2)
    args = tuple(x.clone().requires_grad_(True) for x in (cost, a, b))

    def fn(c: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return divergent.sinkhorn_unbalanced(
            x, y, c, 0.1, 0.7, tol=1e-14, max_iter=100_000, objective=objective
        )

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_unbalanced_batch_and_balanced_limit() -> None:
    a, b, cost = problem(6, 5, seed=3, batch=(3,))
    batched = divergent.sinkhorn_unbalanced(a, b, cost, 0.1, 2.0, tol=1e-12)
    for k in range(3):
        single = divergent.sinkhorn_unbalanced(a[k], b[k], cost[k], 0.1, 2.0, tol=1e-12)
        assert float(batched[k]) == pytest.approx(float(single), rel=1e-10)
    # ρ → ∞ recovers balanced OT (probability marginals)
    balanced = divergent.sinkhorn(a, b, cost, 0.1, tol=1e-12)
    near = divergent.sinkhorn_unbalanced(a, b, cost, 0.1, 20.0, tol=1e-10, max_iter=100_000)
    torch.testing.assert_close(near, balanced, rtol=0.05, atol=0)
    far = divergent.sinkhorn_unbalanced(a, b, cost, 0.1, 0.5, tol=1e-10, max_iter=100_000)
    assert bool(((near - balanced).abs() < (far - balanced).abs()).all())
    with pytest.raises(ValueError, match="`rho`"):
        divergent.sinkhorn_unbalanced(a, b, cost, 0.1, 0.0)
    with pytest.raises(ValueError, match="`objective`"):
        divergent.sinkhorn_unbalanced(a, b, cost, 0.1, 1.0, objective="linear")
    with pytest.raises(ValueError, match="non-negative"):
        divergent.sinkhorn_unbalanced(-a, b, cost, 0.1, 1.0)
