r"""Fidelity of a student to its teacher: top-1 agreement and the mean KL(teacher‖student).

Stanton et al. (NeurIPS 2021) separate a distilled student's *generalisation* (accuracy on
the labels) from its *fidelity* to the teacher; Ramesh et al. (Findings of ACL 2025) find the
two need not move together. The two standard fidelity measures are

.. math::

    \mathrm{agreement} = \frac1n\sum_i 1\big[\arg\max_k s_{ik} = \arg\max_k t_{ik}\big],
    \qquad
    \overline{\mathrm{KL}} = \frac1n\sum_i \mathrm{KL}\big(\mathrm{softmax}(t_i/T)\,\|\,
        \mathrm{softmax}(s_i/T)\big),

the KL evaluated by :func:`divergent.functional.kl` (teacher first, nats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from divergent._validation import check_pair, check_positive_scalar
from divergent.functional import kl

__all__ = ["Fidelity", "fidelity"]


@dataclass(frozen=True)
class Fidelity:
    """Student-to-teacher fidelity on a set of inputs.

    Attributes:
        top1_agreement: share of rows where the student's and the teacher's argmax agree.
        kl: mean KL(teacher‖student) over rows at the given temperature (nats).
        n: number of rows.
    """

    top1_agreement: float
    kl: float
    n: int


@torch.no_grad()
def fidelity(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Fidelity:
    r"""Top-1 agreement and mean KL(teacher‖student) between two sets of logits.

    Args:
        student_logits: shape ``(..., C)``.
        teacher_logits: same shape.
        temperature: T > 0 dividing both sides in the KL (the agreement does not depend on it).
        mask: bool of the leading shape; False rows are skipped.

    Returns:
        A :class:`Fidelity` (floats; ``n`` counts the rows used).

    Raises:
        ValueError: a class-count or shape mismatch, no row kept, or a bad option.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 0.0, 2.0]])
        >>> f = fidelity(s, t)
        >>> f.top1_agreement, round(f.kl, 4), f.n
        (0.5, 0.4023, 2)

    References:
        Stanton, Izmailov, Kirichenko, Alemi & Wilson, "Does knowledge distillation really
        work?", NeurIPS 2021; Ramesh, Sengupta & Chakraborty, "On the generalization vs
        fidelity paradox in knowledge distillation", Findings of ACL 2025.
    """
    student_logits, teacher_logits = check_pair(
        student_logits, teacher_logits, "student_logits", "teacher_logits"
    )
    check_positive_scalar(temperature, "temperature")
    agree = student_logits.argmax(-1).eq(teacher_logits.argmax(-1))
    if mask is not None:
        # validated (dtype, shape) by kl below; count the kept rows here
        value = kl(teacher_logits, student_logits, temperature=temperature, mask=mask)
        mask = mask.to(agree.device)
        n = int(mask.sum())
        agree = agree[mask]
    else:
        value = kl(teacher_logits, student_logits, temperature=temperature)
        n = agree.numel()
    if n == 0:
        raise ValueError(
            "fidelity needs at least one row (all rows are masked or the input is empty)"
        )
    kl_value = float(value)
    # NaN in a kept row means NaN out, whatever the divergence path returns for it
    rows_nan = torch.isnan(student_logits).any(-1) | torch.isnan(teacher_logits).any(-1)
    if mask is not None:
        rows_nan = rows_nan[mask]
    if bool(rows_nan.any()):
        kl_value = math.nan
    return Fidelity(top1_agreement=float(agree.to(torch.float64).mean()), kl=kl_value, n=n)
