r"""SinKD: batch-wise Sinkhorn distillation on the transport engine's Sinkhorn.

Cui, Qu, Wang et al. (COLING 2024 / TNNLS 2024) argue that KL, reverse KL and JS each fail
in a mode-related way, and add an entropic optimal-transport distance between the student's
and the teacher's predictions computed *across the batch*: with
:math:`p^s_i = \mathrm{softmax}(s_i/T)`, :math:`p^t_j = \mathrm{softmax}(t_j/T)` and the
B × B cost :math:`C_{ij} = \|p^s_i - p^t_j\|_1`, the entropic plan :math:`\Pi_\varepsilon`
with uniform marginals gives

.. math::

    W_\varepsilon = B\,\langle \Pi_\varepsilon, C\rangle,\qquad
    \mathcal L = w_\mathrm{ce}\,\mathrm{CE}(s, y)
        + w_\mathrm{kd}\,\mathrm{KL}(p^t\|p^s) + w_\mathrm{sink}\,W_\varepsilon .

:math:`\Pi_\varepsilon` sums to 1 (marginals 1/B), so :math:`B\langle\Pi_\varepsilon,C\rangle`
is the official code's :math:`\sum_{ij} P_{ij}C_{ij}` with its row/column-normalised P (each
sample carrying mass 1). The plan comes from :func:`divergent.transport.sinkhorn` (log-domain,
run to convergence, exact implicit gradients); the official code unrolls 20 plain
normalisations, which stops short of convergence at ε = 0.1. Its "KD" term is the soft
cross-entropy :math:`-\sum p^t\log p^s` without T²; the KL here differs from it by the
teacher's entropy, a constant for the student (same gradients). The Sinkhorn term is a batch
term: with ``reduction="none"`` it is added equally to every kept row (so a NaN in one kept
row makes every row NaN).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import as_integer, check_positive_scalar
from divergent.functional import divergence as _divergence
from divergent.objectives._common import Objective, Rows, check_weights, loss_keywords
from divergent.transport import sinkhorn

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["SinKDLoss", "batch_sinkhorn_distance", "sinkd_loss"]


def batch_sinkhorn_distance(
    student_probs: Tensor,
    teacher_probs: Tensor,
    *,
    eps: float = 0.1,
    max_iter: int = 1000,
    tol: float | None = 1e-4,
) -> Tensor:
    r""":math:`B\,\langle\Pi_\varepsilon, C\rangle` between the rows of two ``(B, C)``
    probability matrices, :math:`C_{ij} = \|p^s_i - p^t_j\|_1`, uniform marginals.

    Example:
        >>> import torch
        >>> p = torch.softmax(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), -1)
        >>> round(float(batch_sinkhorn_distance(p, p)), 4)  # pairs match: ≈ 0
        0.0
        >>> round(float(batch_sinkhorn_distance(p, p.flip(0))), 4)  # swapped rows: still ≈ 0
        0.0
    """
    cost = (student_probs[:, None, :] - teacher_probs[None, :, :]).abs().sum(-1)
    n = cost.shape[0]
    return n * sinkhorn(None, None, cost, eps, max_iter=max_iter, tol=tol)


def _check_sinkd(
    temperature: Any,
    eps: Any,
    ce_weight: Any,
    kd_weight: Any,
    sinkhorn_weight: Any,
    max_iter: Any,
    tol: Any = None,
    ignore_index: Any = None,
) -> tuple[float, float, float, float, float]:
    """Checked ``(temperature, eps, ce_weight, kd_weight, sinkhorn_weight)``; ``max_iter`` is
    checked too (``tol`` by the solver, ``ignore_index`` with the rows)."""
    temperature = check_positive_scalar(temperature, "temperature")
    eps = check_positive_scalar(eps, "eps")
    weights = check_weights(
        ce_weight=ce_weight, kd_weight=kd_weight, sinkhorn_weight=sinkhorn_weight
    )
    if (iterations := as_integer(max_iter)) is None or iterations < 1:
        raise ValueError(f"`max_iter` must be a positive integer, got {max_iter!r}")
    return (temperature, eps, *weights)


@loss_keywords
def sinkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 2.0,
    eps: float = 0.1,
    ce_weight: float = 0.2,
    kd_weight: float = 0.8,
    sinkhorn_weight: float = 0.002,
    max_iter: int = 1000,
    tol: float | None = 1e-4,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""SinKD: :math:`w_\mathrm{ce}\mathrm{CE} + w_\mathrm{kd}\mathrm{KL}(p^t\|p^s) +
    w_\mathrm{sink}\,B\langle\Pi_\varepsilon, C\rangle` (module docstring).

    Args:
        student_logits: shape ``(..., C)``; all kept rows form the batch of the OT problem.
        teacher_logits: same shape.
        labels: int64 of the leading shape; needed when ``ce_weight > 0``.
        temperature: T of both softmaxes (the official code fixes 2 for the Sinkhorn term and
            defaults to 2 for the KD term).
        eps: entropic regularisation ε in the units of the L1 cost (official 0.1).
        ce_weight: weight of the hard-label CE (official 1 − α = 0.2).
        kd_weight: weight of KL(p^t‖p^s) at temperature T, no T² (official α = 0.8).
        sinkhorn_weight: weight of :math:`B\langle\Pi, C\rangle` (official β = 1 times the
            hard-coded 0.0008·20/8 = 0.002 of ``loss.py``; earlier versions use 0.001).
        max_iter: Sinkhorn iteration cap (see :func:`divergent.transport.sinkhorn`).
        tol: stop when the plan's marginal L1 error is at most ``tol`` (1e-4: ample for a
            training loss and reachable in float32; None: the transport default).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0], [0.0, 0.0, 4.0]])
        >>> sinkd_loss(s, t, torch.tensor([0, 1, 2]))
        tensor(0.1072)

    References:
        Cui, Qu, Wang et al., "SinKD: Sinkhorn distance minimization for knowledge
        distillation", COLING 2024 / IEEE TNNLS 2024 (arXiv:2402.17110); official code
        ``2018cx/SinKD``, ``loss.py`` and ``main_glue_distill.py``.
    """
    temperature, eps, ce_weight, kd_weight, sinkhorn_weight = _check_sinkd(
        temperature, eps, ce_weight, kd_weight, sinkhorn_weight, max_iter
    )
    r = Rows.select(
        student_logits, teacher_logits, labels, row_options, "sinkd", ce_weight=ce_weight
    )
    s, t = r.logits()
    rows = s.new_zeros(s.shape[0])
    if kd_weight > 0:
        rows = kd_weight * _divergence("kl", t, s, temperature=temperature, reduction="none")
    if sinkhorn_weight > 0 and s.shape[0] > 0:
        p_s, p_t = (s / temperature).softmax(-1), (t / temperature).softmax(-1)
        if bool(torch.isnan(p_s).any() | torch.isnan(p_t).any()):
            # a NaN row makes the batch term (and so every row) NaN, not a solver error
            batch_term = p_s.new_tensor(math.nan)
        else:
            batch_term = batch_sinkhorn_distance(p_s, p_t, eps=eps, max_iter=max_iter, tol=tol)
        rows = rows + sinkhorn_weight * batch_term
    return r.finish(rows)


class SinKDLoss(Objective):
    """Module form of :func:`sinkd_loss` (registry id ``sinkd``)."""

    function = staticmethod(sinkd_loss)
    check_options = staticmethod(_check_sinkd)
