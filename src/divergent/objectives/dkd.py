r"""Decoupled knowledge distillation (DKD): target-class and non-target-class KD, reweighted.

Zhao, Cui, Song, Qiu & Liang (CVPR 2022) split the KD loss with the label y. With
:math:`p = \mathrm{softmax}(z/T)`, the binary distribution :math:`b = (p_y, 1 - p_y)` and the
distribution over the non-target classes :math:`\hat p_c = p_c / (1 - p_y)`, :math:`c \ne y`,

.. math::

    \mathrm{KL}(p^t\|p^s) = \underbrace{\mathrm{KL}(b^t\|b^s)}_{\mathrm{TCKD}}
        + (1 - p^t_y)\,\underbrace{\mathrm{KL}(\hat p^t\|\hat p^s)}_{\mathrm{NCKD}},

and DKD trains with the two parts decoupled:

.. math::

    \mathcal L = w_\mathrm{ce}\,\mathrm{CE}(s, y)
        + w_\mathrm{kd}\,T^2\,\big(\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}\big).

Both KL terms are evaluated by :func:`divergent.functional.divergence` (the chunked engine);
the non-target distributions are the softmax with the target logit at −∞ (exact, where the
official code subtracts 1000 from it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import check_int, check_positive_scalar
from divergent.functional import divergence as _divergence
from divergent.objectives._common import Objective, Rows, check_weights, kd_scale, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["DKDLoss", "dkd_loss", "dkd_terms"]


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Per-row ``(TCKD, NCKD)`` without the T² factor, of ``(rows, C)`` logits.

    :math:`\mathrm{TCKD} = \mathrm{KL}(b^t\|b^s)`, :math:`\mathrm{NCKD} = \mathrm{KL}(\hat p^t\|
    \hat p^s)` at temperature T (see the module docstring); inputs are not validated (use
    :func:`dkd_loss`).
    """
    target = torch.nn.functional.one_hot(labels, student_logits.shape[-1]).bool()
    binary, masked = [], []
    for z in (teacher_logits, student_logits):
        z = z / temperature
        log_norm = torch.logsumexp(z, dim=-1, keepdim=True)
        z_rest = z.masked_fill(target, -math.inf)
        log_target = z.gather(-1, labels[:, None]) - log_norm  # log p_y
        log_rest = torch.logsumexp(z_rest, dim=-1, keepdim=True) - log_norm  # log(1 − p_y)
        binary.append(torch.cat([log_target, log_rest], dim=-1))
        masked.append(z_rest)
    tckd = _divergence("kl", binary[0], binary[1], inputs="log_probs", reduction="none")
    nckd = _divergence("kl", masked[0], masked[1], reduction="none")
    return tckd, nckd


def _check_dkd(
    alpha: Any, beta: Any, temperature: Any, ce_weight: Any, kd_weight: Any, **_other: Any
) -> tuple[float, float, float, float, float]:
    """Checked ``(alpha, beta, temperature, ce_weight, kd_weight)`` (the module passes its
    other options too: they need no check here)."""
    alpha, beta = check_weights(alpha=alpha, beta=beta)
    temperature = check_positive_scalar(temperature, "temperature")
    return (alpha, beta, temperature, *check_weights(ce_weight=ce_weight, kd_weight=kd_weight))


@loss_keywords
def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    scale_by_temperature_squared: bool = True,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""Decoupled KD: :math:`w_\mathrm{ce}\mathrm{CE} + w_\mathrm{kd}T^2(\alpha\,\mathrm{TCKD}
    + \beta\,\mathrm{NCKD})`.

    Args:
        student_logits: student logits, shape ``(..., C)`` with C ≥ 2.
        teacher_logits: teacher logits, same shape (detach them for a frozen teacher).
        labels: int64 class indices of the leading shape (required: they define the split).
        alpha: weight of the target-class term TCKD (official default 1).
        beta: weight of the non-target term NCKD (official CIFAR-100 default 8; 0.5 on
            ImageNet; 2 or 6 for some pairs).
        temperature: T > 0 (official CIFAR default 4; ImageNet 1).
        ce_weight: weight of the hard-label cross-entropy (official 1).
        kd_weight: multiplies the DKD term; the official warm-up
            :math:`\min(\text{epoch}/20, 1)` goes here (:class:`DKDLoss` applies it).
        scale_by_temperature_squared: multiply TCKD and NCKD by T² (True in the official code).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Returns:
        The loss (scalar for ``"mean"``/``"sum"``, per row for ``"none"``).

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> y = torch.tensor([0, 1])
        >>> dkd_loss(s, t, y)
        tensor(2.7399)
        >>> # alpha = beta = 1 with the teacher's non-target weight is plain KD:
        >>> tckd, nckd = dkd_terms(s, t, y)
        >>> p_t = torch.softmax(t, -1)[[0, 1], y]
        >>> kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1),
        ...                                 log_target=True, reduction="none").sum(-1)
        >>> bool(torch.allclose(tckd + (1 - p_t) * nckd, kl))
        True

    References:
        Zhao, Cui, Song, Qiu & Liang, "Decoupled knowledge distillation", CVPR 2022
        (arXiv:2203.08679); defaults from the official code, mdistiller
        ``mdistiller/distillers/DKD.py`` and ``configs/cifar100/dkd/``.
    """
    alpha, beta, temperature, ce_weight, kd_weight = _check_dkd(
        alpha, beta, temperature, ce_weight, kd_weight
    )
    r = Rows.select(
        student_logits,
        teacher_logits,
        labels,
        row_options,
        "dkd",
        need_labels=True,
        ce_weight=ce_weight,
        min_classes=2,
    )
    assert r.labels is not None
    tckd, nckd = dkd_terms(*r.logits(), r.labels, temperature)
    scale = kd_scale(kd_weight, temperature, scale_by_temperature_squared)
    return r.finish(scale * (alpha * tckd + beta * nckd))


class DKDLoss(Objective):
    r"""Module form of :func:`dkd_loss` with the official warm-up (registry id ``dkd``).

    The DKD term is multiplied by :math:`\min((\text{epoch}+1)/\text{warmup\_epochs}, 1)` for
    the 0-based epoch given to :meth:`set_epoch` (the official code's
    :math:`\min(\text{epoch}/20, 1)` with 1-based epochs). The epoch starts at 0, so a trainer
    must call ``set_epoch`` at each epoch start; ``warmup_epochs=0`` disables the warm-up.
    """

    function = staticmethod(dkd_loss)
    check_options = staticmethod(_check_dkd)

    def __init__(self, *, warmup_epochs: int = 20, **options: Any) -> None:
        check_int(warmup_epochs, "warmup_epochs", 0)
        self._store_options(**options)
        self.warmup_epochs = warmup_epochs
        self.epoch = 0

    @property
    def needs_labels(self) -> bool:
        return True

    @property
    def warmup_factor(self) -> float:
        """:math:`\\min((\\text{epoch}+1)/\\text{warmup\\_epochs}, 1)` (1 without warm-up)."""
        if self.warmup_epochs == 0:
            return 1.0
        return min((self.epoch + 1) / self.warmup_epochs, 1.0)

    def set_epoch(self, epoch: int) -> None:
        check_int(epoch, "epoch", 0, "0-based")
        self.epoch = epoch

    def _call_options(self) -> dict[str, Any]:
        return {**self.options, "kd_weight": self.options["kd_weight"] * self.warmup_factor}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, warmup_epochs={self.warmup_epochs}, epoch={self.epoch}"
