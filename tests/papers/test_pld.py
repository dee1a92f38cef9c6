"""pld reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import pld
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(low: float, high: float) -> dict:
    return {"paired": {"pld_minus_kd": {"accuracy": {"low": low, "high": high}}}}


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.05, "held"),
        (-0.001, 0.05, "inconclusive"),
        (-0.03, 0.011, "inconclusive"),
        (-0.03, 0.009, "not held"),
        (-0.06, -0.02, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert pld.verdict(_metrics(low, high)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("pld", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    per = m["per_seed"]
    diff = mean_ci([a - b for a, b in zip(per["pld"]["accuracy"], per["kd"]["accuracy"])])
    assert m["paired"]["pld_minus_kd"]["accuracy"]["low"] == pytest.approx(diff["low"])
    assert m["teacher_accuracy_mean"] > 0.9
    assert all(0.5 < a <= 1.0 for o in per.values() for a in o["accuracy"])
    assert all(0.0 <= e <= 1.0 for o in per.values() for e in o["ece"])
    assert result.verdict == pld.verdict(m).value
