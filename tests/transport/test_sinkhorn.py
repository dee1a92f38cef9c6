"""sinkhorn / sinkhorn_solve against POT and exact LP: values, batching, gradients, errors.

References: POT ``ot.sinkhorn2`` / ``ot.sinkhorn`` (log-domain), ``scipy.optimize.linprog``
(exact OT), ``torch.autograd.gradcheck`` and finite differences.
"""

from __future__ import annotations

import inspect
import math
import warnings

import ot
import pytest
import torch
from _transport_refs import exact_ot, pot_plan, problem

import divergent
import divergent.transport._sinkhorn_solver as solver

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (4, 20)])
def test_transport_cost_matches_pot(eps: float, shape: tuple[int, int]) -> None:
    a, b, cost = problem(*shape, seed=shape[0] * 31 + shape[1])
    res = divergent.sinkhorn_solve(a, b, cost, eps, tol=1e-13, max_iter=100_000)
    ref = ot.sinkhorn2(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)
    assert bool(res.converged)
    assert abs(float(res.transport) - float(ref)) <= 1e-9 * abs(float(ref))


@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_entropic_objective_and_plan_match_pot(eps: float) -> None:
    a, b, cost = problem(9, 6, seed=3)
    value, plan = divergent.sinkhorn(
        a, b, cost, eps, objective="entropic", tol=1e-13, max_iter=100_000, return_plan=True
    )
    ref_plan = pot_plan(a, b, cost, eps)
    torch.testing.assert_close(plan, ref_plan, rtol=1e-8, atol=1e-12)
    kl = (ref_plan * torch.log(ref_plan / (a[:, None] * b[None, :]))).sum()
    ref = (ref_plan * cost).sum() + eps * kl
    assert abs(float(value) - float(ref)) <= 1e-9 * abs(float(ref))
    # the plan has the prescribed marginals
    torch.testing.assert_close(plan.sum(1), a, atol=1e-12, rtol=0)
    torch.testing.assert_close(plan.sum(0), b, atol=1e-12, rtol=0)


def test_zero_mass_entries_match_reducedproblem() -> None:
    a, b, cost = problem(8, 7, seed=5, zeros=True)
    res = divergent.sinkhorn_solve(a, b, cost, 0.05, tol=1e-13, max_iter=100_000, return_plan=True)
    keep_a, keep_b = a > 0, b > 0
    ref = ot.sinkhorn2(
        a[keep_a],
        b[keep_b],
        cost[keep_a][:, keep_b],
        0.05,
        method="sinkhorn_log",
        stopThr=1e-14,
        numItermax=200_000,
    )
    assert abs(float(res.transport) - float(ref)) <= 1e-9 * float(ref)
    assert res.plan is not None
    assert float(res.plan[~keep_a].abs().max()) == 0.0
    assert float(res.plan[:, ~keep_b].abs().max()) == 0.0
    assert bool(torch.isfinite(res.f).all()) and bool(torch.isfinite(res.g).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_to_exact_ot_as_eps_vanishes(seed: int) -> None:
    """OT₀ ≤ ⟨T_ε, C⟩ ≤ OT₀ + ε·log min(n, m) (KL(T*‖a⊗b) ≤ min(H(a), H(b)))."""
    a, b, cost = problem(6, 7, seed=seed)
    exact = exact_ot(a.numpy(), b.numpy(), cost.numpy())
    gaps = []
    for eps in (0.1, 0.01, 0.002):
        value = float(divergent.sinkhorn(a, b, cost, eps, tol=1e-12, max_iter=200_000))
        assert exact - 1e-9 <= value <= exact + eps * math.log(6) + 1e-9
        gaps.append(value - exact)
    assert gaps[-1] <= 0.002 * math.log(6) + 1e-9
    # the entropic objective is above OT₀ too
    ent = float(
        divergent.sinkhorn(a, b, cost, 0.01, objective="entropic", tol=1e-12, max_iter=200_000)
    )
    assert ent >= exact - 1e-9


def test_doc_example_exact_transport() -> None:
    x = torch.linspace(0, 1, 5, dtype=F64)
    cost = (x[:, None] - x[None, :]) ** 2
    a = torch.tensor([0.5, 0.5, 0, 0, 0], dtype=F64)
    b = torch.tensor([0, 0, 0, 0.5, 0.5], dtype=F64)
    exact = exact_ot(a.numpy(), b.numpy(), cost.numpy())
    assert exact == pytest.approx(0.5625, abs=1e-12)
    assert float(divergent.sinkhorn(a, b, cost, eps=1e-3)) == pytest.approx(exact, abs=1e-6)


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
def test_batch_equals_one_by_one_with_broadcasting() -> None:
    a, b, cost = problem(10, 8, seed=7, batch=(2, 3))
    a_shared = a[0, 0]  # (n,) broadcast over the batch
    res = divergent.sinkhorn_solve(a_shared, b, cost, 0.05, tol=1e-13, max_iter=100_000)
    assert res.transport.shape == (2, 3)
    assert res.f.shape == (2, 3, 10) and res.g.shape == (2, 3, 8)
    for i in range(2):
        for j in range(3):
            single = divergent.sinkhorn(
                a_shared, b[i, j], cost[i, j], 0.05, tol=1e-13, max_iter=100_000
            )
            assert abs(float(res.transport[i, j]) - float(single)) <= 1e-10 * float(single)


def test_per_problem_convergence() -> None:
    """Problems of different difficulty stop at different iteration counts, each converged."""
    a, b, cost = problem(12, 12, seed=11, batch=(3,))
    cost = cost * torch.tensor([0.2, 1.0, 5.0], dtype=F64)[:, None, None]  # harder with scale
    res = divergent.sinkhorn_solve(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    assert bool(res.converged.all())
    assert bool((res.marginal_error <= 1e-12).all())
    counts = res.n_iter.tolist()
    assert counts[0] < counts[1] < counts[2]
    for k in range(3):
        single = divergent.sinkhorn_solve(a[k], b[k], cost[k], 0.05, tol=1e-12, max_iter=100_000)
        assert abs(float(res.transport[k]) - float(single.transport)) <= 1e-9 * float(
            single.transport
        )


def test_cpu_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, cost = problem(16, 16, seed=2, batch=(5,))
    whole = divergent.sinkhorn(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    monkeypatch.setattr(solver, "_CPU_CHUNK_BYTES", 1)  # one problem per chunk
    chunked = divergent.sinkhorn(a, b, cost, 0.05, tol=1e-12, max_iter=100_000)
    torch.testing.assert_close(whole, chunked, rtol=1e-10, atol=0)


def test_eps_scaling_and_small_eps_are_stable() -> None:
    """ε = range/2000 (annealed by default) and a forced long annealing give the POT value."""
    a, b, cost = problem(10, 9, seed=4)
    eps = 5e-4
    ref = ot.sinkhorn2(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-12, numItermax=2_000_000)
    for start in (None, 100.0):
        res = divergent.sinkhorn_solve(
            a, b, cost, eps, tol=1e-11, max_iter=2_000_000, eps_start=start
        )
        assert bool(res.converged) and bool(torch.isfinite(res.f).all())
        assert abs(float(res.transport) - float(ref)) <= 1e-7 * float(ref)


def test_float32_close_to_float64() -> None:
    a, b, cost = problem(30, 20, seed=9, batch=(4,))
    v64 = divergent.sinkhorn(a, b, cost, 0.05)
    v32 = divergent.sinkhorn(a.float(), b.float(), cost.float(), 0.05)
    assert v32.dtype == torch.float32
    torch.testing.assert_close(v32.double(), v64, rtol=2e-5, atol=0)


def test_non_convergence_warns_and_flags() -> None:
    a, b, cost = problem(10, 10, seed=1)
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
        return divergent.sinkhorn(
            x.softmax(-1), y.softmax(-1), c, eps, objective=objective, tol=1e-14, max_iter=100_000
        )

    assert torch.autograd.gradcheck(fn, (cost, la, lb), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_envelope_gradient_is_not_the_transport_gradient() -> None:
    """Why ⟨T,C⟩ needs implicit differentiation: its gradient differs from the plan T."""
    a, b, cost = problem(6, 6, seed=8)
    c = cost.clone().requires_grad_(True)
    value, plan = divergent.sinkhorn(a, b, c, 0.1, tol=1e-13, return_plan=True)
    (grad,) = torch.autograd.grad(value, c)
    assert float((grad - plan).abs().max()) > 1e-3
    assert float(grad.sum()) == pytest.approx(1.0, abs=1e-8)  # C → C + t: value + t


def test_one_sided_gradient_at_zero_mass() -> None:
    """d/dt value(a + t·(e₁ − e₀)) at t = 0⁺ where a₁ = 0, against a finite difference."""
    a, b, cost = problem(5, 4, seed=6, zeros=True)  # a[1] = 0, b[-1] = 0
    direction = torch.zeros(5, dtype=F64)
    direction[1], direction[0] = 1.0, -1.0
    for objective in ("transport", "entropic"):
        aa = a.clone().requires_grad_(True)
        value = divergent.sinkhorn(
            aa, b, cost, 0.1, tol=1e-14, max_iter=100_000, objective=objective
        )
        (grad,) = torch.autograd.grad(value, aa)
        h = 1e-7
        moved = divergent.sinkhorn(
            a + h * direction, b, cost, 0.1, tol=1e-14, max_iter=100_000, objective=objective
        )
        fd = (moved.item() - value.item()) / h
        assert float((grad * direction).sum()) == pytest.approx(fd, abs=1e-5)


def test_conjugate_gradient_adjoint_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, cost = problem(9, 7, seed=12, batch=(2,))
    c1 = cost.clone().requires_grad_(True)
    a1 = a.clone().requires_grad_(True)
    (gc_dense, ga_dense) = torch.autograd.grad(
        divergent.sinkhorn(a1, b, c1, 0.1, tol=1e-13).sum(), (c1, a1)
    )
    monkeypatch.setattr(solver, "_DENSE_ADJOINT_MAX", 0)
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
    args = {
        "a": torch.full((4,), 0.25, dtype=F64),
        "b": torch.full((3,), 1 / 3, dtype=F64),
        "cost": torch.rand(4, 3, dtype=F64),
        "eps": 0.1,
    }
    args.update(kwargs)
    a, b, cost, eps = args.pop("a"), args.pop("b"), args.pop("cost"), args.pop("eps")
    with pytest.raises(ValueError, match=match):
        divergent.sinkhorn(a, b, cost, eps, **args)


def test_batch_shapes_must_broadcast() -> None:
    with pytest.raises(ValueError, match="do not broadcast"):
        divergent.sinkhorn(
            torch.full((2, 4), 0.25), torch.full((3, 3), 1 / 3), torch.rand(4, 3), 0.1
        )


def test_sinkhorn_shows_the_solver_keywords_and_refuses_others() -> None:
    """``sinkhorn`` takes ``sinkhorn_solve``'s options (plus ``objective``), spelled out."""
    sig = inspect.signature(divergent.sinkhorn)
    got = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
    kw = inspect.Parameter.KEYWORD_ONLY
    pk = inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert got == [
        ("a", pk, inspect.Parameter.empty),
        ("b", pk, inspect.Parameter.empty),
        ("cost", pk, inspect.Parameter.empty),
        ("eps", pk, inspect.Parameter.empty),
        ("max_iter", kw, 1000),
        ("tol", kw, None),
        ("scaling", kw, 0.5),
        ("eps_start", kw, None),
        ("objective", kw, "transport"),
        ("return_plan", kw, False),
        ("warn", kw, True),
    ]
    cost = torch.rand(3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"sinkhorn\(\) got an unexpected keyword argument 'x'"):
        divergent.sinkhorn(None, None, cost, 0.1, x=1)
    value, plan = divergent.sinkhorn(None, None, cost, 0.1, return_plan=True, max_iter=5000)
    assert plan.shape == (3, 3)
    assert float(value) == float(divergent.sinkhorn(None, None, cost, 0.1, max_iter=5000))
