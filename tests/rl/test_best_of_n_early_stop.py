"""``tilted_for_kl`` stops its bisection once a step changes nothing: results to the bit.

The reference below is the function as it was before the early stop: the same set-up and
exactly ``iterations`` bisection steps. Every output must hold the same bits (``-0.0`` and
``0.0`` told apart), for batches whose rows converge at different steps, targets of 0, at and
just below the maximum, tied rewards, zero-mass outcomes, float32 inputs and small budgets.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import divergent.rl.best_of_n as bon_module
from divergent.functional import kl
from divergent.rl.best_of_n import tilted_for_kl, tilted_max_kl


def _old_tilted_for_kl(
    base: Tensor, rewards: Tensor, kl_target: float | Tensor, inputs: str, iterations: int = 200
) -> tuple[Tensor, Tensor]:
    """The pre-early-stop ``tilted_for_kl``: always ``iterations`` bisection steps."""
    log_base, r = bon_module._base_and_rewards(base, rewards, inputs)
    lead = r.shape[:-1]
    target = torch.as_tensor(kl_target, dtype=torch.float64).expand(lead).clone()
    max_kl = tilted_max_kl(log_base, r, inputs="log_probs").double()
    tol = 1e-12

    def kl_at(inv_beta: Tensor) -> Tensor:
        lt = bon_module._tilted_from_log_base(log_base, r, inv_beta)
        return kl(lt, log_base, inputs="log_probs", reduction="none")

    lo = torch.full(lead, -60.0, dtype=torch.float64)
    hi = torch.full(lead, 60.0, dtype=torch.float64)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_small = kl_at(mid.exp()) < target
        lo = torch.where(too_small, mid, lo)
        hi = torch.where(too_small, hi, mid)
    inv_beta = (0.5 * (lo + hi)).exp()
    inv_beta = torch.where(target <= 0, torch.zeros_like(inv_beta), inv_beta)
    inv_beta = torch.where(target >= max_kl - tol, torch.full_like(inv_beta, math.inf), inv_beta)
    log_t = bon_module._tilted_from_log_base(log_base, r, inv_beta)
    beta = torch.where(inv_beta > 0, 1.0 / inv_beta, torch.full_like(inv_beta, math.inf))
    dtype = bon_module.compute_dtype(base)
    return log_t.to(dtype), beta.to(dtype)


def _bits(t: Tensor) -> Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _assert_same_bits(new: tuple[Tensor, Tensor], old: tuple[Tensor, Tensor]) -> None:
    for a, b in zip(new, old):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(_bits(a), _bits(b)), (a, b)


def _max_kl(base: Tensor, rewards: Tensor, inputs: str) -> Tensor:
    return tilted_max_kl(base, rewards, inputs=inputs).double()


def _cases() -> list[tuple[str, Tensor, Tensor, float | Tensor, str]]:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(6, 9, generator=g, dtype=torch.float64) * 2.0
    rewards = torch.randn(6, 9, generator=g, dtype=torch.float64)
    top = _max_kl(logits, rewards, "logits")
    mixed = torch.stack(
        [
            torch.tensor(0.0, dtype=torch.float64),  # β = inf
            top[1] * 1e-9,  # tiny: log(1/β) far below 0
            top[2] * 0.3,
            top[3] - 1e-9,  # just below the maximum
            top[4] - 1e-13,  # within tol of the maximum: β = 0
            top[5],  # the maximum itself
        ]
    )
    tied_p = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    tied_r = torch.tensor([[1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    tied_t = torch.tensor([float(_max_kl(tied_p, tied_r, "probs")[0]) * 0.5, 0.0])
    zero_p = torch.tensor([0.5, 0.0, 0.3, 0.2], dtype=torch.float64)
    zero_r = torch.tensor([0.0, 5.0, 1.0, 2.0], dtype=torch.float64)
    f32_logits = torch.randn(3, 5, generator=g)
    f32_r = torch.randn(3, 5, generator=g)
    return [
        ("batched targets", logits, rewards, mixed, "logits"),
        ("one scalar target", logits, rewards, 0.05, "logits"),
        ("target 0", logits, rewards, 0.0, "logits"),
        ("tied rewards", tied_p, tied_r, tied_t, "probs"),
        ("zero-mass outcome", zero_p, zero_r, 0.4, "probs"),
        ("no leading shape", zero_p, zero_r, 0.0, "probs"),
        ("log_probs input", torch.log_softmax(logits, -1), rewards, 0.2, "log_probs"),
        ("float32 input", f32_logits, f32_r, 0.1, "logits"),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_same_bits_as_the_full_two_hundred_steps(case: tuple) -> None:
    _, base, rewards, target, inputs = case
    new = tilted_for_kl(base, rewards, target, inputs=inputs)
    _assert_same_bits(new, _old_tilted_for_kl(base, rewards, target, inputs))


@pytest.mark.parametrize("iterations", [1, 2, 7, 40, 60, 500])
def test_same_bits_for_any_step_budget(iterations: int) -> None:
    case = _cases()[0]
    _, base, rewards, target, inputs = case
    new = tilted_for_kl(base, rewards, target, inputs=inputs, iterations=iterations)
    _assert_same_bits(new, _old_tilted_for_kl(base, rewards, target, inputs, iterations))


def test_the_bisection_stops_well_before_two_hundred_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def counting_kl(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return kl(*args, **kwargs)

    monkeypatch.setattr(bon_module, "kl", counting_kl)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    tilted_for_kl(p, r, 0.3, inputs="probs")
    # float64 has 53 bits: a bracket of width 120 around a value of order 1 stops shrinking
    # after about 60 halvings
    assert 40 < len(calls) < 80
