"""apo reproduction: the verdict on both sides of each threshold, the toy task, a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import apo
from divergent.repro import Verdict
from divergent.toy import TabularPolicy


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
    assert apo.verdict({"hard_accuracy_gap": {"low": low, "high": high}}) == Verdict(expected)


def test_task_references_have_the_set_accuracies_and_lengths() -> None:
    task = apo._Task(0)
    for p, acc in enumerate(apo.REFERENCE_ACCURACY):
        probs = task.ref_log_probs[p].exp()
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12)
        assert float((probs * task.correct[p]).sum()) == pytest.approx(acc, abs=1e-12)
        policy = TabularPolicy.from_log_probs(task.space, task.ref_log_probs[p])
        torch.testing.assert_close(policy.log_probs().detach(), task.ref_log_probs[p])
    seqs = task.space.sequences
    row = int((seqs == torch.tensor([2, 0, 3, 1])).all(-1).nonzero()[0, 0])
    assert task.lengths[row] == 2 and task.token_mask[row].tolist() == [True, True, False, False]
    row = int((seqs == torch.tensor([2, 1, 3, 1])).all(-1).nonzero()[0, 0])
    assert task.lengths[row] == 4 and task.token_mask[row].all()
    assert torch.all(task.lengths[task.correct.any(0)] == 2)  # correct answers: [a, stop]


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("apo", tmp_path)
    m = result.metrics
    per = m["per_seed"]
    gaps = [a - b for a, b in zip(per["dads"]["hard_accuracy"], per["grpo"]["hard_accuracy"])]
    assert m["hard_accuracy_gap"]["mean"] == pytest.approx(sum(gaps) / m["n_seeds"])
    hard_start = sum(apo.REFERENCE_ACCURACY[p] for p in apo.HARD) / len(apo.HARD)
    assert m["initial_seed0"]["hard_accuracy"] == pytest.approx(hard_start)
    for v in apo.VARIANTS:
        assert m["mean"][v]["hard_accuracy"] > hard_start  # every variant learns
        assert all(k >= 0 for k in per[v]["easy_kl"])
        assert all(1.0 <= x <= apo.LENGTH for x in per[v]["wrong_length"])
