"""Dynamic Logit Fusion: the objective against a hand-written float64 reference, the KL
constraints met where they can be, the solved weights against brute-force grids, shapes, NaN and
bad input."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.logit_fusion import (
    dynamic_logit_fusion,
    dynamic_logit_fusion_weights,
    fused_logits,
    logit_fusion_objective,
)


def _softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = math.fsum(e)
    return [v / s for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return math.fsum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def _ref_objective(large: list[float], small: list[float], experts: list[list[float]], alpha):
    """Σ_t (KL(P̃‖P) − KL(Q_t‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t))², written out with Python floats."""
    fused = [
        large[v] + math.fsum(a * (e[v] - small[v]) for a, e in zip(alpha, experts))
        for v in range(len(large))
    ]
    p, q, pf = _softmax(large), _softmax(small), _softmax(fused)
    total = 0.0
    for e in experts:
        qt = _softmax(e)
        total += (_kl(pf, p) - _kl(qt, q)) ** 2 + (_kl(p, pf) - _kl(q, qt)) ** 2
    return total


def _rows(n: int, v: int, t: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    large = 2.0 * torch.randn(n, v, generator=g, dtype=torch.float64)
    small = torch.randn(n, v, generator=g, dtype=torch.float64)
    experts = small.unsqueeze(1) + 1.5 * torch.randn(n, t, v, generator=g, dtype=torch.float64)
    return large, small, experts


@pytest.mark.parametrize("n_experts", [1, 3])
def test_objective_matches_hand_reference(n_experts: int) -> None:
    large, small, experts = _rows(6, 7, n_experts, seed=n_experts)
    g = torch.Generator().manual_seed(9)
    alpha = 2.0 * torch.rand(6, n_experts, generator=g, dtype=torch.float64)
    got = logit_fusion_objective(large, small, experts, alpha)
    assert got.shape == (6,)
    for i in range(6):
        ref = _ref_objective(
            large[i].tolist(), small[i].tolist(), experts[i].tolist(), alpha[i].tolist()
        )
        assert float(got[i]) == pytest.approx(ref, rel=1e-10, abs=1e-14)


def test_fused_logits_is_the_logit_arithmetic() -> None:
    large, small, experts = _rows(4, 5, 2, seed=3)
    alpha = torch.tensor([0.25, 1.5], dtype=torch.float64)
    got = fused_logits(large, small, experts, alpha)
    for i in range(4):
        for v in range(5):
            ref = large[i, v] + sum(
                float(alpha[t]) * float(experts[i, t, v] - small[i, v]) for t in range(2)
            )
            assert float(got[i, v]) == pytest.approx(float(ref), abs=1e-12)
    # one expert given as (..., V), α = 1 is proxy tuning: M^L + M^S_1 − M^S
    one = fused_logits(large, small, experts[:, 0], 1.0)
    torch.testing.assert_close(one, large + experts[:, 0] - small)


def test_same_base_meets_both_kl_constraints_at_alpha_one() -> None:
    """Large = small base: α = 1 makes P̃ = Q_t, so KL(P̃‖P) = KL(Q_t‖Q) and KL(P‖P̃) = KL(Q‖Q_t)."""
    _, small, experts = _rows(5, 9, 1, seed=4)
    shifted = small + 3.0  # a per-row constant leaves the softmax unchanged
    alpha, objective = dynamic_logit_fusion_weights(shifted, small, experts)
    torch.testing.assert_close(alpha, torch.ones(5, 1, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(objective.max()) < 1e-20
    fused = torch.log_softmax(fused_logits(shifted, small, experts, alpha), -1)
    log_p, log_q = torch.log_softmax(small, -1), torch.log_softmax(small, -1)
    log_qt = torch.log_softmax(experts[:, 0], -1)
    for i in range(5):
        p, pf, q, qt = (x[i].exp().tolist() for x in (log_p, fused, log_q, log_qt))
        assert _kl(pf, p) == pytest.approx(_kl(qt, q), abs=1e-12)
        assert _kl(p, pf) == pytest.approx(_kl(q, qt), abs=1e-12)


def test_kl_constraint_met_when_a_scaled_offset_reaches_it() -> None:
    """Large = small, expert = small + 1.6·Δ, fusion uses the offset 1.6·Δ: α* = 1 again; with
    the box [0, 0.5] the best point is the bound (the residual falls towards α = 1)."""
    _, small, experts = _rows(3, 6, 1, seed=5)
    alpha, objective = dynamic_logit_fusion_weights(small, small, experts, alpha_range=(0.0, 0.5))
    torch.testing.assert_close(alpha, torch.full((3, 1), 0.5, dtype=torch.float64))
    grid = torch.linspace(0.0, 0.5, 501, dtype=torch.float64)
    for i in range(3):
        values = [
            _ref_objective(small[i].tolist(), small[i].tolist(), experts[i].tolist(), [float(a)])
            for a in grid
        ]
        assert float(objective[i]) == pytest.approx(min(values), rel=1e-9)


def _brute_1d(large, small, experts, lo: float, hi: float, n: int):
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    rows = large.shape[0]
    values = logit_fusion_objective(
        large.unsqueeze(1).expand(rows, n, -1),
        small.unsqueeze(1).expand(rows, n, -1),
        experts.unsqueeze(1).expand(rows, n, *experts.shape[1:]),
        grid.view(1, n, 1).expand(rows, n, 1),
    )
    best = values.min(1)
    return grid[best.indices], best.values


def test_single_expert_weights_are_optimal_against_a_brute_force_grid() -> None:
    large, small, experts = _rows(40, 12, 1, seed=6)
    # default settings: never worse than the plain 15-point grid they start from
    _, coarse = _brute_1d(large, small, experts, 0.0, 2.0, 15)
    alpha, objective = dynamic_logit_fusion_weights(large, small, experts)
    assert bool((objective <= coarse + 1e-15).all())
    assert bool(((alpha >= 0) & (alpha <= 2)).all())
    torch.testing.assert_close(objective, logit_fusion_objective(large, small, experts, alpha))
    # refined (resolution 2/14^6 ≈ 3e-7): as good as a 20001-point brute-force grid (spacing
    # 1e-4) up to 1e-9 (a brute point may by chance sit nearer the optimum than the resolution)
    alpha_f, objective_f = dynamic_logit_fusion_weights(large, small, experts, refine_steps=5)
    brute_alpha, brute = _brute_1d(large, small, experts, 0.0, 2.0, 20001)
    assert bool((objective_f <= brute + 1e-9).all())
    assert float((alpha_f.squeeze(1) - brute_alpha).abs().max()) < 2e-4
    # and better than the static proxy-tuning α = 1 on every row
    static = logit_fusion_objective(large, small, experts, 1.0)
    assert bool((objective_f <= static + 1e-15).all())


def test_two_experts_joint_weights_against_a_product_grid() -> None:
    large, small, experts = _rows(6, 8, 2, seed=7)
    _, objective = dynamic_logit_fusion_weights(large, small, experts, refine_steps=4)
    grid = torch.linspace(0.0, 2.0, 201, dtype=torch.float64)
    pairs = torch.cartesian_prod(grid, grid)  # (40401, 2)
    for i in range(6):
        n = pairs.shape[0]
        values = logit_fusion_objective(
            large[i].expand(n, -1), small[i].expand(n, -1), experts[i].expand(n, 2, -1), pairs
        )
        assert float(objective[i]) <= float(values.min()) + 1e-9


def test_single_mode_keeps_one_expert_with_the_smallest_residual() -> None:
    large, small, experts = _rows(8, 10, 3, seed=8)
    alpha, objective = dynamic_logit_fusion_weights(large, small, experts, mode="single")
    assert bool(((alpha != 0).sum(-1) <= 1).all())
    for t in range(3):
        a_t, v_t = dynamic_logit_fusion_weights(large, small, experts[:, t])
        assert bool((objective <= v_t + 1e-15).all())
        chosen = (alpha[:, t] != 0) | ((alpha == 0).all(-1) & (v_t == objective))
        torch.testing.assert_close(alpha[chosen, t], a_t[chosen, 0])


def test_batched_leading_shape_equals_row_by_row_and_fused_distribution() -> None:
    large, small, experts = _rows(6, 5, 2, seed=10)
    out = dynamic_logit_fusion(
        large.reshape(2, 3, 5), small.reshape(2, 3, 5), experts.reshape(2, 3, 2, 5)
    )
    assert out.alpha.shape == (2, 3, 2) and out.log_probs.shape == (2, 3, 5)
    assert out.objective.shape == (2, 3)
    for i in range(6):
        a, v = dynamic_logit_fusion_weights(large[i], small[i], experts[i])
        torch.testing.assert_close(out.alpha.reshape(6, 2)[i], a)
        torch.testing.assert_close(out.objective.reshape(6)[i], v)
    ref = torch.log_softmax(fused_logits(large, small, experts, out.alpha.reshape(6, 2)), -1)
    torch.testing.assert_close(out.log_probs.reshape(6, 5), ref)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_nan_row_gives_nan_and_leaves_the_others() -> None:
    large, small, experts = _rows(3, 6, 1, seed=11)
    clean = dynamic_logit_fusion(large, small, experts)
    large = large.clone()
    large[1, 2] = math.nan
    out = dynamic_logit_fusion(large, small, experts)
    assert bool(torch.isnan(out.objective[1])) and bool(torch.isnan(out.log_probs[1]).all())
    torch.testing.assert_close(out.alpha[[0, 2]], clean.alpha[[0, 2]])
    alpha, value = dynamic_logit_fusion_weights(large, small, experts, mode="single")
    assert bool(torch.isnan(alpha[1]).all()) and bool(torch.isnan(value[1]))


def test_float32_inputs_give_float32() -> None:
    large, small, experts = (x.float() for x in _rows(2, 6, 1, seed=12))
    out = dynamic_logit_fusion(large, small, experts)
    assert out.alpha.dtype == out.log_probs.dtype == out.objective.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha_range": (1.0, 1.0)}, "alpha_range"),
        ({"alpha_range": (0.0, math.inf)}, "alpha_range"),
        ({"alpha_range": 2.0}, "alpha_range"),
        ({"grid_size": 1}, "grid_size"),
        ({"grid_size": 3.0}, "grid_size"),
        ({"refine_steps": -1}, "refine_steps"),
        ({"mode": "best"}, "mode"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    large, small, experts = _rows(2, 4, 1, seed=13)
    with pytest.raises(ValueError, match=match):
        dynamic_logit_fusion_weights(large, small, experts, **kwargs)


def test_bad_inputs() -> None:
    large, small, experts = _rows(2, 4, 2, seed=14)
    with pytest.raises(ValueError, match="small_logits"):
        dynamic_logit_fusion_weights(large, small[:, :3], experts)
    with pytest.raises(ValueError, match="expert_logits"):
        dynamic_logit_fusion_weights(large, small, experts[..., :3])
    with pytest.raises(ValueError, match="expert_logits"):
        dynamic_logit_fusion_weights(large, small, experts.unsqueeze(0))
    with pytest.raises(ValueError, match="large_logits"):
        dynamic_logit_fusion_weights(large.long(), small, experts)
    bad = large.clone()
    bad[0, 0] = -math.inf
    with pytest.raises(ValueError, match=r"large_logits.*infinite"):
        dynamic_logit_fusion_weights(bad, small, experts)
    with pytest.raises(ValueError, match="alpha"):
        fused_logits(large, small, experts, torch.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        logit_fusion_objective(large, small, experts, "one")
    many = torch.zeros(1, 5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode='single'"):
        dynamic_logit_fusion_weights(large[:1], small[:1], many, grid_size=15)
