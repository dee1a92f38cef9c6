"""lelp reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import lelp
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.03, "held"),
        (-0.001, 0.03, "inconclusive"),
        (-0.02, 0.011, "inconclusive"),
        (-0.02, 0.009, "not held"),
        (-0.05, -0.01, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert lelp.verdict({"lelp_minus_kd": {"low": low, "high": high}}) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("lelp", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    acc = m["accuracy"]
    diff = mean_ci([a - b for a, b in zip(acc["lelp"], acc["kd"])])
    assert m["lelp_minus_kd"]["low"] == pytest.approx(diff["low"])
    assert m["teacher_accuracy_mean"] > 0.95
    assert all(0.7 < a <= 1.0 for v in acc.values() for a in v)
    assert result.verdict == lelp.verdict(m).value
