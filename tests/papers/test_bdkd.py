"""bdkd reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import bdkd
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(acc: tuple[float, float], ece: tuple[float, float]) -> dict:
    return {
        "accuracy_gain": {"low": acc[0], "high": acc[1]},
        "ece_reduction": {"low": ece[0], "high": ece[1]},
    }


@pytest.mark.parametrize(
    ("acc", "ece", "expected"),
    [
        ((0.001, 0.03), (0.001, 0.02), "held"),
        ((0.001, 0.03), (-0.001, 0.02), "inconclusive"),  # ECE straddles 0
        ((0.001, 0.03), (-0.01, 0.004), "not held"),  # ECE reduction below 0.5 points
        ((0.001, 0.03), (-0.01, 0.006), "inconclusive"),
        ((-0.02, 0.009), (0.001, 0.02), "not held"),  # accuracy gain below 1 point
        ((-0.02, 0.011), (0.001, 0.02), "inconclusive"),
    ],
)
def test_verdict(acc, ece, expected: str) -> None:
    assert bdkd.verdict(_metrics(acc, ece)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("bdkd", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    ece = m["student_ece"]
    red = mean_ci([a - b for a, b in zip(ece["dml"], ece["bdkd"])])
    assert m["ece_reduction"]["low"] == pytest.approx(red["low"])
    assert all(0.0 <= e <= 1.0 for v in ece.values() for e in v)
    assert all(a > 0.7 for v in m["student_accuracy"].values() for a in v)
    assert result.verdict == bdkd.verdict(m).value
