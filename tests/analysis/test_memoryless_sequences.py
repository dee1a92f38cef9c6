"""Composition-level distributions of a memoryless LM (divergent.analysis.memoryless_sequences)
against brute-force enumeration of all A^m sequences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.special import comb

from divergent.analysis.memoryless_sequences import composition_level_base, compositions
from divergent.rl.best_of_n import best_of_n_kl, tilted_kl


def test_compositions_are_all_count_vectors_once() -> None:
    comps = compositions(5, 3)
    assert comps.shape == (comb(7, 2, exact=True), 3)
    assert (comps.sum(1) == 5).all() and len({tuple(r) for r in comps}) == len(comps)
    assert compositions(0, 2).tolist() == [[0, 0]]


def test_best_of_n_and_tilted_kl_equal_those_over_sequences() -> None:
    rng = np.random.default_rng(0)
    a, m = 3, 4
    tok_p, tok_r = rng.dirichlet(np.ones(a)), rng.standard_normal(a)
    log_c, rew_c = composition_level_base(tok_p, tok_r, m)
    assert float(torch.logsumexp(log_c, 0)) == pytest.approx(0.0, abs=1e-12)
    seqs = np.array(list(itertools.product(range(a), repeat=m)))
    log_s = torch.from_numpy(np.log(tok_p)[seqs].sum(1))
    # rewards from token counts: summing in sequence order would round permutations
    # differently and break their ties (ties are compared exactly)
    counts = np.stack([(seqs == i).sum(1) for i in range(a)], axis=1)
    rew_s = torch.from_numpy(counts @ tok_r)
    for n in (2, 5, 40):
        assert float(best_of_n_kl(log_s, rew_s, n, inputs="log_probs")) == pytest.approx(
            float(best_of_n_kl(log_c, rew_c, n, inputs="log_probs")), rel=1e-10
        )
    assert float(tilted_kl(log_s, rew_s, 0.7, inputs="log_probs")) == pytest.approx(
        float(tilted_kl(log_c, rew_c, 0.7, inputs="log_probs")), rel=1e-10
    )


@pytest.mark.parametrize(
    "probs,rewards",
    [([0.5, 0.6], [0.0, 1.0]), ([0.0, 1.0], [0.0, 1.0]), ([0.5, 0.5], [0.0, 1.0, 2.0])],
)
def test_bad_inputs_are_refused(probs: list, rewards: list) -> None:
    with pytest.raises(ValueError, match="token_probs"):
        composition_level_base(np.array(probs), np.array(rewards), 2)
    with pytest.raises(ValueError, match="`m`"):
        compositions(-1, 2)
