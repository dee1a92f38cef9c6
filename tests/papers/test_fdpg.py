"""fdpg reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import fdpg
from divergent.repro import Verdict


@pytest.mark.parametrize(
    ("fraction", "gap", "expected"),
    [
        (1.0, 2.0, "held"),
        (0.8, 0.11, "held"),
        (0.79, 2.0, "inconclusive"),  # between on 50-80 % of seeds
        (0.5, 2.0, "inconclusive"),
        (0.49, 2.0, "not held"),  # between on fewer than half
        (0.0, 2.0, "not held"),
        (1.0, 0.09, "inconclusive"),  # FKL and RKL do not differ: nothing to sit between
        (0.0, 0.09, "inconclusive"),
        (float("nan"), 2.0, "inconclusive"),
    ],
)
def test_verdict(fraction: float, gap: float, expected: str) -> None:
    metrics = {"fraction_between": fraction, "entropy_gap_fkl_minus_rkl": gap}
    assert fdpg.verdict(metrics) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("fdpg", tmp_path)
    m = result.metrics
    runs = m["per_seed"]
    assert len(runs) == m["n_seeds"] >= 2
    for r in runs:
        # forward KL is the most covering and the least precise on every seed
        assert (
            r["kl"]["entropy"] > r["js"]["entropy"]
            and r["kl"]["entropy"] > r["reverse_kl"]["entropy"]
        )
        assert r["kl"]["precision"] < r["js"]["precision"]
        # each fit is closest to the target in its own divergence among the three fits
        assert r["kl"]["forward_kl"] <= min(r["js"]["forward_kl"], r["reverse_kl"]["forward_kl"])
        assert r["reverse_kl"]["reverse_kl"] <= r["kl"]["reverse_kl"]
        assert 0.9 < r["target_precision"] <= 1.0
    assert m["fraction_between"] == pytest.approx(sum(r["between"] for r in runs) / len(runs))
