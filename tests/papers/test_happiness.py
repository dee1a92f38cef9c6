"""happiness reproduction: the verdict on metrics on both sides of each threshold, quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import happiness
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(wine: tuple[float, float], cancer: tuple[float, float]) -> dict:
    return {
        "accuracy_gain": {
            "wine": {"low": wine[0], "high": wine[1]},
            "breast_cancer": {"low": cancer[0], "high": cancer[1]},
        }
    }


@pytest.mark.parametrize(
    ("wine", "cancer", "expected"),
    [
        ((0.001, 0.03), (0.002, 0.02), "held"),
        ((-0.001, 0.03), (0.002, 0.02), "inconclusive"),  # wine straddles 0
        ((-0.02, 0.009), (0.002, 0.02), "not held"),  # wine gain below the 1-point margin
        ((-0.02, 0.011), (0.002, 0.02), "inconclusive"),
        ((0.01, 0.03), (-0.03, -0.001), "not held"),  # cancer worse
        ((-0.02, 0.011), (-0.02, 0.009), "not held"),
    ],
)
def test_verdict(wine, cancer, expected: str) -> None:
    assert happiness.verdict(_metrics(wine, cancer)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("happiness", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    for name in happiness.DATASETS:
        acc = m["accuracy"][name]
        gain = mean_ci([a - b for a, b in zip(acc["ce_plus_kl"], acc["ce"])])
        assert m["accuracy_gain"][name]["low"] == pytest.approx(gain["low"])
        assert all(0.6 < a <= 1.0 for v in acc.values() for a in v)  # real classifiers
        # the penalty does what it says: the importance ranking moves toward the knowledge
        tau = m["importance_kendall_tau_mean"][name]
        assert tau["ce_plus_kl"] > tau["ce"]
    assert result.verdict == happiness.verdict(m).value
