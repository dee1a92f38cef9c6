"""divergent.train: trainers and shared training loops.

* :mod:`divergent.train.classifier` — :class:`ClassifierTrainer`, a resumable distillation
  trainer for classifiers (atomic checkpoints, exact resume, DDP through Accelerate);
* :mod:`divergent.train.checkpoint` — atomic, verified checkpoint files;
* :mod:`divergent.train.data` — embedded digits, user ``.npz``/``.csv`` tables, small MLPs;
* :mod:`divergent.train.distill_job` — the job behind ``divergent distill``.
"""

from divergent.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from divergent.train.classifier import (
    ClassifierTrainer,
    FitResult,
    NonFiniteLossError,
    evaluate_logits,
    fit_classifier,
)
from divergent.train.data import (
    ClassificationTask,
    DataError,
    load_digits_task,
    load_table,
    make_task,
    student_mlp,
    teacher_mlp,
)
from divergent.train.distill_job import DistillConfig, DistillError, run_distill

__all__ = [
    "CheckpointError",
    "ClassificationTask",
    "ClassifierTrainer",
    "DataError",
    "DistillConfig",
    "DistillError",
    "FitResult",
    "NonFiniteLossError",
    "evaluate_logits",
    "fit_classifier",
    "load_checkpoint",
    "load_digits_task",
    "load_table",
    "make_task",
    "run_distill",
    "save_checkpoint",
    "student_mlp",
    "teacher_mlp",
]
