"""driat reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import driat
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(worst: tuple[float, float], average: tuple[float, float]) -> dict:
    return {
        "worst_class_diff": {"low": worst[0], "high": worst[1]},
        "average_diff": {"low": average[0], "high": average[1]},
    }


@pytest.mark.parametrize(
    ("worst", "average", "expected"),
    [
        ((0.01, 0.08), (-0.015, 0.01), "held"),
        ((0.01, 0.08), (-0.019, 0.0), "held"),  # average just inside the 2-point margin
        ((0.01, 0.08), (-0.021, 0.0), "inconclusive"),  # straddles −2 points
        ((0.01, 0.08), (-0.06, -0.021), "not held"),  # average clearly lower
        ((-0.01, 0.08), (-0.01, 0.01), "inconclusive"),  # worst class straddles 0
        ((-0.05, 0.019), (-0.01, 0.01), "not held"),  # worst-class gain below the margin
        ((-0.05, 0.021), (-0.01, 0.01), "inconclusive"),
        ((-0.05, 0.019), (-0.03, 0.01), "not held"),
    ],
)
def test_verdict(worst, average, expected: str) -> None:
    assert driat.verdict(_metrics(worst, average)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("driat", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    worst, robust = m["worst_class_robust_accuracy"], m["robust_accuracy"]
    n = m["n_seeds"]
    assert all(len(worst[k]) == len(robust[k]) == n for k in driat.METHODS)
    for k in driat.METHODS:  # the worst class is never better than the average
        assert all(w <= a + 1e-12 for w, a in zip(worst[k], robust[k]))
        assert all(r <= c + 0.05 for r, c in zip(robust[k], m["clean_accuracy"][k]))
    diff = mean_ci([a - b for a, b in zip(worst["dro_at"], worst["standard_at"])])
    assert m["worst_class_diff"]["high"] == pytest.approx(diff["high"])
    assert result.verdict == driat.verdict(m).value
