r"""Plackett–Luce distillation (PLD): a teacher-confidence-weighted list-wise ranking loss.

PLD (arXiv:2506.12542, 2025) distils the teacher's *ranking* of the classes. The
teacher-optimal permutation puts the true class first and the others by decreasing teacher
logit, :math:`\pi^* = (y, \text{rest sorted by } t \downarrow)`; the teacher's confidence
:math:`q = \mathrm{softmax}(t/\tau_T)` weighs each position of the Plackett–Luce likelihood
of :math:`\pi^*` under the student's logits:

.. math::

    \mathcal L_\mathrm{PLD}(s) = -\sum_{k=1}^{C} q_{\pi^*_k}\Big[s_{\pi^*_k}
        - \log\sum_{j \ge k} \exp s_{\pi^*_j}\Big].

It is convex in s and invariant to shifting the student's logits. Weights (1, 0, ..., 0) give
cross-entropy, uniform weights ListMLE. There is no separate CE term and no mixing weight.
The tail log-sum-exps are one reverse ``logcumsumexp`` (O(C log C) with the sort).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import check_positive_scalar
from divergent.objectives._common import Objective, Rows, check_weight, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["PLDLoss", "pld_loss", "pld_rows"]


def pld_rows(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    teacher_temperature: float = 1.0,
) -> Tensor:
    """Per-row PLD loss of ``(rows, C)`` logits (no validation; see :func:`pld_loss`).

    Without labels the permutation is the teacher's own ranking.
    """
    order_key = teacher_logits
    if labels is not None:  # the true class first, whatever the teacher says
        order_key = teacher_logits.scatter(-1, labels[:, None], math.inf)
    perm = torch.argsort(order_key, dim=-1, descending=True, stable=True)
    s_perm = student_logits.gather(-1, perm)
    tail_lse = torch.logcumsumexp(s_perm.flip(-1), dim=-1).flip(-1)
    q_perm = torch.softmax(teacher_logits / teacher_temperature, dim=-1).gather(-1, perm)
    return -(q_perm * (s_perm - tail_lse)).sum(-1)


def _check_pld(teacher_temperature: Any, kd_weight: Any, **_other: Any) -> tuple[float, float]:
    """Checked ``(teacher_temperature, kd_weight)``."""
    teacher_temperature = check_positive_scalar(teacher_temperature, "teacher_temperature")
    return teacher_temperature, check_weight(kd_weight, "kd_weight")


@loss_keywords
def pld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    teacher_temperature: float = 1.0,
    kd_weight: float = 1.0,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""Plackett–Luce distillation loss (module docstring).

    Args:
        student_logits: shape ``(..., C)``.
        teacher_logits: same shape (the permutation and the weights come from it; no gradient
            flows to the teacher through the sort).
        labels: int64 of the leading shape; the true class is put first. Without labels the
            teacher's own ranking is used.
        teacher_temperature: τ_T of the confidence weights (1 is best on ImageNet in the
            paper; it uses 4 on CIFAR-100).
        kd_weight: overall weight (the method has no CE term).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> pld_loss(s, t, torch.tensor([0, 1]))
        tensor(0.3612)

    References:
        "Plackett–Luce distillation" (PLD), arXiv:2506.12542, 2025 (Eq. of the
        confidence-weighted ListMLE; no official code found).
    """
    teacher_temperature, kd_weight = _check_pld(teacher_temperature, kd_weight)
    r = Rows.select(student_logits, teacher_logits, labels, row_options, "pld")
    return r.finish(kd_weight * pld_rows(*r.logits(), r.labels, teacher_temperature))


class PLDLoss(Objective):
    """Module form of :func:`pld_loss` (registry id ``pld``); labels are optional."""

    function = staticmethod(pld_loss)
    check_options = staticmethod(_check_pld)
