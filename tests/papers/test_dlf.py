"""dlf reproduction: the verdict on literal metrics on both sides of each threshold, and a
quick run checked for consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import dlf
from divergent.repro import Verdict


def _metrics(mean: float, low: float, high: float) -> dict:
    return {"recovered_dlf": {"mean": mean, "low": low, "high": high}}


@pytest.mark.parametrize(
    ("mean", "low", "high", "expected"),
    [
        (0.90, 0.80, 1.00, "held"),
        (0.75, 0.50, 1.00, "held"),  # both thresholds met exactly
        (0.749, 0.60, 0.90, "inconclusive"),  # mean just below 0.75, CI reaches above
        (0.80, 0.499, 1.10, "inconclusive"),  # CI low just below the 0.5 floor
        (0.60, 0.45, 0.749, "not held"),  # CI entirely below 0.75
        (0.60, 0.45, 0.751, "inconclusive"),
        (-0.2, -0.5, 0.1, "not held"),
        (float("nan"), 0.0, 1.0, "inconclusive"),
    ],
)
def test_verdict(mean: float, low: float, high: float, expected: str) -> None:
    assert dlf.verdict(_metrics(mean, low, high)) == Verdict(expected)
    as_json = json.loads(json.dumps(_metrics(mean, low, high)).replace("NaN", '"nan"'))
    assert dlf.verdict(as_json) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("dlf", tmp_path)
    m = result.metrics
    for row in m["per_seed"]:
        gain = row["reward_tuned"] - row["reward_base"]
        assert gain > 0  # the tilted optimum raises the reward (it is the KL-regularised optimum)
        assert row["recovered_dlf"] == pytest.approx(
            (row["reward_dlf"] - row["reward_base"]) / gain
        )
        assert row["kl_tuned_to_base"] > 0 and row["kl_tuned_to_dlf"] >= 0
        assert 0.0 <= row["alpha_mean"] <= 2.0
        assert row["reward_small_tuned"] > row["reward_small_base"]
    assert len(m["per_seed"]) == m["n_seeds"] == m["recovered_dlf"]["n"]
    assert result.verdict == dlf.verdict(m).value
