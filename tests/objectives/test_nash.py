"""Nash-MP / Nash-MD on a tabular preference game: prox steps against a numerical argmin, the
regularised equilibrium against its fixed-point and duality-gap characterisations."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.nash import (
    nash_exploitability,
    nash_md_step,
    nash_mirror_prox,
    preference_against,
    regularized_nash_equilibrium,
)

D64 = torch.float64


def _game(k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, k, generator=g, dtype=D64)
    pref = torch.sigmoid(a - a.T)  # P + Pᵀ = 1, ½ on the diagonal
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=D64), -1)
    pol = torch.log_softmax(torch.randn(k, generator=g, dtype=D64), -1)
    return pref, ref, pol


def _argmin_prox(pref, ref, pol, opp, beta, eta):
    """argmin_π (1/β) P(opp ≻ π) + KL(π‖ref) + (1/η) KL(π‖π_k), by L-BFGS on logits."""
    z = pol.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [z],
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def objective():
        opt.zero_grad()
        lp = torch.log_softmax(z, -1)
        p = lp.exp()
        value = (
            (opp.exp() @ pref @ p) / beta + (p * (lp - ref)).sum() + (p * (lp - pol)).sum() / eta
        )
        value.backward()
        return value

    for _ in range(5):
        opt.step(objective)
    return torch.log_softmax(z.detach(), -1)


def test_prox_steps_are_the_argmins():
    pref, ref, pol = _game()
    beta, eta = 0.3, 0.7
    step = nash_mirror_prox(pol, ref, pref, beta=beta, eta=eta)
    half = _argmin_prox(pref, ref, pol, pol, beta, eta)
    torch.testing.assert_close(step.half_log_probs, half, rtol=0, atol=1e-7)
    full = _argmin_prox(pref, ref, pol, step.half_log_probs, beta, eta)
    torch.testing.assert_close(step.log_probs, full, rtol=0, atol=1e-7)


def test_equilibrium_is_the_fixed_point_and_has_zero_gap():
    for k, beta, seed in [(3, 0.01, 1), (10, 0.1, 2), (25, 0.03, 3)]:
        pref, ref, _ = _game(k, seed)
        star = regularized_nash_equilibrium(ref, pref, beta=beta)
        fixed = torch.log_softmax(ref + preference_against(pref, star) / beta, -1)
        torch.testing.assert_close(star, fixed, rtol=0, atol=1e-11)
        assert abs(float(nash_exploitability(star, ref, pref, beta=beta))) < 1e-12
        # every other policy has a positive gap (duality gap of a strongly monotone game)
        others = torch.log_softmax(torch.randn(50, k, dtype=D64), -1)
        assert bool((nash_exploitability(others, ref, pref, beta=beta) > 0).all())
        # and the equilibrium is a fixed point of both Nash-MP steps
        step = nash_mirror_prox(star, ref, pref, beta=beta, eta=0.5)
        torch.testing.assert_close(step.log_probs, star, rtol=0, atol=1e-10)
        torch.testing.assert_close(step.half_log_probs, star, rtol=0, atol=1e-10)


def test_equilibrium_closed_forms():
    rps = torch.tensor([[0.5, 0.9, 0.1], [0.1, 0.5, 0.9], [0.9, 0.1, 0.5]], dtype=D64)
    uniform = torch.full((3,), -math.log(3), dtype=D64)
    torch.testing.assert_close(
        regularized_nash_equilibrium(uniform, rps, beta=0.01), uniform, rtol=0, atol=1e-12
    )
    ties = torch.full((5,), 0.5, dtype=D64).diag_embed() + 0.5 * (1 - torch.eye(5, dtype=D64))
    _, ref, _ = _game(5, 4)
    torch.testing.assert_close(
        regularized_nash_equilibrium(ref, ties, beta=0.1), ref, rtol=0, atol=1e-12
    )
    # a Condorcet winner: as β → 0 the equilibrium concentrates on it
    pref = torch.tensor([[0.5, 0.8, 0.7], [0.2, 0.5, 0.6], [0.3, 0.4, 0.5]], dtype=D64)
    star = regularized_nash_equilibrium(uniform, pref, beta=0.005)
    assert float(star[0].exp()) > 0.999


def test_nash_mp_last_iterate_converges_linearly():
    pref, ref, pol = _game(8, 5)
    beta = 0.1
    star = regularized_nash_equilibrium(ref, pref, beta=beta)
    kl = []
    for _ in range(300):
        pol = nash_mirror_prox(pol, ref, pref, beta=beta, eta=0.05).log_probs
        kl.append(float((star.exp() * (star - pol)).sum()))
    assert kl[-1] < 1e-9 * kl[0]
    # geometric decay: the ratios over blocks of 20 steps (above the float floor) are < 1, steady
    ratios = [kl[i + 20] / kl[i] for i in range(0, 280, 20) if kl[i + 20] > 1e-12]
    assert len(ratios) >= 6
    steady = ratios[2:]  # after a faster transient, a constant contraction factor
    assert max(ratios) < 0.6 and max(steady) / min(steady) < 1.1, ratios


def test_nash_md_step_formula_and_batching():
    pref, ref, pol = _game(6, 6)
    beta, eta = 0.2, 0.5
    got = nash_md_step(pol, ref, pref, beta=beta, eta=eta)
    mix = (1 - eta * beta) * pol + eta * beta * ref
    mix = mix - torch.logsumexp(mix, 0)
    want = mix + eta * (pref @ mix.exp())
    torch.testing.assert_close(got, want - torch.logsumexp(want, 0))
    batch = torch.stack([pol, ref, torch.log_softmax(pol * 2, -1)])
    out = nash_mirror_prox(batch, ref, pref, beta=beta, eta=eta).log_probs
    for i in range(3):
        torch.testing.assert_close(
            out[i], nash_mirror_prox(batch[i], ref, pref, beta=beta, eta=eta).log_probs
        )


def test_bad_input():
    pref, ref, pol = _game(4, 7)
    with pytest.raises(ValueError, match="P \\+ Pᵀ = 1"):
        nash_mirror_prox(
            pol, ref, pref + 0.1 * torch.eye(4, dtype=D64).roll(1, 0), beta=0.1, eta=0.1
        )
    with pytest.raises(ValueError, match="square"):
        nash_mirror_prox(pol, ref, pref[:3], beta=0.1, eta=0.1)
    with pytest.raises(ValueError, match="responses"):
        three = torch.log_softmax(pol[:3], -1)
        nash_mirror_prox(three, three, pref, beta=0.1, eta=0.1)
    with pytest.raises(ValueError, match="policy_log_probs"):
        nash_mirror_prox(pol + 1.0, ref, pref, beta=0.1, eta=0.1)
    with pytest.raises(ValueError, match="beta"):
        nash_mirror_prox(pol, ref, pref, beta=0.0, eta=0.1)
    with pytest.raises(ValueError, match="eta"):
        nash_md_step(pol, ref, pref, beta=0.5, eta=4.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nash_exploitability(pol, ref, 2 * pref - 0.5, beta=0.1)
