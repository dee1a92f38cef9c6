"""superhf reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import superhf
from divergent.repro import Verdict


def _metrics(low: float, high: float, gain: float = 0.5) -> dict:
    return {
        "matched_true_gap": {"mean": (low + high) / 2, "low": low, "high": high},
        "common_proxy_gain_min": gain,
    }


@pytest.mark.parametrize(
    ("low", "high", "gain", "expected"),
    [
        (0.001, 0.2, 0.5, "held"),
        (0.001, 0.2, 0.049, "inconclusive"),  # too little proxy gain to compare
        (0.001, 0.2, 0.051, "held"),
        (-0.001, 0.2, 0.5, "inconclusive"),
        (-0.3, 0.021, 0.5, "inconclusive"),
        (-0.3, 0.019, 0.5, "not held"),
        (-0.3, -0.1, 0.5, "not held"),
        (-0.3, -0.1, 0.01, "inconclusive"),
    ],
)
def test_verdict(low: float, high: float, gain: float, expected: str) -> None:
    assert superhf.verdict(_metrics(low, high, gain)) == Verdict(expected)


def test_verdict_reads_json_strings() -> None:
    m = {"matched_true_gap": {"low": "0.01", "high": "0.5"}, "common_proxy_gain_min": "1.0"}
    assert superhf.verdict(m) == Verdict("held")


def test_true_at_interpolates_first_crossing() -> None:
    curve = {"proxy": [0.0, 1.0, 0.5, 2.0], "true": [0.0, -1.0, 5.0, -3.0]}
    assert superhf._true_at(curve, 0.5) == pytest.approx(-0.5)
    assert superhf._true_at(curve, 1.5) == pytest.approx(5.0 + 0.5 * (-3.0 - 5.0))
    assert superhf._true_at(curve, -1.0) == 0.0
    assert superhf._true_at(curve, 9.0) == -3.0


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("superhf", tmp_path)
    m = result.metrics
    assert m["n_seeds"] == len(m["per_seed_gap"]) >= 3
    assert m["matched_true_gap"]["mean"] == pytest.approx(sum(m["per_seed_gap"]) / m["n_seeds"])
    for method in ("superhf", "rl"):
        final = m["final"][method]
        assert final["proxy"] > m["initial"]["proxy"]  # both optimise the proxy
        assert 0.0 <= final["hack"] <= 1.0 and final["kl"] >= 0.0
        # proxy − true = 2·hack exactly (bonus = penalty = 1), in the mean too
        assert final["proxy"] - final["true"] == pytest.approx(2 * final["hack"], abs=1e-9)
