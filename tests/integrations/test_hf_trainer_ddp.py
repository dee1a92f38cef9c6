"""DistillationTrainer under ``torchrun --nproc_per_node 2`` (DDP through Accelerate, gloo on
CPU): both ranks end with the weights of a one-process run with the same global batch, so the
loss routed through the DDP wrapper synchronises gradients and the token count is global
(``average_tokens_across_devices``); the teacher is not wrapped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _hf_ddp_worker import gpt2, run

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("_hf_ddp_worker.py")


def test_two_processes_match_one(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert (rank0["rank"], rank1["rank"], rank0["world_size"]) == (0, 1, 2)
    assert rank0["wrapper"] == "DistributedDataParallel"
    assert rank0["teacher"] == "GPT2LMHeadModel"  # not wrapped
    single = run(str(tmp_path / "single"))
    assert single["world_size"] == 1
    start = gpt2(1, 1, 0.02).state_dict()
    moved = 0.0
    for key, value in single["weights"].items():
        torch.testing.assert_close(rank0["weights"][key], rank1["weights"][key])
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((value - start[key]).abs().max()))
    assert moved > 1e-3  # the step changed the weights: the comparison can fail
