"""gtpo reproduction: the verdict on both sides of each threshold, the toy task, a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import gtpo
from divergent.repro import Verdict
from divergent.toy import SequenceSpace


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.1, "held"),
        (-0.001, 0.1, "inconclusive"),
        (-0.1, 0.021, "inconclusive"),
        (-0.1, 0.019, "not held"),  # MARGIN = 0.02
        (-0.1, -0.05, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert gtpo.verdict({"reward_gap": {"low": low, "high": high}}) == Verdict(expected)


def test_initial_policy_and_task() -> None:
    space = SequenceSpace(gtpo.VOCAB, gtpo.LENGTH)
    lp = gtpo._initial_log_probs(space)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-12)
    reward, fmt = gtpo._task(space)
    p = lp.exp()
    assert float((p * fmt).sum()) == pytest.approx(0.85**2)
    assert float((p * reward).sum()) == pytest.approx(0.85**2 * 0.25)
    assert reward.sum().item() == 1.0  # exactly one right completion: 1 2 3 1
    assert space.sequences[reward.argmax()].tolist() == [1, 2, 3, 1]


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("gtpo", tmp_path)
    m = result.metrics
    per = m["per_seed_final"]
    gaps = [a - b for a, b in zip(per["gtpo_conflict"]["reward"], per["grpo"]["reward"])]
    assert m["reward_gap"]["mean"] == pytest.approx(sum(gaps) / m["n_seeds"])
    assert m["initial"]["reward"] == pytest.approx(0.85**2 * 0.25)
    for method in ("grpo", "gtpo_conflict"):
        # both learn: the exact reward rises well above the start
        assert m["final_mean"][method]["reward"] > m["initial"]["reward"] + 0.1
    for d in per.values():
        assert all(0.0 <= r <= f + 1e-12 <= 1.0 + 1e-12 for r, f in zip(d["reward"], d["format"]))
