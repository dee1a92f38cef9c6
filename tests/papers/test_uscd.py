"""uscd reproduction: the verdict on literal metrics on both sides of each threshold, and a
quick run checked for consistency."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import uscd
from divergent.papers._stats import paired_ci
from divergent.repro import Verdict


def _metrics(greedy: tuple[float, float], sampled: tuple[float, float]) -> dict:
    ci = {k: {"low": lo, "high": hi} for k, (lo, hi) in (("greedy", greedy), ("sampled", sampled))}
    return {"paired": {"uscd_minus_standard": ci}}


@pytest.mark.parametrize(
    ("greedy", "sampled", "expected"),
    [
        ((0.001, 0.05), (0.02, 0.04), "held"),
        ((0.0, 0.05), (0.02, 0.04), "inconclusive"),  # low must be > 0
        ((-0.03, 0.011), (0.02, 0.04), "inconclusive"),
        ((-0.03, 0.009), (0.02, 0.04), "not held"),  # high below the 0.01 margin
        ((0.02, 0.04), (-0.03, 0.009), "not held"),
        ((0.02, 0.04), (-0.001, 0.02), "inconclusive"),
        ((-0.2, -0.1), (-0.2, -0.1), "not held"),
    ],
)
def test_verdict(greedy: tuple, sampled: tuple, expected: str) -> None:
    assert uscd.verdict(_metrics(greedy, sampled)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("uscd", tmp_path)
    m = result.metrics
    acc = m["accuracy"]
    for name in uscd.DECODERS:
        assert all(0.0 <= a <= 1.0 for kind in acc[name].values() for a in kind)
    d = paired_ci(acc["uscd"]["greedy"], acc["standard"]["greedy"])
    assert m["paired"]["uscd_minus_standard"]["greedy"]["low"] == pytest.approx(d["low"])
    # the gate is exercised: some steps are confident enough to close it
    assert 0.0 < m["gate_open_rate"]["mean"] < 1.0
    # at the most confident decile the gate is mostly closed: USCD keeps standard's accuracy
    curve = m["accuracy_by_confidence_seed0"]
    assert curve["uscd"][-1] == pytest.approx(curve["standard"][-1], abs=0.05)
    assert result.verdict == uscd.verdict(m).value
