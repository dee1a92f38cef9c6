"""Subprocess of test_train_resume_sigkill.py: train a small student, save its final weights.

python _sigkill_worker.py CHECKPOINT_DIR OUT_FILE [--resume] [--slow]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import toy_data, toy_models

from divergent.objectives import make_objective
from divergent.train import ClassifierTrainer


class Slow(torch.nn.Module):
    """The objective, plus a pause per step: leaves time to kill the process mid-run."""

    def __init__(self, inner: torch.nn.Module, pause: float) -> None:
        super().__init__()
        self.inner, self.pause = inner, pause

    def forward(self, s, t, y):
        time.sleep(self.pause)
        return self.inner(s, t, y)


def train(ckpt_dir: str | Path, *, resume: bool, slow: bool):
    """The run under test (also called in-process by the test, with one thread)."""
    x, y = toy_data(n=400)
    teacher, student = toy_models()
    objective = Slow(make_objective("kd:js"), 0.004 if slow else 0.0)
    trainer = ClassifierTrainer(
        student,
        teacher,
        objective,
        (x, y),
        epochs=4,
        batch_size=16,
        lr=1e-2,
        seed=11,
        scheduler=lambda opt, total: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=2e-2, total_steps=total
        ),
        checkpoint_dir=ckpt_dir,
        checkpoint_every=5,
        progress=False,
    )
    return trainer.fit(resume=resume)


def main() -> None:
    torch.set_num_threads(1)
    ckpt_dir, out_file = sys.argv[1], sys.argv[2]
    result = train(ckpt_dir, resume="--resume" in sys.argv, slow="--slow" in sys.argv)
    torch.save({"weights": result.student.state_dict(), "history": result.history}, out_file)


if __name__ == "__main__":
    main()
