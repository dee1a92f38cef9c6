"""sinkd reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import sinkd
from divergent.repro import Verdict


def _metrics(kl: tuple, rkl: tuple, js: tuple) -> dict:
    cis = {"kl": kl, "reverse_kl": rkl, "js": js}
    return {
        "paired": {
            f"sinkd_minus_{b}": {"accuracy": {"low": lo, "high": hi}} for b, (lo, hi) in cis.items()
        }
    }


@pytest.mark.parametrize(
    ("kl", "rkl", "js", "expected"),
    [
        ((0.001, 0.03), (0.002, 0.03), (0.003, 0.03), "held"),
        ((-0.001, 0.03), (0.002, 0.03), (0.003, 0.03), "inconclusive"),
        ((0.001, 0.03), (0.002, 0.03), (-0.02, 0.009), "not held"),
        ((0.001, 0.03), (-0.02, 0.011), (0.003, 0.03), "inconclusive"),
        ((-0.05, -0.01), (-0.02, 0.011), (0.003, 0.03), "not held"),
    ],
)
def test_verdict(kl, rkl, js, expected: str) -> None:
    assert sinkd.verdict(_metrics(kl, rkl, js)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("sinkd", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    assert set(m["per_seed"]) == {"sinkd", *sinkd.BASELINES}
    assert all(len(v["accuracy"]) == m["n_seeds"] for v in m["per_seed"].values())
    assert result.verdict == sinkd.verdict(m).value
