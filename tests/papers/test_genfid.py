"""genfid reproduction: the verdict on metrics on both sides of its threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import genfid
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.05, "held"),
        (-0.001, 0.05, "inconclusive"),
        (-0.03, 0.011, "inconclusive"),
        (-0.03, 0.009, "not held"),
        (-0.2, -0.05, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    metrics = {"gain_smallest_minus_largest": {"low": low, "high": high}}
    assert genfid.verdict(metrics) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("genfid", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    s = m["scores"]
    small, large = (str(w) for w in (genfid.WIDTHS[0], genfid.WIDTHS[-1]))

    def gain(w: str) -> list[float]:
        return [a - b for a, b in zip(s[w]["kd"]["accuracy"], s[w]["ce"]["accuracy"])]

    d = mean_ci([a - b for a, b in zip(gain(small), gain(large))])
    assert m["gain_smallest_minus_largest"]["high"] == pytest.approx(d["high"])
    assert all(0.0 <= a <= 1.0 for w in s.values() for o in w.values() for a in o["agreement"])
    assert result.verdict == genfid.verdict(m).value
