"""dphrl reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import dphrl
from divergent.repro import Verdict


def _metrics(f: tuple[float, float], js: tuple[float, float], rkl: tuple[float, float]) -> dict:
    ci = lambda lo, hi: {"low": lo, "high": hi}  # noqa: E731
    return {
        "paired_pass64": {
            "dph_f_minus_base": ci(*f),
            "dph_js_minus_base": ci(*js),
            "base_minus_rkl": ci(*rkl),
        }
    }


@pytest.mark.parametrize(
    ("f", "js", "rkl", "expected"),
    [
        ((-0.005, 0.02), (-0.009, 0.01), (0.01, 0.1), "held"),
        ((-0.011, 0.02), (-0.009, 0.01), (0.01, 0.1), "inconclusive"),  # DPH-F straddles −0.01
        ((-0.05, -0.011), (-0.009, 0.01), (0.01, 0.1), "not held"),  # DPH-F below base − 0.01
        ((-0.005, 0.02), (-0.05, -0.02), (0.01, 0.1), "not held"),  # DPH-JS below
        ((-0.005, 0.02), (-0.009, 0.01), (-0.01, 0.1), "inconclusive"),  # RKL drop unclear
        ((-0.005, 0.02), (-0.009, 0.01), (-0.05, 0.009), "not held"),  # RKL keeps pass@64
        ((float("nan"), 0.02), (-0.009, 0.01), (0.01, 0.1), "inconclusive"),
    ],
)
def test_verdict(f, js, rkl, expected) -> None:
    assert dphrl.verdict(_metrics(f, js, rkl)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("dphrl", tmp_path)
    m = result.metrics
    for rows in m["per_seed"].values():
        for r in rows:
            for part in ("all", "train", "heldout"):
                # pass@k is increasing in k and in [0, 1]
                assert 0 <= r[f"pass1_{part}"] <= r[f"pass8_{part}"] <= r[f"pass64_{part}"] <= 1
    # the RL runs raise pass@1 on the training problems
    for method in dphrl.METHODS:
        assert m["mean"][method]["pass1_train"] > m["mean"]["base"]["pass1_train"]
    # rehearsal ran: some near-perfect problems exist
    assert sum(r["n_near_perfect"] for r in m["per_seed"]["dph_f"]) > 0
