"""The ``--task lm`` job under ``torchrun --nproc_per_node 2`` (DDP via the Hugging Face
Trainer, gloo on CPU) follows the loss curve of one process with the same global batch.

Two processes with 2 blocks each and one process with 4 blocks see the same blocks at every
step (the Trainer's seeded sampler, sharded batch by batch across ranks), and every block is
full, so the per-token mean over the global batch is the same; DDP averages the two half-batch
gradients. What differs is float32 summation order: measured, the logged losses of the two
runs differ by at most 1e-7 relative over 6 steps (teacher, ce, kd:js). The tolerance, 1e-5
relative, leaves 100× room for that, while consecutive steps' losses (different blocks) differ
by 2e-3 to 5e-2 relative here, so a shard of other blocks, a wrong token normalisation or a
missing gradient average fails it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from _lm_ddp_worker import OPTIONS

from divergent.integrations.lm_job import (
    TINY_SETTINGS,
    LMDistillConfig,
    run_lm_distill,
)

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("_lm_ddp_worker.py")


def _losses(job: Path, objective_folder: str) -> list[float]:
    if objective_folder == "teacher":
        record = json.loads((job / "teacher" / "divergent-teacher.json").read_text())
        history = record["summary"]["history"]
    else:
        result = job / "runs" / objective_folder / "seed-0" / "result.json"
        history = json.loads(result.read_text())["history"]
    return [h["loss"] for h in history]


def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path / "ddp"),
        "2",
    ]
    done = subprocess.run(command, env=env, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [
        (0, 2, "gloo"),
        (1, 2, "gloo"),
    ]
    assert ranks[0]["perplexities"] == ranks[1]["perplexities"]  # the same weights on both
    ddp_report = json.loads((tmp_path / "ddp" / "job" / "report.json").read_text())
    assert ddp_report["settings"]["world_size"] == 2

    single = tmp_path / "single"
    settings = {**TINY_SETTINGS, "batch_size": 4}
    report = run_lm_distill(LMDistillConfig(out=single, **OPTIONS, **settings))
    assert report["settings"]["world_size"] == 1

    for folder in ("teacher", "ce", "kd-js"):
        ddp_curve, one_curve = _losses(tmp_path / "ddp" / "job", folder), _losses(single, folder)
        assert len(ddp_curve) == len(one_curve) == OPTIONS["steps"], folder
        assert ddp_curve == pytest.approx(one_curve, rel=1e-5), folder
    for ddp_run, one_run in zip(ddp_report["runs"], report["runs"], strict=True):
        assert ddp_run["perplexity"] == pytest.approx(one_run["perplexity"], rel=1e-5)
        assert ddp_run["token_kl"] == pytest.approx(one_run["token_kl"], rel=1e-4)
