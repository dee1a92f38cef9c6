r"""DIST: distillation of inter-class and intra-class relations by Pearson correlation.

Huang, You, Wang, Qian & Xu (NeurIPS 2022) replace the exact match of KL by a match of
*relations*: with :math:`Y^s = \mathrm{softmax}(S/\tau)` and :math:`Y^t = \mathrm{softmax}(T/\tau)`
(B × C) and the Pearson correlation :math:`\rho`,

.. math::

    \mathcal L_\mathrm{inter} = 1 - \frac1B\sum_i \rho(Y^s_{i,:}, Y^t_{i,:}),\qquad
    \mathcal L_\mathrm{intra} = 1 - \frac1C\sum_j \rho(Y^s_{:,j}, Y^t_{:,j}),

.. math::

    \mathcal L = w_\mathrm{ce}\,\mathrm{CE} + w_\mathrm{kd}\,\tau^2\,
        (\beta\,\mathcal L_\mathrm{inter} + \gamma\,\mathcal L_\mathrm{intra}).

The inter-class term is per sample; the intra-class term is a correlation over the *batch*
(over the kept rows), so it depends on the batch size and, under data parallelism, on how the
batch is sharded (each process sees its own shard). With ``reduction="none"`` the batch term
is added equally to every kept row, so the mean over rows is the loss above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from divergent._validation import check_positive_scalar
from divergent.objectives._common import Objective, Rows, check_weights, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["DISTLoss", "dist_loss", "pearson_correlation"]


def pearson_correlation(a: Tensor, b: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    r"""Pearson correlation along ``dim``, as the official code computes it:
    :math:`\frac{\langle a - \bar a, b - \bar b\rangle}{\|a - \bar a\|\,\|b - \bar b\| + \epsilon}`.

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0, 3.0]])
        >>> pearson_correlation(a, 2 * a + 1), pearson_correlation(a, -a)
        (tensor([1.0000]), tensor([-1.0000]))
    """
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def _check_dist(
    beta: Any, gamma: Any, temperature: Any, ce_weight: Any, kd_weight: Any, eps: Any, **_: Any
) -> tuple[float, float, float, float, float, float]:
    """Checked ``(beta, gamma, temperature, ce_weight, kd_weight, eps)`` (``ignore_index`` is
    checked with the rows)."""
    beta, gamma = check_weights(beta=beta, gamma=gamma)
    temperature = check_positive_scalar(temperature, "temperature")
    ce_weight, kd_weight = check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
    eps = check_positive_scalar(eps, "eps", allow_zero=True)
    return beta, gamma, temperature, ce_weight, kd_weight, eps


@loss_keywords
def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 1.0,
    kd_weight: float = 2.0,
    eps: float = 1e-8,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""DIST: :math:`w_\mathrm{ce}\mathrm{CE} + w_\mathrm{kd}\tau^2(\beta\mathcal L_\mathrm{inter}
    + \gamma\mathcal L_\mathrm{intra})` (see the module docstring).

    Args:
        student_logits: shape ``(..., C)``; all kept rows form the batch of the intra term.
        teacher_logits: same shape.
        labels: int64 of the leading shape; needed when ``ce_weight > 0``.
        beta: weight of the inter-class relation (official 1).
        gamma: weight of the intra-class relation (official 1).
        temperature: τ (official ImageNet 1, CIFAR ``dist_t4`` 4).
        ce_weight: weight of the hard-label CE (official ``ori_loss_weight`` 1).
        kd_weight: weight of the relation terms (official ``kd_loss_weight`` 2).
        eps: the correlation's denominator guard (1e-8 as the official code).
        ignore_index, mask, reduction, normalizer: the shared row options; the intra-class
            term is spread equally over the kept rows.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0], [0.0, 0.0, 4.0]])
        >>> dist_loss(s, t, ce_weight=0.0)
        tensor(0.0303)

    References:
        Huang, You, Wang, Qian & Xu, "Knowledge distillation from a stronger teacher",
        NeurIPS 2022 (arXiv:2205.10536); official code ``hunto/image_classification_sota``,
        ``lib/models/losses/dist_kd.py``, defaults from ``configs/strategies/distill``.
    """
    beta, gamma, temperature, ce_weight, kd_weight, eps = _check_dist(
        beta, gamma, temperature, ce_weight, kd_weight, eps
    )
    r = Rows.select(
        student_logits,
        teacher_logits,
        labels,
        row_options,
        "dist",
        ce_weight=ce_weight,
        min_classes=2,
    )
    s, t = r.logits()
    rows = s.new_zeros(s.shape[0])
    if kd_weight > 0 and rows.shape[0] > 0:
        y_s = (s / temperature).softmax(-1)
        y_t = (t / temperature).softmax(-1)
        inter = 1 - pearson_correlation(y_s, y_t, dim=-1, eps=eps)
        intra = 1 - pearson_correlation(y_s, y_t, dim=0, eps=eps).mean()
        rows = kd_weight * temperature**2 * (beta * inter + gamma * intra)
    return r.finish(rows)


class DISTLoss(Objective):
    """Module form of :func:`dist_loss` (registry id ``dist``)."""

    function = staticmethod(dist_loss)
    check_options = staticmethod(_check_dist)
