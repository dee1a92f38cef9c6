"""sftfdiv reproduction: the verdict on literal metrics on both sides of every threshold, and a
quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import sftfdiv
from divergent.repro import Verdict

GOOD = {
    "bridge_gap": 1e-15,
    "reference_sensitivity_rkl": 0.0,
    "lr_drift_ratio_max": 0.5,
    "fdiv_drift_ratio_max": 0.5,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "held"),
        # exact identities: ≤ 1e-10 held, > 1e-6 not held
        ({"bridge_gap": 0.9e-10}, "held"),
        ({"bridge_gap": 1.1e-10}, "inconclusive"),
        ({"bridge_gap": 0.9e-6}, "inconclusive"),
        ({"bridge_gap": 1.1e-6}, "not held"),
        ({"reference_sensitivity_rkl": 1.1e-10}, "inconclusive"),
        ({"reference_sensitivity_rkl": 1.1e-6}, "not held"),
        # lower LR drifts less: ≤ 0.7 held, ≥ 1 not held
        ({"lr_drift_ratio_max": 0.69}, "held"),
        ({"lr_drift_ratio_max": 0.71}, "inconclusive"),
        ({"lr_drift_ratio_max": 0.99}, "inconclusive"),
        ({"lr_drift_ratio_max": 1.0}, "not held"),
        # f-divergence SFT drifts less: ≤ 0.8 held, ≥ 1 not held
        ({"fdiv_drift_ratio_max": 0.79}, "held"),
        ({"fdiv_drift_ratio_max": 0.81}, "inconclusive"),
        ({"fdiv_drift_ratio_max": 1.01}, "not held"),
        ({"fdiv_drift_ratio_max": float("nan")}, "inconclusive"),
    ],
)
def test_verdict(changes: dict, expected: str) -> None:
    assert sftfdiv.verdict({**GOOD, **changes}) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("sftfdiv", tmp_path)
    m = result.metrics
    assert m["bridge_gap"] < 1e-12 and m["reference_sensitivity_rkl"] < 1e-12
    assert m["reference_sensitivity_js_min"] > 1e-3  # JS-SFT does see the reference
    for inst in m["per_instance"]:
        drifts = [inst["sft_drift"][str(lr)] for lr in sftfdiv.LEARNING_RATES]
        assert drifts == sorted(drifts, reverse=True)  # larger LR, more drift
        # scaled so every f-SFT loss starts with SFT's gradient: ψ'(1)·β = 1
        assert inst["fsft_beta"]["js"] == pytest.approx(4.0)
        assert inst["fsft_beta"]["kl"] == pytest.approx(1.0)
