r"""OFA-KD: the target-enhanced OFA loss in logit space, for heterogeneous teacher/student pairs.

Hao, Guo, Chen, Han, Xu & Wang (NeurIPS 2023) distil between architectures (CNN, ViT,
MLP) in the *logit* space, where they share nothing but the classes. With
:math:`p = \mathrm{softmax}(z/T)` and the one-hot label :math:`\mathbb 1_y`,

.. math::

    \mathcal L_\mathrm{OFA}(s, t, y) = -\sum_c \big[(p^t_c + \mathbb 1[c = y])^{\epsilon}
        - \mathbb 1[c = y]\big]\,\log p^s_c,

so the non-target classes are weighted by :math:`(p^t_c)^\epsilon` and the target by
:math:`(1 + p^t_y)^\epsilon - 1`: for ε > 1 the target's weight grows with the teacher's
confidence ("adaptive target enhancement"). At ε = 1 the weights are the teacher's
probabilities and the loss is the soft-target cross-entropy (it is not a divergence: it
includes the teacher's entropy). The official code also attaches projectors (feature → logits)
to intermediate student stages and applies the same loss to each branch against the teacher's
final logits; :class:`OFALoss` does this for feature vectors with ``branch_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from divergent._validation import as_integer, check_positive_scalar
from divergent.objectives._common import Objective, Rows, check_weights, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["OFALoss", "ofa_loss", "ofa_rows"]


def ofa_rows(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, eps: float, temperature: float
) -> Tensor:
    r"""Per-row OFA loss of ``(rows, C)`` logits (no validation; see :func:`ofa_loss`)."""
    log_p_s = torch.log_softmax(student_logits / temperature, dim=-1)
    p_t = torch.softmax(teacher_logits / temperature, dim=-1)
    target = torch.zeros_like(p_t).scatter_(-1, labels[:, None], 1.0)
    weight = (p_t + target) ** eps - target
    return -(weight * log_p_s).sum(-1)


def _check_ofa(
    eps: Any, temperature: Any, ce_weight: Any, kd_weight: Any, **_other: Any
) -> tuple[float, float, float, float]:
    """Checked ``(eps, temperature, ce_weight, kd_weight)`` (``ignore_index`` is checked with
    the rows)."""
    eps = check_positive_scalar(eps, "eps")
    temperature = check_positive_scalar(temperature, "temperature")
    return (eps, temperature, *check_weights(ce_weight=ce_weight, kd_weight=kd_weight))


@loss_keywords
def ofa_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    eps: float = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""OFA objective in logit space: :math:`w_\mathrm{ce}\mathrm{CE}(s, y) +
    w_\mathrm{kd}\mathcal L_\mathrm{OFA}(s, t, y)` (module docstring; no T² factor, as the
    official code).

    Args:
        student_logits: shape ``(..., C)``.
        teacher_logits: same shape (any architecture; only the classes are shared).
        labels: int64 of the leading shape (required: the target enhancement uses them).
        eps: the enhancement exponent ε > 0 (official default 1; 1.5 for ImageNet
            DeiT-T → ResNet-18 in the README).
        temperature: T > 0 (official default 1).
        ce_weight: weight of the hard-label CE (official ``--gt-loss-weight`` 1).
        kd_weight: weight of the OFA term (official ``--kd-loss-weight`` 1).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> ofa_loss(s, t, torch.tensor([0, 1]), eps=1.5)
        tensor(0.9705)

    References:
        Hao, Guo, Chen, Han, Xu & Wang, "One-for-All: bridge the gap between heterogeneous
        architectures in knowledge distillation", NeurIPS 2023 (arXiv:2310.19444); official
        code ``Hao840/OFAKD``, ``distillers/ofa.py`` and ``train.py``.
    """
    eps, temperature, ce_weight, kd_weight = _check_ofa(eps, temperature, ce_weight, kd_weight)
    r = Rows.select(
        student_logits,
        teacher_logits,
        labels,
        row_options,
        "ofa",
        need_labels=True,
        ce_weight=ce_weight,
    )
    assert r.labels is not None
    return r.finish(kd_weight * ofa_rows(*r.logits(), r.labels, eps, temperature))


class OFALoss(Objective):
    r"""Module form of :func:`ofa_loss` with optional branch projectors (registry id ``ofa``).

    With ``branch_dims=(d_1, ..., d_k)`` and ``n_classes``, the module owns one projector per
    branch (LayerNorm → Linear(d_i, C)) that maps a student feature vector of an intermediate
    stage to logits; ``forward(..., features=[f_1, ..., f_k])`` then adds
    :math:`w_\mathrm{branch}\sum_i \mathcal L_\mathrm{OFA}(\mathrm{proj}_i(f_i), t, y)`
    (the official multi-exit scheme, for vector features; pass ``model.parameters()`` and
    ``loss.parameters()`` to the optimiser; under data parallelism keep the projectors inside
    the wrapped model, or their gradients are not averaged across processes). Without branches
    it is the logit-space loss.

    Example:
        >>> import torch
        >>> loss = OFALoss(n_classes=3, branch_dims=(8,))
        >>> s, t, y = torch.zeros(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> loss(s, t, y, features=[torch.randn(4, 8)]).shape
        torch.Size([])
        >>> sum(p.numel() for p in loss.parameters())
        43
    """

    function = staticmethod(ofa_loss)
    check_options = staticmethod(_check_ofa)

    def __init__(
        self,
        *,
        branch_weight: float = 1.0,
        n_classes: int | None = None,
        branch_dims: Sequence[int] = (),
        **options: Any,
    ) -> None:
        (branch_weight,) = check_weights(branch_weight=branch_weight)
        self._store_options(**options)
        self.branch_weight = branch_weight
        given = tuple(branch_dims)
        classes = as_integer(n_classes)
        if given and (classes is None or classes < 1):
            raise ValueError(
                f"`n_classes` must be a positive integer when `branch_dims` is "
                f"given, got {n_classes!r}"
            )
        dims = [as_integer(d) for d in given]
        if any(d is None or d < 1 for d in dims):
            raise ValueError(f"`branch_dims` must hold positive integers, got {given!r}")
        self.projectors = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, classes))  # type: ignore[arg-type]
            for d in dims
        )

    @property
    def needs_labels(self) -> bool:
        return True

    def forward(  # type: ignore[override]
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        features: Sequence[Tensor] | None = None,
        mask: Tensor | None = None,
        reduction: str | None = None,
        normalizer: float | Tensor | None = None,
    ) -> Tensor:
        reduction = self.reduction if reduction is None else reduction
        loss = ofa_loss(
            student_logits,
            teacher_logits,
            labels,  # type: ignore[arg-type]
            mask=mask,
            reduction=reduction,
            normalizer=normalizer,
            **self.options,
        )
        n_features = 0 if features is None else len(features)
        if n_features != len(self.projectors):
            raise ValueError(
                f"`features` must hold one tensor per branch ({len(self.projectors)}), got "
                f"{n_features}"
            )
        branch_options = {**self.options, "ce_weight": 0.0, "kd_weight": self.branch_weight}
        for projector, feature in zip(self.projectors, features or ()):
            loss = loss + ofa_loss(
                projector(feature),
                teacher_logits,  # type: ignore[arg-type]
                labels,
                mask=mask,
                reduction=reduction,
                normalizer=normalizer,
                **branch_options,
            )
        return loss
