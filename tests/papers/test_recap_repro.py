"""recap reproduction: the verdict on literal metrics on both sides of each threshold, and a
quick run checked for consistency."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import recap
from divergent.repro import Verdict

HELD = {
    "paired": {
        "target_only_minus_uniform_forgetting": {"low": 1.0, "high": 3.0},
        "recap_relative_forgetting_reduction": {"low": 0.02, "high": 0.3},
        "recap_relative_target_gain_change": {"low": -0.05, "high": 0.1},
    }
}


def _with(key: str, low: float, high: float) -> dict:
    m = copy.deepcopy(HELD)
    m["paired"][key] = {"low": low, "high": high}
    return m


@pytest.mark.parametrize(
    ("key", "low", "high", "expected"),
    [
        # precondition: target-only must forget more than uniform (CI low > 0)
        ("target_only_minus_uniform_forgetting", 1e-9, 2.0, "held"),
        ("target_only_minus_uniform_forgetting", 0.0, 2.0, "inconclusive"),
        ("target_only_minus_uniform_forgetting", -1.0, -0.5, "inconclusive"),
        # RECAP forgets less: CI low > 0 held; CI high < 0.05 not held
        ("recap_relative_forgetting_reduction", 0.001, 0.2, "held"),
        ("recap_relative_forgetting_reduction", -0.01, 0.051, "inconclusive"),
        ("recap_relative_forgetting_reduction", -0.1, 0.049, "not held"),
        # RECAP's target gain no worse: CI low > -0.10 held; CI high < -0.10 not held
        ("recap_relative_target_gain_change", -0.099, 0.2, "held"),
        ("recap_relative_target_gain_change", -0.101, 0.2, "inconclusive"),
        ("recap_relative_target_gain_change", -0.5, -0.101, "not held"),
    ],
)
def test_verdict(key: str, low: float, high: float, expected: str) -> None:
    assert recap.verdict(HELD) is Verdict.HELD
    assert recap.verdict(_with(key, low, high)) == Verdict(expected)


def test_not_held_part_wins_over_inconclusive_and_precondition_first() -> None:
    m = _with("recap_relative_forgetting_reduction", -0.1, 0.0)
    m["paired"]["recap_relative_target_gain_change"] = {"low": -0.2, "high": 0.0}
    assert recap.verdict(m) is Verdict.NOT_HELD
    m["paired"]["target_only_minus_uniform_forgetting"] = {"low": -0.1, "high": 0.1}
    assert recap.verdict(m) is Verdict.INCONCLUSIVE


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("recap", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    # no replay: the target is learnt and the general capability is lost (exact numbers)
    assert min(per["target_only"]["target_gain"]) > 0.3
    assert min(per["target_only"]["forgetting"]) > max(per["uniform"]["forgetting"])
    assert per["target_only"]["mean_replay_weight"] == [0.0] * m["n_seeds"]
    assert per["uniform"]["mean_replay_weight"] == [1.0] * m["n_seeds"]
    assert all(0.0 < w < 2.0 for w in per["recap"]["mean_replay_weight"])
    reduction = [
        (u - r) / u for u, r in zip(per["uniform"]["forgetting"], per["recap"]["forgetting"])
    ]
    got = m["paired"]["recap_relative_forgetting_reduction"]["mean"]
    assert got == pytest.approx(sum(reduction) / len(reduction))
    assert result.verdict == recap.verdict(m).value
