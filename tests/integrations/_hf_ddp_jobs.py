"""Run by test_hf_ddp.py under ``torchrun --standalone --nproc_per_node 2``: both of its DDP
jobs in one launch (each process start imports torch and transformers, most of a job's
time): the DistillationTrainer step of _hf_ddp_worker.py into OUT_DIR/trainer, then the
``--task lm`` job of _lm_ddp_worker.py with 2 blocks per process into OUT_DIR/lm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _hf_ddp_worker
import _lm_ddp_worker
import torch

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    for job in ("trainer", "lm"):
        (out / job).mkdir(parents=True, exist_ok=True)
    _hf_ddp_worker.main(str(out / "trainer"))
    _lm_ddp_worker.main(out / "lm", per_process=2)
