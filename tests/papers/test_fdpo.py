"""fdpo reproduction: the verdict on literal metrics on both sides of every threshold, the
population optimum's stationary condition, and a quick run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.objectives.preference import f_dpo_score
from divergent.papers import fdpo
from divergent.repro import Verdict
from divergent.toy import SequenceSpace, TabularPolicy, random_reward


def _metrics(js: tuple[float, float], kl: tuple[float, float], overlap: float = 0.8) -> dict:
    return {
        "overlap_frac_min": overlap,
        "entropy_gap": {
            "js": {"low": js[0], "high": js[1]},
            "kl": {"low": kl[0], "high": kl[1]},
        },
    }


@pytest.mark.parametrize(
    ("js", "kl", "overlap", "expected"),
    [
        ((0.01, 0.3), (0.001, 0.5), 0.8, "held"),
        # the overlap of the reward ranges: at least 0.3 of reverse KL's range
        ((0.01, 0.3), (0.001, 0.5), 0.31, "held"),
        ((0.01, 0.3), (0.001, 0.5), 0.29, "inconclusive"),
        # a CI whose low end is not above 0 but whose high end reaches the 0.02 margin
        ((-0.01, 0.3), (0.001, 0.5), 0.8, "inconclusive"),
        ((-0.01, 0.021), (0.001, 0.5), 0.8, "inconclusive"),
        # high end below the margin: not held for that divergence, so not held overall
        ((-0.01, 0.019), (0.001, 0.5), 0.8, "not held"),
        ((0.01, 0.3), (-0.5, 0.019), 0.8, "not held"),
        ((0.01, 0.3), (-0.5, 0.021), 0.8, "inconclusive"),
        ((-0.5, -0.1), (-0.5, -0.2), 0.8, "not held"),
        ((math.nan, math.nan), (0.001, 0.5), 0.8, "inconclusive"),
    ],
)
def test_verdict(js: tuple, kl: tuple, overlap: float, expected: str) -> None:
    assert fdpo.verdict(_metrics(js, kl, overlap)) == Verdict(expected)


@pytest.mark.parametrize("divergence", ["reverse_kl", "js", "kl"])
def test_population_optimum_satisfies_the_stationary_condition(divergence: str) -> None:
    """β ψ(π/π_ref) − r is one constant over the support (f-DPO's KKT condition)."""
    space = SequenceSpace(3, 3)
    g = torch.Generator().manual_seed(0)
    ref = TabularPolicy.random(space, generator=g)
    r = random_reward(space, generator=g)
    log_ref = ref.log_probs().detach()
    for beta in (0.1, 1.0):
        pi = fdpo._population_optimum(log_ref, r, divergence, beta)
        assert float(pi.sum()) == pytest.approx(1.0, abs=1e-12)
        implied = beta * f_dpo_score(torch.log(pi) - log_ref, divergence=divergence) - r
        assert float(implied.max() - implied.min()) < 1e-8


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("fdpo", tmp_path)
    m = result.metrics
    assert m["n_seeds"] >= 3
    for run in m["per_seed"]:
        for curve in run["curves"].values():
            assert len(curve["reward"]) == len(fdpo.BETAS)
            assert all(0.0 <= h <= math.log(27) + 1e-9 for h in curve["entropy"])
            assert all(r <= m["max_reward"] + 1e-9 for r in curve["reward"])
    # the population optimum is monotone in β: reward falls and entropy rises
    for curve in m["population_curves"].values():
        assert all(a >= b for a, b in zip(curve["reward"], curve["reward"][1:]))
        assert all(a <= b for a, b in zip(curve["entropy"], curve["entropy"][1:]))
