"""The ``--task lm`` job of test_hf_ddp.py, run under ``torchrun --standalone
--nproc_per_node 2`` (by _hf_ddp_jobs.py).

Every process runs the same ``divergent distill --task lm`` job on tiny settings with
``per_process`` blocks per process (DDP through the Hugging Face Trainer, gloo on CPU); rank 0
writes OUT_DIR/job and every rank writes OUT_DIR/rank<r>.json with its world size, backend
and the perplexities of its final students.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from divergent.integrations.lm_job import TINY_SETTINGS, LMDistillConfig, run_lm_distill

OPTIONS = {"objectives": ("kd:js",), "seeds": 1, "steps": 6, "teacher_steps": 6}


def main(out: Path, per_process: int) -> None:
    settings = {**TINY_SETTINGS, "batch_size": per_process}
    report = run_lm_distill(LMDistillConfig(out=out / "job", **OPTIONS, **settings))
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "world_size": torch.distributed.get_world_size(),
                "backend": torch.distributed.get_backend(),
                "perplexities": [run["perplexity"] for run in report["runs"]],
            }
        )
    )
