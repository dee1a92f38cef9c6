"""klrl reproduction: the verdict on literal metrics on both sides of every threshold, and a
quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import klrl
from divergent.repro import Verdict

GOOD = {
    "rl_entropy_ratio_max": 0.01,
    "rl_kl_ratio_min": 0.99,
    "target_kl_max": 1e-6,
    "identity_gap_max": 1e-12,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "held"),
        # entropy ratio: collapsed ≤ 0.05, not held > 0.25, between: inconclusive
        ({"rl_entropy_ratio_max": 0.049}, "held"),
        ({"rl_entropy_ratio_max": 0.051}, "inconclusive"),
        ({"rl_entropy_ratio_max": 0.24}, "inconclusive"),
        ({"rl_entropy_ratio_max": 0.26}, "not held"),
        # KL to the reference reaches ≥ 0.9 of the Dirac's
        ({"rl_kl_ratio_min": 0.91}, "held"),
        ({"rl_kl_ratio_min": 0.89}, "inconclusive"),
        # KL(π‖π*): converged ≤ 1e-4, not held > 1e-2
        ({"target_kl_max": 0.9e-4}, "held"),
        ({"target_kl_max": 1.1e-4}, "inconclusive"),
        ({"target_kl_max": 0.9e-2}, "inconclusive"),
        ({"target_kl_max": 1.1e-2}, "not held"),
        # the identity J + β KL(π‖π*) = β log Z: ≤ 1e-8 held, > 1e-5 not held
        ({"identity_gap_max": 0.9e-8}, "held"),
        ({"identity_gap_max": 1.1e-8}, "inconclusive"),
        ({"identity_gap_max": 0.9e-5}, "inconclusive"),
        ({"identity_gap_max": 1.1e-5}, "not held"),
        ({"target_kl_max": float("nan")}, "inconclusive"),
        ({"target_kl_max": "nan"}, "inconclusive"),
    ],
)
def test_verdict(changes: dict, expected: str) -> None:
    assert klrl.verdict({**GOOD, **changes}) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("klrl", tmp_path)
    m = result.metrics
    inst = m["per_instance"][0]
    assert 0 < inst["rl_entropy_final"] < inst["h_ref"]
    assert inst["rl_kl_final"] <= inst["kl_dirac"] + 1e-9  # a Dirac's KL bounds the collapse
    assert 0.5 < inst["rl_mode_mass"] <= 1.0
    assert inst["rl_reward_final"] <= inst["reward_max"] + 1e-12
    # the β = 1 posterior keeps entropy; the trained policy matches it
    assert inst["klrl_final_entropy"]["1.0"] == pytest.approx(
        inst["target_entropy"]["1.0"], abs=1e-3
    )
    assert m["identity_gap_max"] < 1e-10
