"""ofakd reproduction: the verdict on both sides of its threshold, the student, a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import ofakd
from divergent.repro import Verdict


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.05, "held"),
        (-0.001, 0.05, "inconclusive"),
        (-0.03, 0.011, "inconclusive"),
        (-0.03, 0.009, "not held"),
    ],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    metrics = {"paired": {"ofa_minus_kd": {"accuracy": {"low": low, "high": high}}}}
    assert ofakd.verdict(metrics) == Verdict(expected)


def test_multi_exit_student_stacks_stage_logits_only_while_training() -> None:
    net = ofakd.MultiExitMLP(10, torch.Generator().manual_seed(0), exits=True)
    x = torch.rand(5, 64)
    assert net(x).shape == (1 + len(ofakd.HIDDEN), 5, 10)
    net.eval()
    assert net(x).shape == (5, 10)
    plain = ofakd.MultiExitMLP(10, torch.Generator().manual_seed(0), exits=False)
    assert plain(x).shape == (5, 10)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("ofakd", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    assert m["teacher_accuracy_mean"] > 0.9  # the CNN teacher is a real classifier
    assert result.verdict == ofakd.verdict(m).value
