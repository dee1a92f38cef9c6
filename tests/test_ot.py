"""Optimal transport: Sinkhorn vs POT and exact LP, gradients, batching, 1-D Wasserstein, ULD.

References: POT (``ot.sinkhorn2`` / ``ot.sinkhorn`` log-domain, ``ot.emd2``,
``ot.wasserstein_1d``), ``scipy.optimize.linprog`` (exact OT), ``scipy.stats
.wasserstein_distance``, ``torch.autograd.gradcheck`` and finite differences.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import wasserstein_distance

import divergent
import divergent.transport.ot as ot_mod

F64 = torch.float64


def _problem(n: int, m: int, seed: int, batch: tuple[int, ...] = (), zeros: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, 2, generator=g, dtype=F64)
    y = torch.rand(*batch, m, 2, generator=g, dtype=F64)
    cost = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    a = torch.rand(*batch, n, generator=g, dtype=F64) + 0.05
    b = torch.rand(*batch, m, generator=g, dtype=F64) + 0.05
    if zeros:
        a[..., 1] = 0.0
        b[..., -1] = 0.0
    return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), cost


def _pot_plan(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float) -> torch.Tensor:
    return ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)


def _exact_ot(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> float:
    """Exact OT by linear programming (scipy HiGHS), independent of POT."""
    n, m = cost.shape
    rows = np.zeros((n, n * m))
    cols = np.zeros((m, n * m))
    for i in range(n):
        rows[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        cols[j, j::m] = 1.0
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (4, 20)])
def test_transport_cost_matches_pot(eps: float, shape: tuple[int, int]) -> None:
    a, b, cost = _problem(*shape, seed=shape[0] * 31 + shape[1])
    res = divergent.sinkhorn_solve(a, b, cost, eps, tol=1e-13, max_iter=100_000)
    ref = ot.sinkhorn2(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)
    assert bool(res.converged)
    assert abs(float(res.transport) - float(ref)) <= 1e-9 * abs(float(ref))


@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_entropic_objective_and_plan_match_pot(eps: float) -> None:
    a, b, cost = _problem(9, 6, seed=3)
    value, plan = divergent.sinkhorn(a, b, cost, eps, objective="entropic", tol=1e-13,
                                     max_iter=100_000, return_plan=True)
    ref_plan = _pot_plan(a, b, cost, eps)
    torch.testing.assert_close(plan, ref_plan, rtol=1e-8, atol=1e-12)
    kl = (ref_plan * torch.log(ref_plan / (a[:, None] * b[None, :]))).sum()
    ref = (ref_plan * cost).sum() + eps * kl
    assert abs(float(value) - float(ref)) <= 1e-9 * abs(float(ref))
    # the plan has the prescribed marginals
    torch.testing.assert_close(plan.sum(1), a, atol=1e-12, rtol=0)
    torch.testing.assert_close(plan.sum(0), b, atol=1e-12, rtol=0)


def test_zero_mass_entries_match_reduced_problem() -> None:
    a, b, cost = _problem(8, 7, seed=5, zeros=True)
    res = divergent.sinkhorn_solve(a, b, cost, 0.05, tol=1e-13, max_iter=100_000,
                                   return_plan=True)
    keep_a, keep_b = a > 0, b > 0
    ref = ot.sinkhorn2(a[keep_a], b[keep_b], cost[keep_a][:, keep_b], 0.05,
                       method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)
    assert abs(float(res.transport) - float(ref)) <= 1e-9 * float(ref)
    assert res.plan is not None
    assert float(res.plan[~keep_a].abs().max()) == 0.0
    assert float(res.plan[:, ~keep_b].abs().max()) == 0.0
    assert bool(torch.isfinite(res.f).all()) and bool(torch.isfinite(res.g).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_to_exact_ot_as_eps_vanishes(seed: int) -> None:
    """OT₀ ≤ ⟨T_ε, C⟩ ≤ OT₀ + ε·log min(n, m) (KL(T*‖a⊗b) ≤ min(H(a), H(b)))."""
    a, b, cost = _problem(6, 7, seed=seed)
    exact = _exact_ot(a.numpy(), b.numpy(), cost.numpy())
    gaps = []
    for eps in (0.1, 0.01, 0.002):
        value = float(divergent.sinkhorn(a, b, cost, eps, tol=1e-12, max_iter=200_000))
        assert exact - 1e-9 <= value <= exact + eps * math.log(6) + 1e-9
        gaps.append(value - exact)
    assert gaps[-1] <= 0.002 * math.log(6) + 1e-9
    # the entropic objective is above OT₀ too
    ent = float(divergent.sinkhorn(a, b, cost, 0.01, objective="entropic", tol=1e-12,
                                   max_iter=200_000))
    assert ent >= exact - 1e-9


def test_doc_example_exact_transport() -> None:
    x = torch.linspace(0, 1, 5, dtype=F64)
    cost = (x[:, None] - x[None, :]) ** 2
    a = torch.tensor([0.5, 0.5, 0, 0, 0], dtype=F64)
    b = torch.tensor([0, 0, 0, 0.5, 0.5], dtype=F64)
    exact = _exact_ot(a.numpy(), b.numpy(), cost.numpy())
    assert exact == pytest.approx(0.5625, abs=1e-12)
    assert float(divergent.sinkhorn(a, b, cost, eps=1e-3)) == pytest.approx(exact, abs=1e-6)


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
def test_batch_equals_one_by_one_with_broadcasting() -> None:
    a, b, cost = _problem(10, 8, seed=7, batch=(2, 3))
    a_shared = a[0, 0]  # (n,) broadcast over the batch
    res = divergent.sinkhorn_solve(a_shared, b, cost, 0.05, tol=1e-13, max_iter=100_000)
    assert res.transport.shape == (2, 3)
    assert res.f.shape == (2, 3, 10) and res.g.shape == (2, 3, 8)
    for i in range(2):
        for j in range(3):
            single = divergent.sinkhorn(a_shared, b[i, j], cost[i, j], 0.05, tol=1e-13,
                                        max_iter=100_000)
            assert abs(float(res.transport[i, j]) - float(single)) <= 1e-10 * float(single)


def test_per_problem_convergence() -> None:
    """Problems of different difficulty stop at different iteration counts, each converged."""
    a, b, cost = _problem(12, 12, seed=11, batch=(3,))
    cost = cost * torch.tensor([0.2, 1.0, 5.0], dtype=F64)[:, None, None]  # harder with scale
    res = divergent.sinkhorn_solve(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    assert bool(res.converged.all())
    assert bool((res.marginal_error <= 1e-12).all())
    counts = res.n_iter.tolist()
    assert counts[0] < counts[1] < counts[2]
    for k in range(3):
        single = divergent.sinkhorn_solve(a[k], b[k], cost[k], 0.05, tol=1e-12,
                                          max_iter=100_000)
        assert abs(float(res.transport[k]) - float(single.transport)) <= 1e-9 * float(
            single.transport
        )


def test_cpu_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, cost = _problem(16, 16, seed=2, batch=(5,))
    whole = divergent.sinkhorn(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    monkeypatch.setattr(ot_mod, "_CPU_CHUNK_BYTES", 1)  # one problem per chunk
    chunked = divergent.sinkhorn(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    torch.testing.assert_close(whole, chunked, rtol=1e-10, atol=0)


def test_eps_scaling_and_small_eps_are_stable() -> None:
    """ε = range/2000 (annealed by default) and a forced long annealing give the POT value."""
    a, b, cost = _problem(10, 9, seed=4)
    eps = 5e-4
    ref = ot.sinkhorn2(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-12,
                       numItermax=2_000_000)
    for start in (None, 100.0):
        res = divergent.sinkhorn_solve(a, b, cost, eps, tol=1e-11, max_iter=2_000_000,
                                       eps_start=start)
        assert bool(res.converged) and bool(torch.isfinite(res.f).all())
        assert abs(float(res.transport) - float(ref)) <= 1e-7 * float(ref)


def test_float32_close_to_float64() -> None:
    a, b, cost = _problem(30, 20, seed=9, batch=(4,))
    v64 = divergent.sinkhorn(a, b, cost, 0.05)
    v32 = divergent.sinkhorn(a.float(), b.float(), cost.float(), 0.05)
    assert v32.dtype == torch.float32
    torch.testing.assert_close(v32.double(), v64, rtol=2e-5, atol=0)


def test_non_convergence_warns_and_flags() -> None:
    a, b, cost = _problem(10, 10, seed=1)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        res = divergent.sinkhorn_solve(a, b, cost, 0.01, max_iter=2)
    assert not bool(res.converged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        divergent.sinkhorn_solve(a, b, cost, 0.01, max_iter=2, warn=False)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["transport", "entropic"])
@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_gradcheck_cost_and_marginals(objective: str, eps: float) -> None:
    """Exact gradients at the fixed point (implicit for ⟨T,C⟩, envelope for OT_ε).

    The marginals are parametrised by a softmax, so only mass-preserving directions are
    tested (the gradient w.r.t. a and b is defined up to a constant).
    """
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 4, 5, generator=g, dtype=F64).requires_grad_(True)
    la = torch.randn(2, 4, generator=g, dtype=F64).requires_grad_(True)
    lb = torch.randn(2, 5, generator=g, dtype=F64).requires_grad_(True)

    def fn(c: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return divergent.sinkhorn(x.softmax(-1), y.softmax(-1), c, eps, objective=objective,
                                  tol=1e-14, max_iter=100_000)

    assert torch.autograd.gradcheck(fn, (cost, la, lb), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_envelope_gradient_is_not_the_transport_gradient() -> None:
    """Why ⟨T,C⟩ needs implicit differentiation: its gradient differs from the plan T."""
    a, b, cost = _problem(6, 6, seed=8)
    c = cost.clone().requires_grad_(True)
    value, plan = divergent.sinkhorn(a, b, c, 0.1, tol=1e-13, return_plan=True)
    (grad,) = torch.autograd.grad(value, c)
    assert float((grad - plan).abs().max()) > 1e-3
    assert float(grad.sum()) == pytest.approx(1.0, abs=1e-8)  # C → C + t: value + t


def test_one_sided_gradient_at_zero_mass() -> None:
    """d/dt value(a + t·(e₁ − e₀)) at t = 0⁺ where a₁ = 0, against a finite difference."""
    a, b, cost = _problem(5, 4, seed=6, zeros=True)  # a[1] = 0, b[-1] = 0
    direction = torch.zeros(5, dtype=F64)
    direction[1], direction[0] = 1.0, -1.0
    for objective in ("transport", "entropic"):
        aa = a.clone().requires_grad_(True)
        value = divergent.sinkhorn(aa, b, cost, 0.1, tol=1e-14, max_iter=100_000,
                                   objective=objective)
        (grad,) = torch.autograd.grad(value, aa)
        h = 1e-7
        moved = divergent.sinkhorn(a + h * direction, b, cost, 0.1, tol=1e-14,
                                   max_iter=100_000, objective=objective)
        fd = (moved.item() - value.item()) / h
        assert float((grad * direction).sum()) == pytest.approx(fd, abs=1e-5)


def test_conjugate_gradient_adjoint_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, cost = _problem(9, 7, seed=12, batch=(2,))
    c1 = cost.clone().requires_grad_(True)
    a1 = a.clone().requires_grad_(True)
    (gc_dense, ga_dense) = torch.autograd.grad(
        divergent.sinkhorn(a1, b, c1, 0.1, tol=1e-13).sum(), (c1, a1)
    )
    monkeypatch.setattr(ot_mod, "_DENSE_ADJOINT_MAX", 0)
    c2 = cost.clone().requires_grad_(True)
    a2 = a.clone().requires_grad_(True)
    (gc_cg, ga_cg) = torch.autograd.grad(
        divergent.sinkhorn(a2, b, c2, 0.1, tol=1e-13).sum(), (c2, a2)
    )
    torch.testing.assert_close(gc_cg, gc_dense, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ga_cg, ga_dense, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, "`eps`"),
        ({"eps": float("nan")}, "`eps`"),
        ({"a": torch.full((4,), 0.3, dtype=F64)}, "`a` must sum to 1"),
        ({"a": torch.tensor([1.5, -0.5, 0.0, 0.0], dtype=F64)}, "non-negative"),
        ({"b": torch.full((4,), 0.25, dtype=F64)}, "`b` has 4 entries"),
        ({"cost": torch.full((4, 3), float("inf"), dtype=F64)}, "`cost` must be finite"),
        ({"max_iter": 0}, "`max_iter`"),
        ({"scaling": 1.5}, "`scaling`"),
        ({"objective": "sinkhorn"}, "`objective`"),
        ({"tol": -1.0}, "`tol`"),
        ({"cost": torch.ones(3, dtype=F64)}, "`cost` must have at least 2"),
    ],
)
def test_sinkhorn_errors(kwargs: dict, match: str) -> None:
    args = {"a": torch.full((4,), 0.25, dtype=F64), "b": torch.full((3,), 1 / 3, dtype=F64),
            "cost": torch.rand(4, 3, dtype=F64), "eps": 0.1}
    args.update(kwargs)
    a, b, cost, eps = args.pop("a"), args.pop("b"), args.pop("cost"), args.pop("eps")
    with pytest.raises(ValueError, match=match):
        divergent.sinkhorn(a, b, cost, eps, **args)


def test_batch_shapes_must_broadcast() -> None:
    with pytest.raises(ValueError, match="do not broadcast"):
        divergent.sinkhorn(torch.full((2, 4), 0.25), torch.full((3, 3), 1 / 3),
                           torch.rand(4, 3), 0.1)


# --------------------------------------------------------------------------------------------
# Sinkhorn divergence
# --------------------------------------------------------------------------------------------
def _pot_entropic(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float) -> float:
    plan = _pot_plan(a, b, cost, eps)
    pos = plan > 0
    kl = (plan[pos] * torch.log(plan[pos] / (a[:, None] * b[None, :])[pos])).sum()
    return float((plan * cost).sum() + eps * kl)


@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_divergence_matches_pot_composition(p: int) -> None:
    g = torch.Generator().manual_seed(p)
    x = torch.rand(15, 2, generator=g, dtype=F64)
    y = torch.rand(11, 2, generator=g, dtype=F64) + 0.2
    xw = torch.rand(15, generator=g, dtype=F64) + 0.1
    xw = xw / xw.sum()
    eps = 0.1
    value = divergent.sinkhorn_divergence(x, y, eps, p=p, x_weights=xw, tol=1e-13,
                                          max_iter=100_000)
    yw = torch.full((11,), 1 / 11, dtype=F64)
    cxy = torch.cdist(x, y) ** p
    cxx = torch.cdist(x, x) ** p
    cyy = torch.cdist(y, y) ** p
    ref = (_pot_entropic(xw, yw, cxy, eps) - 0.5 * _pot_entropic(xw, xw, cxx, eps)
           - 0.5 * _pot_entropic(yw, yw, cyy, eps))
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
                torch.testing.assert_close(s_close, torch.full_like(s_close, 5e-6),
                                           rtol=0, atol=1e-10)
            else:
                assert bool((s_close <= 2 * float(shift.norm())).all())


@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_divergence_large_eps_is_half_mmd(p: int) -> None:
    """ε → ∞: S_ε → ½ MMD²_{−C} = E C(x,y) − ½E C(x,x') − ½E C(y,y') (Feydy et al., Thm 1)."""
    g = torch.Generator().manual_seed(10 + p)
    x = torch.rand(12, 2, generator=g, dtype=F64)
    y = torch.rand(9, 2, generator=g, dtype=F64) * 1.5
    half_mmd = (torch.cdist(x, y) ** p).mean() - 0.5 * (torch.cdist(x, x) ** p).mean() - 0.5 * (
        torch.cdist(y, y) ** p
    ).mean()
    s = divergent.sinkhorn_divergence(x, y, 1e5, p=p, tol=1e-13)
    assert float(s) == pytest.approx(float(half_mmd), rel=1e-4)


def test_sinkhorn_divergence_small_eps_tends_to_wasserstein() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, generator=g, dtype=F64)
    y = torch.rand(6, 2, generator=g, dtype=F64)
    w = torch.full((6,), 1 / 6, dtype=F64)
    exact = _exact_ot(w.numpy(), w.numpy(), (torch.cdist(x, y) ** 2).numpy())
    errors = [abs(float(divergent.sinkhorn_divergence(x, y, eps, tol=1e-11, max_iter=20_000))
                  - exact) / exact for eps in (0.1, 0.03, 0.01)]
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
    got = divergent.wasserstein_1d(torch.from_numpy(u), torch.from_numpy(v),
                                   torch.from_numpy(uw), torch.from_numpy(vw))
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
    lp = _exact_ot(uw, vw, np.abs(u2[:, None] - v2[None, :]) ** 3)
    got3 = divergent.wasserstein_1d(torch.from_numpy(u2), torch.from_numpy(v2),
                                    torch.from_numpy(uw), torch.from_numpy(vw), p=3)
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


# --------------------------------------------------------------------------------------------
# ULD
# --------------------------------------------------------------------------------------------
def _uld_reference(p_logits: np.ndarray, q_logits: np.ndarray, t: float) -> np.ndarray:
    def probs(z: np.ndarray) -> np.ndarray:
        z = z / t
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ps = -np.sort(-probs(p_logits), -1)
    qs = -np.sort(-probs(q_logits), -1)
    vocab = max(ps.shape[-1], qs.shape[-1])
    ps = np.pad(ps, [(0, 0)] * (ps.ndim - 1) + [(0, vocab - ps.shape[-1])])
    qs = np.pad(qs, [(0, 0)] * (qs.ndim - 1) + [(0, vocab - qs.shape[-1])])
    return np.abs(ps - qs).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_uld_matches_reference_with_different_vocabularies(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, 11, generator=g, dtype=F64) * 3
    q = torch.randn(3, 4, 7, generator=g, dtype=F64) * 3
    ref = _uld_reference(p.numpy(), q.numpy(), temperature)
    got = divergent.uld_distance(p, q, temperature=temperature, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-15)
    assert float(divergent.uld_distance(p, q, temperature=temperature)) == pytest.approx(
        ref.mean(), rel=1e-12
    )
    mask = torch.rand(3, 4, generator=g) > 0.4
    masked = divergent.uld_distance(p, q, temperature=temperature, mask=mask, reduction="sum")
    assert float(masked) == pytest.approx(ref[mask.numpy()].sum(), rel=1e-12)
    none = divergent.uld_distance(p, q, temperature=temperature, mask=mask, reduction="none")
    assert float(none[~mask].abs().max()) == 0.0
    normed = divergent.uld_distance(p, q, temperature=temperature, mask=mask, normalizer=10.0)
    assert float(normed) == pytest.approx(ref[mask.numpy()].sum() / 10.0, rel=1e-12)


def test_uld_properties_and_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(5, 9, generator=g, dtype=F64)
    perm = torch.randperm(9, generator=g)
    # permutation invariant and zero for the same sorted probabilities (padding: −inf logits)
    q = torch.cat([p[:, perm], torch.full((5, 3), -math.inf, dtype=F64)], -1)
    assert float(divergent.uld_distance(p, q, reduction="none").abs().max()) < 1e-15
    r = torch.randn(5, 4, generator=g, dtype=F64)
    vals = divergent.uld_distance(p, r, reduction="none")
    assert bool((vals >= 0).all()) and bool((vals <= 2).all())
    # fully masked batch: 0 with zero gradient
    pp = p.clone().requires_grad_(True)
    out = divergent.uld_distance(pp, r, mask=torch.zeros(5, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and float(pp.grad.abs().max()) == 0.0
    # gradients through the sort (distinct probabilities almost surely)
    pg = p.clone().requires_grad_(True)
    rg = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a_, b_: divergent.uld_distance(a_, b_), (pg, rg))
    # bf16 inputs are computed in fp32
    assert divergent.uld_distance(p.bfloat16(), r.bfloat16()).dtype == torch.float32


def test_uld_errors() -> None:
    with pytest.raises(ValueError, match="leading shape"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(3, 5))
    with pytest.raises(ValueError, match="`temperature`"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="`reduction`"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="empty class axis"):
        divergent.uld_distance(torch.rand(2, 0), torch.rand(2, 3))


# --------------------------------------------------------------------------------------------
# unbalanced OT
# --------------------------------------------------------------------------------------------
def _unbalanced_problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(4, 3, generator=g, dtype=F64)
    a = torch.rand(4, generator=g, dtype=F64)  # masses ≠ 1 and ≠ each other
    b = 2.0 * torch.rand(3, generator=g, dtype=F64)
    return a, b, cost


@pytest.mark.parametrize(("eps", "rho"), [(0.1, 1.0), (0.05, 0.3), (0.5, (5.0, 0.2)),
                                          (0.1, (math.inf, 0.5))])
def test_unbalanced_transport_and_plan_match_pot(eps: float, rho) -> None:
    a, b, cost = _unbalanced_problem(0)
    value, plan = divergent.sinkhorn_unbalanced(a, b, cost, eps, rho, tol=1e-13,
                                                max_iter=100_000, return_plan=True)
    ref_plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, eps, rho, stopThr=1e-15,
                                                 numItermax=200_000)
    torch.testing.assert_close(plan, ref_plan, rtol=1e-9, atol=1e-13)
    assert float(value) == pytest.approx(float((ref_plan * cost).sum()), rel=1e-10)


def _uot_objective(t_flat: np.ndarray, a, b, cost, eps, rho) -> float:
    t = t_flat.reshape(cost.shape)

    def gkl(x, y):
        return float(np.sum(x * np.log(x / y) - x + y))

    return float((t * cost).sum() + eps * gkl(t, np.outer(a, b)) + rho * gkl(t.sum(1), a)
                 + rho * gkl(t.sum(0), b))


def test_unbalanced_total_is_the_minimum_of_the_primal() -> None:
    """Against a direct numerical minimisation of the convex primal (scipy L-BFGS-B)."""
    from scipy.optimize import minimize

    a, b, cost = _unbalanced_problem(1)
    eps, rho = 0.2, 0.7
    total, plan = divergent.sinkhorn_unbalanced(a, b, cost, eps, rho, objective="total",
                                                tol=1e-13, max_iter=100_000, return_plan=True)
    args = (a.numpy(), b.numpy(), cost.numpy(), eps, rho)
    at_plan = _uot_objective(plan.numpy().ravel(), *args)
    assert float(total) == pytest.approx(at_plan, rel=1e-12)
    res = minimize(_uot_objective, np.full(12, 0.1), args=args, method="L-BFGS-B",
                   bounds=[(1e-12, None)] * 12, options={"ftol": 1e-15, "gtol": 1e-12,
                                                         "maxiter": 10_000})
    assert res.fun >= float(total) - 1e-9  # nothing beats the Sinkhorn optimum
    assert res.fun == pytest.approx(float(total), abs=1e-6)


@pytest.mark.parametrize("objective", ["transport", "total"])
def test_unbalanced_gradcheck(objective: str) -> None:
    a, b, cost = _unbalanced_problem(2)
    args = tuple(x.clone().requires_grad_(True) for x in (cost, a, b))

    def fn(c: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return divergent.sinkhorn_unbalanced(x, y, c, 0.1, 0.7, tol=1e-14, max_iter=100_000,
                                             objective=objective)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_unbalanced_batch_and_balanced_limit() -> None:
    a, b, cost = _problem(6, 5, seed=3, batch=(3,))
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
