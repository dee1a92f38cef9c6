"""llavamod reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import llavamod
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(kl: tuple[float, float], nll: tuple[float, float]) -> dict:
    return {
        "paired": {
            "ce_minus_mimic_pref": {"token_kl": {"low": kl[0], "high": kl[1]}},
            "mimic_minus_mimic_pref": {"nll": {"low": nll[0], "high": nll[1]}},
        }
    }


HELD_KL, OPEN_KL, NOT_KL = (0.001, 0.1), (-0.001, 0.0101), (-0.05, 0.0099)
HELD_NLL, OPEN_NLL, NOT_NLL = (0.001, 0.1), (-0.001, 0.0051), (-0.05, 0.0049)


@pytest.mark.parametrize(
    ("kl", "nll", "expected"),
    [
        (HELD_KL, HELD_NLL, "held"),
        (HELD_KL, OPEN_NLL, "inconclusive"),
        (OPEN_KL, HELD_NLL, "inconclusive"),
        (OPEN_KL, OPEN_NLL, "inconclusive"),
        (NOT_KL, HELD_NLL, "not held"),
        (HELD_KL, NOT_NLL, "not held"),
        (NOT_KL, OPEN_NLL, "not held"),
        (OPEN_KL, NOT_NLL, "not held"),
        ((-0.2, -0.1), (-0.3, -0.2), "not held"),
    ],
)
def test_verdict(kl: tuple[float, float], nll: tuple[float, float], expected: str) -> None:
    assert llavamod.verdict(_metrics(kl, nll)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("llavamod", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    diff = mean_ci([a - b for a, b in zip(per["ce"]["token_kl"], per["mimic_pref"]["token_kl"])])
    assert m["paired"]["ce_minus_mimic_pref"]["token_kl"]["low"] == pytest.approx(diff["low"])
    assert m["stage1_steps"] > 0 and m["stage2_steps"] > 0
    assert all(v > 0 for o in per.values() for v in o["token_kl"])
    assert all(m["teacher"]["nll"] < v for o in per.values() for v in o["nll"])
    assert result.verdict == llavamod.verdict(m).value
