"""kdrl reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import kdrl
from divergent.repro import Verdict


def _metrics(err: float, grpo: tuple[float, float], kd: tuple[float, float]) -> dict:
    return {
        "gradient_identity_max_error": err,
        "paired": {
            "kdrl_k2_minus_grpo": {"low": grpo[0], "high": grpo[1]},
            "kdrl_k2_minus_kd": {"low": kd[0], "high": kd[1]},
        },
    }


@pytest.mark.parametrize(
    ("err", "grpo", "kd", "expected"),
    [
        (1e-16, (0.01, 0.2), (0.1, 0.3), "held"),
        (1e-16, (-0.01, 0.2), (0.1, 0.3), "inconclusive"),  # straddles 0, reaches the margin
        (1e-16, (-0.05, 0.019), (0.1, 0.3), "not held"),  # below the 0.02 margin
        (1e-16, (0.01, 0.2), (-0.3, -0.1), "not held"),  # worse than KD
        (1e-16, (-0.01, 0.021), (0.1, 0.3), "inconclusive"),
        (2e-9, (0.01, 0.2), (0.1, 0.3), "not held"),  # gradient identity broken
        (float("nan"), (0.01, 0.2), (0.1, 0.3), "not held"),
        (1e-16, (float("nan"), 0.2), (0.1, 0.3), "inconclusive"),
    ],
)
def test_verdict(err, grpo, kd, expected) -> None:
    assert kdrl.verdict(_metrics(err, grpo, kd)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("kdrl", tmp_path)
    m = result.metrics
    assert m["gradient_identity_max_error"] < 1e-12
    assert m["initial_reward"] == pytest.approx(0.005)
    assert m["teacher_reward"] == pytest.approx(0.6)
    # distillation alone cannot exceed the teacher by much; every RL variant leaves the start
    assert m["mean_final_reward"]["kd"] < 0.7
    for method in ("grpo", "kdrl_k2", "kdrl_k3"):
        assert m["mean_final_reward"][method] > 0.1
    diffs = [a - b for a, b in zip(m["final_reward"]["kdrl_k2"], m["final_reward"]["grpo"])]
    assert m["paired"]["kdrl_k2_minus_grpo"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
