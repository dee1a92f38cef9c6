"""Run by test_lm_ddp.py under ``torchrun --standalone --nproc_per_node 2``.

Every process runs the same ``divergent distill --task lm`` job on tiny settings with
``batch_size`` blocks per process (DDP through the Hugging Face Trainer, gloo on CPU); rank 0
writes OUT_DIR (argv[1]) and every rank writes OUT_DIR/rank<r>.json with its world size and
its final student weights' digest.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from divergent.integrations.lm_job import TINY_SETTINGS, LMDistillConfig, run_lm_distill

OPTIONS = {"objectives": ("kd:js",), "seeds": 1, "steps": 6, "teacher_steps": 6}


def main() -> None:
    out = Path(sys.argv[1])
    per_process = int(sys.argv[2])
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


if __name__ == "__main__":
    main()
