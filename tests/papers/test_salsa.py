"""salsa reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import salsa
from divergent.repro import Verdict


def _metrics(reward: tuple[float, float], kl: tuple[float, float]) -> dict:
    return {
        "reward_gap": {"low": reward[0], "high": reward[1]},
        "kl_from_sft_gap": {"low": kl[0], "high": kl[1]},
    }


HELD_KL = (0.001, 1.0)


@pytest.mark.parametrize(
    ("reward", "kl", "expected"),
    [
        ((0.001, 0.5), HELD_KL, "held"),
        ((-0.001, 0.5), HELD_KL, "inconclusive"),
        ((-0.5, 0.011), HELD_KL, "inconclusive"),
        ((-0.5, 0.009), HELD_KL, "not held"),  # reward: REWARD_MARGIN = 0.01
        ((0.001, 0.5), (-0.001, 1.0), "inconclusive"),
        ((0.001, 0.5), (-1.0, 0.011), "inconclusive"),
        ((0.001, 0.5), (-1.0, 0.009), "not held"),  # KL budget: KL_MARGIN = 0.01
        ((-0.5, 0.009), (-1.0, 0.011), "not held"),
        ((-0.5, 0.5), (-1.0, 1.0), "inconclusive"),
    ],
)
def test_verdict(reward, kl, expected: str) -> None:
    assert salsa.verdict(_metrics(reward, kl)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("salsa", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    n = m["n_seeds"]
    assert n >= 3 and all(len(v) == n for v in per.values())
    gaps = [a - b for a, b in zip(per["rl_reward_soup_ref"], per["rl_reward_sft1_ref"])]
    assert m["reward_gap"]["mean"] == pytest.approx(sum(gaps) / n)
    for i in range(n):
        # RL raises the reward over its reference and never exceeds the best sequence
        assert per["rl_reward_sft1_ref"][i] > per["reward_sft1"][i]
        assert per["rl_reward_soup_ref"][i] > per["reward_soup"][i]
        assert per["rl_reward_soup_ref"][i] <= per["max_reward"][i] + 1e-9
        assert per["rl_kl_from_sft1_sft1_ref"][i] == pytest.approx(
            per["rl_kl_from_ref_sft1_ref"][i]
        )
        assert all(per[k][i] >= 0 for k in per if "kl" in k)
