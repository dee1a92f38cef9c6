"""mathpuma reproduction: the verdict on both sides of each threshold, the views, a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import mathpuma
from divergent.papers._lm_runs import corpus
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(low: float, high: float) -> dict:
    return {"paired": {"ce_minus_puma": {"gap": {"low": low, "high": high}}}}


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0001, 0.02, "held"),
        (-0.0001, 0.02, "inconclusive"),
        (-0.01, 0.0051, "inconclusive"),
        (-0.01, 0.0049, "not held"),
        (-0.03, -0.01, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert mathpuma.verdict(_metrics(low, high)) == Verdict(expected)


def test_degraded_view_keeps_positions_and_noise_rate() -> None:
    ids = corpus().train[:20000]
    lower = mathpuma._lowercase_map()
    active = mathpuma.degrade(ids, torch.Generator().manual_seed(0), lower)
    assert active.shape == ids.shape
    changed = (active != lower[ids]).double().mean().item()
    # a replaced character equals the original with probability 1/95
    assert changed == pytest.approx(mathpuma.NOISE * 94 / 95, abs=0.01)
    text = corpus().vocab.decode(lower[ids[:2000]])
    assert text == text.lower()


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("mathpuma", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    diff = mean_ci([a - b for a, b in zip(per["ce"]["gap"], per["puma"]["gap"])])
    assert m["paired"]["ce_minus_puma"]["gap"]["high"] == pytest.approx(diff["high"])
    for o in per.values():
        for ref, act, gap in zip(o["accuracy_reference"], o["accuracy_active"], o["gap"]):
            assert gap == pytest.approx(ref - act)
            assert 0.1 < act < ref < 1  # the degraded view is harder
    assert result.verdict == mathpuma.verdict(m).value
