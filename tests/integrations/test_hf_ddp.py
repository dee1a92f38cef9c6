"""The Hugging Face integrations under ``torchrun --nproc_per_node 2`` (DDP, gloo on CPU)
against one process with the same global batch. One launch runs both jobs
(``_hf_ddp_jobs.py``; each process start imports torch and transformers), each test checks
one of them.

DistillationTrainer (DDP through Accelerate): both ranks end with the weights of a
one-process run, so the loss routed through the DDP wrapper synchronises gradients and the
token count is global (``average_tokens_across_devices``); the teacher is not wrapped.

The ``--task lm`` job (DDP via the Hugging Face Trainer) follows the loss curve of one
process. Two processes with 2 blocks each and one process with 4 blocks see the same blocks
at every step (the Trainer's seeded sampler, sharded batch by batch across ranks), and every
block is full, so the per-token mean over the global batch is the same; DDP averages the two
half-batch gradients. What differs is float32 summation order: measured, the logged losses
of the two runs differ by at most 1e-7 relative over 6 steps (teacher, ce, kd:js). The
tolerance, 1e-5 relative, leaves 100× room for that, while consecutive steps' losses
(different blocks) differ by 2e-3 to 5e-2 relative here, so a shard of other blocks, a wrong
token normalisation or a missing gradient average fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from _hf_ddp_worker import gpt2, run
from _launch import torchrun_two_processes
from _lm_ddp_worker import OPTIONS

from divergent.integrations.lm_job import TINY_SETTINGS, LMDistillConfig, run_lm_distill

pytestmark = pytest.mark.distributed

JOBS = Path(__file__).with_name("_hf_ddp_jobs.py")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    """The folder of the 2-process launch: ``trainer/`` and ``lm/``."""
    out = tmp_path_factory.mktemp("ddp")
    torchrun_two_processes(JOBS, out, pythonpath=Path(__file__).parent)
    return out


def test_distillation_trainer_two_processes_match_one(ddp, tmp_path) -> None:
    rank0, rank1 = (torch.load(ddp / "trainer" / f"rank{r}.pt") for r in (0, 1))
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


def _losses(job: Path, objective_folder: str) -> list[float]:
    if objective_folder == "teacher":
        record = json.loads((job / "teacher" / "divergent-teacher.json").read_text())
        history = record["summary"]["history"]
    else:
        result = job / "runs" / objective_folder / "seed-0" / "result.json"
        history = json.loads(result.read_text())["history"]
    return [h["loss"] for h in history]


def test_lm_job_two_processes_follow_one_process_with_the_same_global_batch(ddp, tmp_path):
    lm = ddp / "lm"
    ranks = [json.loads((lm / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [
        (0, 2, "gloo"),
        (1, 2, "gloo"),
    ]
    assert ranks[0]["perplexities"] == ranks[1]["perplexities"]  # the same weights on both
    ddp_report = json.loads((lm / "job" / "report.json").read_text())
    assert ddp_report["settings"]["world_size"] == 2

    single = tmp_path / "single"
    settings = {**TINY_SETTINGS, "batch_size": 4}
    report = run_lm_distill(LMDistillConfig(out=single, **OPTIONS, **settings))
    assert report["settings"]["world_size"] == 1

    for folder in ("teacher", "ce", "kd-js"):
        ddp_curve, one_curve = _losses(lm / "job", folder), _losses(single, folder)
        assert len(ddp_curve) == len(one_curve) == OPTIONS["steps"], folder
        assert ddp_curve == pytest.approx(one_curve, rel=1e-5), folder
    for ddp_run, one_run in zip(ddp_report["runs"], report["runs"], strict=True):
        assert ddp_run["perplexity"] == pytest.approx(one_run["perplexity"], rel=1e-5)
        assert ddp_run["token_kl"] == pytest.approx(one_run["token_kl"], rel=1e-4)
