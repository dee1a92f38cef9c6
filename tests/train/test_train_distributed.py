"""ClassifierTrainer under ``torchrun --nproc_per_node 2`` (DDP through Accelerate, gloo on CPU).

The two processes end with identical weights, and these match a single-process run with the
same global batch (up to float summation order: DDP averages two half-batch gradients).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _ddp_worker import OPTIONS
from _launch import torchrun_two_processes
from _train_helpers import assert_same_weights, toy_data, toy_models

from divergent.objectives import make_objective
from divergent.train import ClassifierTrainer
from divergent.train.checkpoint import load_checkpoint

pytest.importorskip("accelerate")
pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("_ddp_worker.py")


def test_two_processes_match_one(tmp_path):
    torchrun_two_processes(WORKER, tmp_path, timeout=180)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert (rank0["rank"], rank1["rank"], rank0["world_size"]) == (0, 1, 2)
    assert rank0["ddp"] == "DistributedDataParallel"
    assert_same_weights(rank0["weights"], rank1["weights"])

    x, y = toy_data()
    teacher, student = toy_models()
    single = ClassifierTrainer(student, teacher, make_objective("kd"), (x, y), **OPTIONS).fit()
    assert rank0["steps"] == single.global_step == 10
    for key, value in single.student.state_dict().items():
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-5, atol=1e-6)

    state = load_checkpoint(tmp_path / "ckpt" / "last.ckpt")  # written by rank 0 only
    assert state["finished"] and len(state["rng"]) == 2  # both processes' RNG states
    assert_same_weights(state["student"], rank0["weights"])
