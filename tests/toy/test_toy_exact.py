"""divergent.toy exact quantities: KL against a float64 brute force, the tilted optimum and
the Gibbs variational identity, rewards and the Bradley–Terry oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divergent.toy import (
    MLPPolicy,
    SequenceSpace,
    TabularPolicy,
    bradley_terry_pairs,
    bradley_terry_probability,
    exact_divergence,
    exact_expected_reward,
    exact_kl,
    hackable_rewards,
    kl_regularized_value,
    log_partition,
    optimal_log_probs,
    optimal_policy,
    random_reward,
    target_reward,
    token_count,
    token_reward,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _np_kl(p: np.ndarray, q: np.ndarray) -> float:
    keep = p > 0
    return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(q[keep]))))


def test_kl_both_directions_against_float64_brute_force() -> None:
    space = SequenceSpace(3, 4)
    a = TabularPolicy.random(space, scale=1.0, generator=_gen(0))
    b = MLPPolicy(space, hidden=8, generator=_gen(1), init_scale=2.0)
    pa = a.probs().detach().numpy()
    pb = b.probs().detach().numpy()
    assert float(exact_kl(a, b)) == pytest.approx(_np_kl(pa, pb), rel=1e-10)
    assert float(exact_kl(b, a)) == pytest.approx(_np_kl(pb, pa), rel=1e-10)
    # the registry's reverse_kl is the other direction
    assert float(exact_divergence("reverse_kl", a, b)) == pytest.approx(_np_kl(pb, pa), rel=1e-10)
    m = 0.5 * (pa + pb)
    js = 0.5 * _np_kl(pa, m) + 0.5 * _np_kl(pb, m)
    assert float(exact_divergence("js", a, b, beta=0.5)) == pytest.approx(js, rel=1e-9)
    assert float(exact_kl(a, a)) == pytest.approx(0.0, abs=1e-12)
    # the fast direct sum equals the registry's validated entry, values and gradients
    via_registry = exact_divergence("kl", a, b)
    assert float(exact_kl(a, b)) == pytest.approx(float(via_registry), rel=1e-12)
    g_fast = torch.autograd.grad(exact_kl(a, b), a.logits)[0]
    g_reg = torch.autograd.grad(via_registry, a.logits)[0]
    assert torch.allclose(g_fast, g_reg, rtol=1e-9, atol=1e-13)
    # zero mass: 0 log 0 = 0 where P = 0, inf where Q = 0 < P
    half = torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    third = torch.full((3,), -math.log(3), dtype=torch.float64)
    assert float(exact_kl(half, third)) == pytest.approx(math.log(1.5), abs=1e-12)
    assert float(exact_kl(third, half)) == math.inf


def test_kl_gradient_matches_finite_differences() -> None:
    space = SequenceSpace(2, 3)
    ref = TabularPolicy.random(space, generator=_gen(2))
    pi = TabularPolicy.random(space, generator=_gen(3))
    exact_kl(pi, ref).backward()
    grad = pi.logits.grad.clone()
    eps = 1e-6
    for idx in [(0, 0), (2, 1), (5, 0)]:
        with torch.no_grad():
            pi.logits[idx] += eps
            up = float(exact_kl(pi, ref))
            pi.logits[idx] -= 2 * eps
            down = float(exact_kl(pi, ref))
            pi.logits[idx] += eps
        assert float(grad[idx]) == pytest.approx((up - down) / (2 * eps), abs=1e-7)


def test_optimal_policy_is_the_tilt_and_a_gibbs_maximum() -> None:
    space = SequenceSpace(3, 3)
    ref = TabularPolicy.random(space, generator=_gen(4))
    r = random_reward(space, generator=_gen(5))
    beta = 0.7
    star = optimal_log_probs(ref, r, beta)
    log_ref = ref.log_probs().detach().numpy()
    brute = log_ref + r.numpy() / beta
    brute -= np.log(np.sum(np.exp(brute)))
    assert np.allclose(star.numpy(), brute, atol=1e-12)
    best = float(kl_regularized_value(star, ref, r, beta))
    assert best == pytest.approx(beta * float(log_partition(ref, r, beta)), abs=1e-10)
    # no random policy does better, and the gap is exactly β KL(π‖π*)
    for seed in range(20):
        pi = TabularPolicy.random(space, scale=1.0 + seed / 5, generator=_gen(100 + seed))
        value = float(kl_regularized_value(pi, ref, r, beta))
        assert value < best
        assert best - value == pytest.approx(beta * float(exact_kl(pi, star)), abs=1e-10)
    tab = optimal_policy(ref, r, beta)
    assert torch.allclose(tab.log_probs().detach(), star, atol=1e-12)
    # β = 0: the argmax limit
    top = optimal_log_probs(ref, r, 0.0).exp()
    assert float(top[int(torch.argmax(r))]) == pytest.approx(1.0)


def test_expected_reward_and_reward_functions() -> None:
    space = SequenceSpace(3, 2)
    pi = TabularPolicy.random(space, generator=_gen(6))
    r = token_reward(space, torch.tensor([0.0, 1.0, 3.0]))
    assert r.tolist() == pytest.approx([(a + b) / 2 for a in (0, 1, 3) for b in (0, 1, 3)])
    p = pi.probs().detach().numpy()
    assert float(exact_expected_reward(pi, r)) == pytest.approx(float(p @ r.numpy()), abs=1e-12)
    t = target_reward(space, torch.tensor([2, 1]))
    assert float(t[space.index_of(torch.tensor([2, 1]))]) == 1.0 and float(t.min()) == 0.0
    assert token_count(space, 2).tolist() == pytest.approx(
        [((a == 2) + (b == 2)) / 2 for a in range(3) for b in range(3)]
    )
    with pytest.raises(ValueError, match="`rewards`"):
        exact_expected_reward(pi, r[:3])
    with pytest.raises(ValueError, match="`token_values`"):
        token_reward(space, torch.zeros(4))


def test_hackable_proxy_is_hacked_by_hard_optimisation() -> None:
    space = SequenceSpace(3, 4)
    pair = hackable_rewards(
        space, hack_token=0, hack_bonus=2.0, hack_penalty=1.0, generator=_gen(7)
    )
    assert torch.allclose(pair.proxy - pair.true, 3.0 * pair.hack)
    ref = TabularPolicy.random(space, generator=_gen(8))
    # the proxy's argmax is the all-hack sequence; the true reward is lower there than the ref's
    assert int(torch.argmax(pair.proxy)) == 0
    hacked = optimal_log_probs(ref, pair.proxy, 0.01)
    assert float(exact_expected_reward(hacked, pair.true)) < float(
        exact_expected_reward(ref, pair.true)
    )


def test_bradley_terry_frequencies_converge() -> None:
    space = SequenceSpace(2, 2)
    r = torch.tensor([0.0, 0.5, 1.5, -1.0], dtype=torch.float64)
    pairs = bradley_terry_pairs(r, 200_000, temperature=0.8, generator=_gen(9))
    assert len(pairs) == 200_000 and bool((pairs.chosen != pairs.rejected).all())
    for a, b in [(0, 1), (2, 3), (1, 2)]:
        a_wins = int(((pairs.chosen == a) & (pairs.rejected == b)).sum())
        b_wins = int(((pairs.chosen == b) & (pairs.rejected == a)).sum())
        n = a_wins + b_wins
        expected = 1 / (1 + math.exp(-(float(r[a]) - float(r[b])) / 0.8))
        assert a_wins / n == pytest.approx(expected, abs=5 * math.sqrt(0.25 / n))
        prob = bradley_terry_probability(r, torch.tensor(a), torch.tensor(b), temperature=0.8)
        assert float(prob) == pytest.approx(expected, abs=1e-12)
    # reproducible with a seed; pairs drawn from a sampling distribution respect its support
    again = bradley_terry_pairs(r, 50, generator=_gen(3))
    assert torch.equal(again.chosen, bradley_terry_pairs(r, 50, generator=_gen(3)).chosen)
    lp = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))
    restricted = bradley_terry_pairs(r, 100, sampling_log_probs=lp, generator=_gen(1))
    assert set(torch.cat([restricted.chosen, restricted.rejected]).tolist()) <= {0, 1}
    assert space.size == 4


def test_bad_inputs_name_the_argument() -> None:
    space = SequenceSpace(2, 2)
    pi = TabularPolicy(space)
    r = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="`p`"):
        exact_kl("x", pi)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same support"):
        exact_kl(pi, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="`beta`"):
        log_partition(pi, r, 0.0)
    with pytest.raises(ValueError, match="`temperature`"):
        bradley_terry_pairs(r, 3, temperature=0.0)
    with pytest.raises(ValueError, match="`n_pairs`"):
        bradley_terry_pairs(r, 0)
    with pytest.raises(ValueError, match="`rewards`"):
        bradley_terry_pairs(torch.tensor([0.0, math.nan]), 3)
    with pytest.raises(ValueError, match="`space`"):
        optimal_policy(torch.zeros(4, dtype=torch.float64) - math.log(4), r, 1.0)
    with pytest.raises(ValueError, match="`hack_token`"):
        hackable_rewards(space, hack_token=5)
