"""sfda reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import sfda
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(source: tuple[float, float], entropy: tuple[float, float]) -> dict:
    return {
        "sfda_minus_source": {"low": source[0], "high": source[1]},
        "sfda_minus_entropy": {"low": entropy[0], "high": entropy[1]},
    }


@pytest.mark.parametrize(
    ("source", "entropy", "expected"),
    [
        ((0.15, 0.25), (0.20, 0.30), "held"),
        ((0.001, 0.05), (0.001, 0.05), "held"),  # both just above 0
        ((-0.001, 0.05), (0.20, 0.30), "inconclusive"),  # straddles 0, reaches the margin
        ((-0.05, 0.019), (0.20, 0.30), "not held"),  # below the 0.02 margin
        ((0.15, 0.25), (-0.10, -0.01), "not held"),  # worse than entropy alone
        ((-0.01, 0.021), (-0.01, 0.019), "not held"),  # a measured failure decides
        ((-0.01, 0.021), (0.10, 0.20), "inconclusive"),
        ((float("nan"), 0.1), (0.10, 0.20), "inconclusive"),
    ],
)
def test_verdict(source, entropy, expected: str) -> None:
    assert sfda.verdict(_metrics(source, entropy)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("sfda", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    acc = m["target_accuracy"]
    assert set(acc) == set(sfda.METHODS) and all(len(v) == m["n_seeds"] for v in acc.values())
    diff = mean_ci([a - b for a, b in zip(acc["sfda"], acc["source_only"])])
    assert m["sfda_minus_source"]["low"] == pytest.approx(diff["low"])
    assert result.verdict == sfda.verdict(m).value
    assert all(0.0 <= a <= 1.0 for v in acc.values() for a in v)
    assert m["source_domain_accuracy_mean"] > 0.9  # the source model is a real classifier
    assert result.plots and (tmp_path / result.plots[0]).stat().st_size > 1000
