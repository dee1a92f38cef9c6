"""Run by test_train_distributed.py under ``torchrun --standalone --nproc_per_node 2``.

Each process trains the same student with ClassifierTrainer (DDP through Accelerate, gloo on
CPU) and saves its final weights, its rank and the world size to OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import toy_data, toy_models

from divergent.objectives import make_objective
from divergent.train import ClassifierTrainer

OPTIONS = {"epochs": 2, "batch_size": 20, "lr": 1e-2, "seed": 5, "progress": False}


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    x, y = toy_data()
    teacher, student = toy_models()
    trainer = ClassifierTrainer(
        student,
        teacher,
        make_objective("kd"),
        (x, y),
        device="cpu",
        checkpoint_dir=out / "ckpt",
        checkpoint_every=3,
        **OPTIONS,
    )
    result = trainer.fit()
    torch.save(
        {
            "weights": result.student.state_dict(),
            "rank": trainer.rank,
            "world_size": trainer.world_size,
            "ddp": type(trainer._model).__name__,
            "steps": result.global_step,
        },
        out / f"rank{trainer.rank}.pt",
    )


if __name__ == "__main__":
    main()
