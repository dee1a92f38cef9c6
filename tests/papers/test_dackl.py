"""dackl reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import dackl
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(low: float, high: float) -> dict:
    return {"paired": {"kd_minus_dackl": {"nll": {"low": low, "high": high}}}}


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.05, "held"),
        (-0.001, 0.05, "inconclusive"),
        (-0.02, 0.011, "inconclusive"),
        (-0.02, 0.009, "not held"),
        (-0.06, -0.02, "not held"),
        (float("nan"), 0.05, "inconclusive"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert dackl.verdict(_metrics(low, high)) == Verdict(expected)


def test_verdict_reads_json_metrics() -> None:
    assert dackl.verdict(_metrics("-inf", "0.0")) == Verdict("not held")  # type: ignore[arg-type]


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("dackl", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    diff = mean_ci([a - b for a, b in zip(per["kd"]["nll"], per["dackl"]["nll"])])
    assert m["paired"]["kd_minus_dackl"]["nll"]["low"] == pytest.approx(diff["low"])
    # a uniform guess over 96 characters has NLL log 96 ≈ 4.56; every model learnt something
    assert m["teacher"]["nll"] < math.log(96) - 1
    assert all(m["teacher"]["nll"] < v < math.log(96) for o in per.values() for v in o["nll"])
    assert all(v > 0 for o in per.values() for v in o["token_kl"])
    assert result.verdict == dackl.verdict(m).value
