"""Best-of-N and the tilted policy (divergent.rl.best_of_n) against independent references.

References: exhaustive enumeration of all N-tuples of draws (exact, any tie-breaking rule),
Monte Carlo with numpy's argmax (first drawn wins ties), closed forms, scipy's rel_entr for
KL, and random search over the simplex for the tilted policy's optimality.
"""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import rel_entr

import divergent.rl.best_of_n as bon_module
from divergent.rl.best_of_n import (
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_log_probs,
    expected_reward,
    kl_regularized_objective,
    tilted_for_kl,
    tilted_kl,
    tilted_log_probs,
    tilted_max_kl,
)


def _enumerate_best_of_n(p: np.ndarray, r: np.ndarray, n: int, tie_break: str) -> np.ndarray:
    """Exact π_N by summing over all K^N ordered draws (independent of the library)."""
    k = len(p)
    out = np.zeros(k)
    for draw in itertools.product(range(k), repeat=n):
        prob = float(np.prod(p[list(draw)]))
        top = max(r[i] for i in draw)
        winners = [i for i in draw if r[i] == top]  # one entry per draw position
        if tie_break == "random":
            for i in winners:
                out[i] += prob / len(winners)
        else:
            out[min(winners)] += prob
    return out


def _kl_ref(a: np.ndarray, b: np.ndarray) -> float:
    return float(rel_entr(a, b).sum())


# --------------------------------------------------------------------------------------------
# best-of-N distribution
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie_break", ["random", "first"])
@pytest.mark.parametrize("k,n", [(2, 1), (2, 5), (3, 2), (3, 4), (4, 3), (5, 3)])
def test_best_of_n_matches_enumeration_with_ties(k: int, n: int, tie_break: str) -> None:
    rng = np.random.default_rng(100 * k + n)
    for _ in range(3):
        p = rng.dirichlet(np.ones(k))
        r = rng.integers(0, 3, size=k).astype(np.float64)  # few levels: ties are common
        ref = _enumerate_best_of_n(p, r, n, tie_break)
        got = (
            best_of_n_log_probs(
                torch.from_numpy(p), torch.from_numpy(r), n, inputs="probs", tie_break=tie_break
            )
            .exp()
            .numpy()
        )
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)
        kl_got = float(
            best_of_n_kl(
                torch.from_numpy(p), torch.from_numpy(r), n, inputs="probs", tie_break=tie_break
            )
        )
        assert kl_got == pytest.approx(_kl_ref(ref, p), rel=1e-9, abs=1e-12)


def test_tie_break_rules_agree_without_ties_and_differ_with_ties() -> None:
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.dirichlet(np.ones(6)))
    r = torch.from_numpy(rng.standard_normal(6))
    a = best_of_n_log_probs(p, r, 4, inputs="probs", tie_break="random")
    b = best_of_n_log_probs(p, r, 4, inputs="probs", tie_break="first")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    r_tied = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    a = best_of_n_log_probs(p, r_tied, 4, inputs="probs", tie_break="random")
    b = best_of_n_log_probs(p, r_tied, 4, inputs="probs", tie_break="first")
    assert (a.exp() - b.exp()).abs().max() > 1e-3
    # random tie-breaking keeps the base's proportions within a reward level
    ratio = (a.exp() / p)[3:]
    torch.testing.assert_close(ratio, ratio[0].expand(3), rtol=1e-12, atol=0)


def test_best_of_n_matches_monte_carlo_argmax() -> None:
    """numpy's argmax returns the first drawn maximiser: the 'random' rule."""
    rng = np.random.default_rng(7)
    k, n, samples = 12, 6, 200_000
    p = rng.dirichlet(np.ones(k))
    r = rng.integers(0, 5, size=k).astype(np.float64)
    draws = rng.choice(k, size=(samples, n), p=p)
    picked = draws[np.arange(samples), np.argmax(r[draws], axis=1)]
    freq = np.bincount(picked, minlength=k) / samples
    exact = (
        best_of_n_log_probs(torch.from_numpy(p), torch.from_numpy(r), n, inputs="probs")
        .exp()
        .numpy()
    )
    se = np.sqrt(exact * (1 - exact) / samples) + 1e-12
    assert np.max(np.abs(freq - exact) / se) < 5.0


def test_two_outcome_closed_form() -> None:
    # distinct rewards, equal mass: π_N = (2^-N, 1 - 2^-N)
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for n in (1, 2, 7, 30):
        q = torch.tensor([0.5**n, 1 - 0.5**n], dtype=torch.float64)
        got = best_of_n_log_probs(p, r, n, inputs="probs").exp()
        torch.testing.assert_close(got, q, rtol=1e-12, atol=1e-15)
        expected_kl = _kl_ref(q.numpy(), p.numpy())
        assert float(best_of_n_kl(p, r, n, inputs="probs")) == pytest.approx(expected_kl, abs=1e-12)


def test_n_equal_one_is_the_base_and_inputs_kinds_agree() -> None:
    logits = torch.randn(3, 9, dtype=torch.float64)
    r = torch.randn(3, 9, dtype=torch.float64)
    base = torch.log_softmax(logits, -1)
    torch.testing.assert_close(best_of_n_log_probs(logits, r, 1), base, rtol=0, atol=1e-12)
    a = best_of_n_log_probs(logits, r, 5)
    b = best_of_n_log_probs(base, r, 5, inputs="log_probs")
    c = best_of_n_log_probs(base.exp(), r, 5, inputs="probs")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


def test_leading_shape_rows_are_independent() -> None:
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    r = torch.randint(0, 3, (2, 3, 7)).double()
    batched = best_of_n_log_probs(logits, r, 4)
    assert batched.shape == (2, 3, 7)
    for i, j in itertools.product(range(2), range(3)):
        torch.testing.assert_close(batched[i, j], best_of_n_log_probs(logits[i, j], r[i, j], 4))
    kls = best_of_n_kl(logits, r, 4)
    assert kls.shape == (2, 3)
    assert float(best_of_n_kl(logits, r, 4, reduction="mean")) == pytest.approx(
        float(kls.mean()), rel=1e-12
    )


def test_zero_mass_outcomes_stay_zero() -> None:
    p = torch.tensor([0.0, 0.3, 0.0, 0.7], dtype=torch.float64)
    r = torch.tensor([5.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    q = best_of_n_log_probs(p, r, 3, inputs="probs")
    assert q[0] == -math.inf and q[2] == -math.inf
    ref = _enumerate_best_of_n(p.numpy(), r.numpy(), 3, "random")
    torch.testing.assert_close(q.exp(), torch.from_numpy(ref), rtol=1e-12, atol=1e-15)


def test_huge_n_and_tiny_atoms_are_finite() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(5000, 0.2))
    r = rng.standard_normal(5000)
    p_t, r_t = torch.from_numpy(p), torch.from_numpy(r)
    top = float(tilted_max_kl(p_t, r_t, inputs="probs"))
    previous = 0.0
    for n in (10, 10**4, 10**8, 10**15, 10**30):
        q = best_of_n_log_probs(p_t, r_t, n, inputs="probs")
        total = q.logsumexp(-1)
        assert torch.isfinite(total) and float(total) == pytest.approx(0, abs=1e-9)
        value = float(best_of_n_kl(p_t, r_t, n, inputs="probs"))
        assert previous - 1e-9 <= value <= top + 1e-9  # non-decreasing in N, below the limit
        previous = value
    assert previous == pytest.approx(top, abs=1e-9)  # N → ∞: the argmax, KL = -log p(top)


def test_small_atoms_approach_the_bound() -> None:
    k = 100_000
    p = torch.full((k,), 1.0 / k, dtype=torch.float64)
    r = torch.randperm(k).double()
    for n in (2, 4, 16):
        assert float(best_of_n_kl(p, r, n, inputs="probs")) == pytest.approx(
            best_of_n_kl_bound(n), abs=1e-3
        )


@given(
    k=st.integers(1, 12),
    n=st.integers(1, 200),
    levels=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    tie_break=st.sampled_from(["random", "first"]),
)
def test_kl_never_exceeds_the_bound(k: int, n: int, levels: int, seed: int, tie_break: str) -> None:
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.dirichlet(np.full(k, 0.5)))
    r = torch.from_numpy(rng.integers(0, levels, size=k).astype(np.float64))
    q = best_of_n_log_probs(p, r, n, inputs="probs", tie_break=tie_break)
    assert float(q.logsumexp(-1)) == pytest.approx(0.0, abs=1e-10)
    assert float(best_of_n_kl(p, r, n, inputs="probs", tie_break=tie_break)) <= (
        best_of_n_kl_bound(n) + 1e-10
    )


def test_bound_values() -> None:
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(10) == pytest.approx(math.log(10) - 0.9)


def test_float32_in_float32_out() -> None:
    logits = torch.randn(4, 6)
    r = torch.randn(4, 6)
    assert best_of_n_log_probs(logits, r, 3).dtype == torch.float32
    assert best_of_n_kl(logits, r, 3).dtype == torch.float32
    assert tilted_log_probs(logits, r, 0.5).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": 0}, "`n`"),
        ({"n": 2.5}, "`n`"),
        ({"n": True}, "`n`"),
        ({"n": 3, "tie_break": "last"}, "`tie_break`"),
        ({"n": 3, "inputs": "odds"}, "`inputs`"),
    ],
)
def test_best_of_n_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        best_of_n_log_probs(torch.randn(5), torch.randn(5), **kwargs)


def test_best_of_n_bad_tensors() -> None:
    with pytest.raises(ValueError, match=r"same shape|class axes"):
        best_of_n_log_probs(torch.randn(5), torch.randn(4), 2)
    with pytest.raises(ValueError, match="`rewards`"):
        best_of_n_log_probs(torch.randn(3), torch.tensor([0.0, math.nan, 1.0]), 2)
    with pytest.raises(ValueError, match="`rewards`"):
        best_of_n_log_probs(torch.randn(3), torch.tensor([0.0, math.inf, 1.0]), 2)
    with pytest.raises(ValueError, match="`base`"):
        best_of_n_log_probs(torch.tensor([0.0, math.nan]), torch.randn(2), 2)
    with pytest.raises(ValueError, match="no mass"):
        best_of_n_log_probs(torch.full((3,), -math.inf), torch.randn(3), 2, inputs="log_probs")
    with pytest.raises(ValueError, match="`reduction`"):
        best_of_n_kl(torch.randn(3), torch.randn(3), 2, reduction="max")


def test_bound_bad_n() -> None:
    with pytest.raises(ValueError, match="`n`"):
        best_of_n_kl_bound(0)


# --------------------------------------------------------------------------------------------
# the tilted policy
# --------------------------------------------------------------------------------------------
def test_tilted_two_outcome_closed_form() -> None:
    p = torch.tensor([0.3, 0.7], dtype=torch.float64)
    r = torch.tensor([1.0, 0.0], dtype=torch.float64)
    beta = 0.4
    w = torch.tensor([0.3 * math.exp(1 / beta), 0.7], dtype=torch.float64)
    torch.testing.assert_close(tilted_log_probs(p, r, beta, inputs="probs").exp(), w / w.sum())


def test_tilted_maximises_the_regularised_objective_over_random_policies() -> None:
    rng = np.random.default_rng(11)
    k = 6
    p = rng.dirichlet(np.ones(k))
    r = rng.standard_normal(k)
    log_p, r_t = torch.from_numpy(np.log(p)), torch.from_numpy(r)
    for beta in (0.05, 0.3, 1.0, 5.0):
        best = tilted_log_probs(log_p, r_t, beta, inputs="log_probs")
        j_best = float(kl_regularized_objective(best, log_p, r_t, beta))
        # at the optimum J = β log Z (independent closed form)
        log_z = math.log(float(np.sum(p * np.exp(r / beta))))
        assert j_best == pytest.approx(beta * log_z, rel=1e-10, abs=1e-12)
        candidates = np.vstack([rng.dirichlet(np.full(k, a), size=4000) for a in (0.1, 1.0, 10.0)])
        cand = torch.from_numpy(np.log(candidates))
        j = kl_regularized_objective(cand, log_p.expand_as(cand), r_t.expand_as(cand), beta)
        assert float(j.max()) <= j_best + 1e-12
        # and small perturbations of the optimum are worse
        noisy = torch.log_softmax(best + 1e-3 * torch.randn(200, k, dtype=torch.float64), -1)
        jn = kl_regularized_objective(noisy, log_p.expand_as(noisy), r_t.expand_as(noisy), beta)
        assert float(jn.max()) <= j_best + 1e-12


def test_tilted_for_kl_hits_the_target_and_is_the_constrained_optimum() -> None:
    rng = np.random.default_rng(5)
    k = 5
    p = rng.dirichlet(np.ones(k))
    r = rng.standard_normal(k)
    p_t, r_t = torch.from_numpy(p), torch.from_numpy(r)
    top = float(tilted_max_kl(p_t, r_t, inputs="probs"))
    assert top == pytest.approx(-math.log(p[np.argmax(r)]), rel=1e-12)
    candidates = rng.dirichlet(np.full(k, 0.7), size=20000)
    cand_kl = np.array([_kl_ref(c, p) for c in candidates])
    cand_reward = candidates @ r
    for delta in (0.05, 0.3, 0.5 * top):
        lt, beta = tilted_for_kl(p_t, r_t, delta, inputs="probs")
        assert float(tilted_kl(p_t, r_t, float(beta), inputs="probs")) == pytest.approx(
            delta, rel=1e-8
        )
        reward = float(expected_reward(lt, r_t))
        feasible = cand_kl <= delta
        assert feasible.any()
        assert cand_reward[feasible].max() <= reward + 1e-12


def test_tilted_limits_and_monotonicity() -> None:
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    r = torch.tensor([3.0, 3.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(tilted_log_probs(p, r, math.inf, inputs="probs").exp(), p)
    limit = tilted_log_probs(p, r, 0.0, inputs="probs").exp()
    torch.testing.assert_close(limit, torch.tensor([1 / 3, 2 / 3, 0.0, 0.0], dtype=torch.float64))
    kls = [float(tilted_kl(p, r, b, inputs="probs")) for b in (10.0, 1.0, 0.3, 0.1, 0.01)]
    assert all(a < b for a, b in itertools.pairwise(kls))
    assert kls[-1] <= float(tilted_max_kl(p, r, inputs="probs")) + 1e-12
    lt, beta = tilted_for_kl(p, r, float(tilted_max_kl(p, r, inputs="probs")), inputs="probs")
    assert float(beta) == 0.0
    torch.testing.assert_close(lt.exp(), limit)
    lt, beta = tilted_for_kl(p, r, 0.0, inputs="probs")
    assert math.isinf(float(beta))
    torch.testing.assert_close(lt.exp(), p)


def test_tilted_for_kl_batched_targets() -> None:
    logits = torch.randn(3, 8, dtype=torch.float64)
    r = torch.randn(3, 8, dtype=torch.float64)
    targets = torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64)
    lt, beta = tilted_for_kl(logits, r, targets)
    assert beta.shape == (3,)
    from divergent import kl

    achieved = kl(lt, torch.log_softmax(logits, -1), inputs="log_probs", reduction="none")
    torch.testing.assert_close(achieved, targets, rtol=1e-8, atol=1e-12)


def test_tilted_bad_arguments() -> None:
    p, r = torch.randn(4), torch.randn(4)
    with pytest.raises(ValueError, match="`beta`"):
        tilted_log_probs(p, r, -0.1)
    with pytest.raises(ValueError, match="`beta`"):
        tilted_log_probs(p, r, math.nan)
    with pytest.raises(ValueError, match="`kl_target`"):
        tilted_for_kl(p, r, -1.0)
    with pytest.raises(ValueError, match="exceeds"):
        tilted_for_kl(p, r, float(tilted_max_kl(p, r)) + 0.1)
    with pytest.raises(ValueError, match="`iterations`"):
        tilted_for_kl(p, r, 0.1, iterations=0)
    with pytest.raises(ValueError, match="`rewards`"):
        expected_reward(torch.log_softmax(p, -1), torch.tensor([0.0, math.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="`beta`"):
        kl_regularized_objective(torch.log_softmax(p, -1), torch.log_softmax(p, -1), r, -1.0)


def test_best_of_n_is_dominated_by_the_tilted_policy_at_equal_kl() -> None:
    rng = np.random.default_rng(9)
    p = torch.from_numpy(rng.dirichlet(np.ones(30)))
    r = torch.from_numpy(rng.standard_normal(30))
    for n in (2, 5, 20, 100):
        lb = best_of_n_log_probs(p, r, n, inputs="probs")
        target = float(best_of_n_kl(p, r, n, inputs="probs"))
        lt, _ = tilted_for_kl(p, r, target, inputs="probs")
        assert float(expected_reward(lt, r)) >= float(expected_reward(lb, r)) - 1e-10


def test_module_doctests() -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    n_examples = 0
    for test in finder.find(bon_module, bon_module.__name__):
        n_examples += len(test.examples)
        runner.run(test)
    assert n_examples >= 6
    assert runner.summarize(verbose=False).failed == 0
