"""Offline distillation of tiny students on embedded data: one teacher, many objectives, seeds.

A thin layer over :mod:`divergent.train.small_models` for the distillation reproductions:
:func:`train_teacher` (cross-entropy on the full training split), :func:`distill` (a student
trained on ``objective(student_logits, teacher_logits, labels)`` with the teacher's logits
computed once: the data are not augmented) and :func:`student_scores` (accuracy, ECE, NLL
and fidelity to the teacher on the test split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from divergent.metrics.calibration import expected_calibration_error
from divergent.metrics.fidelity import fidelity
from divergent.train.small_models import Split, cross_entropy_loss, evaluate, fit, mlp

__all__ = ["StudentScores", "distill", "student_scores", "train_teacher"]

ObjectiveFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def train_teacher(
    split: Split,
    *,
    hidden: Sequence[int] = (128,),
    epochs: int = 20,
    model: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A teacher trained by cross-entropy on the whole training split (MLP unless ``model``)."""
    net = (
        model
        if model is not None
        else mlp(split.n_features, hidden, split.n_classes, generator=generator)
    )
    fit(
        net,
        cross_entropy_loss,
        split.x_train,
        split.y_train,
        epochs=epochs,
        lr=3e-3,
        generator=generator,
    )
    return net


def distill(
    student: nn.Module,
    objective: ObjectiveFn,
    x: Tensor,
    y: Tensor,
    teacher_logits: Tensor,
    *,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train ``student`` on ``objective(student(x_b), teacher_logits[b], y_b)``.

    ``teacher_logits`` holds the (detached) teacher outputs of every row of ``x``.
    Returns the per-epoch mean loss.
    """
    teacher_logits = teacher_logits.detach()

    def loss(model: nn.Module, xb: Tensor, yb: Tensor, idx: Tensor) -> Tensor:
        return objective(model(xb), teacher_logits[idx], yb)

    return fit(
        student, loss, x, y, epochs=epochs, batch_size=batch_size, lr=lr, generator=generator
    )


@dataclass(frozen=True)
class StudentScores:
    """Test accuracy, top-label ECE (15 bins), NLL, top-1 agreement and KL(teacher‖student)."""

    accuracy: float
    ece: float
    nll: float
    agreement: float
    teacher_kl: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def student_scores(
    student: nn.Module | Tensor, x: Tensor, y: Tensor, teacher_logits: Tensor
) -> StudentScores:
    """Scores of a student (a module, or its logits on ``x``) against labels and the teacher."""
    logits = student if isinstance(student, Tensor) else evaluate(student, x, y).logits
    nll = float(nn.functional.cross_entropy(logits, y))
    fid = fidelity(logits, teacher_logits)
    return StudentScores(
        accuracy=float((logits.argmax(-1) == y).double().mean()),
        ece=float(expected_calibration_error(torch.softmax(logits, -1), y)),
        nll=nll,
        agreement=float(fid.top1_agreement),
        teacher_kl=float(fid.kl),
    )
