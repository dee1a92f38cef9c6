r"""KL-regularised distributionally robust instance weights (DONE, robust adversarial training).

Sow, Lin, Wang & Liang (ICLR 2024, "Doubly Robust Instance-Reweighted Adversarial Training")
weight the adversarial losses :math:`\ell_i` of a batch by the solution of a KL-regularised
distributionally robust problem over the simplex,

.. math::

    \max_{w \in \Delta_n}\; \sum_i w_i\,\ell_i - r\,\mathrm{KL}(w \,\|\, u),
    \qquad u = \tfrac1n\mathbf 1,

whose maximiser and value have the closed forms (Donsker–Varadhan)

.. math::

    w_i^\star = \frac{e^{\ell_i/r}}{\sum_j e^{\ell_j/r}} = \mathrm{softmax}(\ell/r)_i,
    \qquad \max = r\,\log\Big(\frac1n\sum_i e^{\ell_i/r}\Big).

``r`` (called ``temperature`` here) interpolates between plain averaging (:math:`r\to\infty`,
standard adversarial training) and the worst example (:math:`r\to0`). The gradient of the
value with respect to the losses is :math:`w^\star`, so training on
:func:`kl_dro_objective` and training on :func:`kl_dro_loss` (``Σ w_i ℓ_i`` with the weights
held fixed) take the same step. The same weights are tilted ERM's and KL-DRO's.

The paper's algorithm (compositional implicit differentiation through the attack) is not
reproduced here; these are the instance weights it converges to for a given batch of losses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from divergent._validation import check_float_tensor, check_mask, check_positive_scalar

__all__ = [
    "KLDROLoss",
    "dro_cross_entropy",
    "kl_dro_loss",
    "kl_dro_objective",
    "kl_dro_weights",
]


def _kept(losses: Any, mask: Tensor | None) -> Tensor:
    losses = check_float_tensor(losses, "losses", dims=1)
    keep = check_mask(mask, losses.shape, losses.device)
    rows = losses if keep is None else losses[keep]
    if rows.numel() == 0:
        raise ValueError("no loss is kept (`losses` is empty or `mask` is all False)")
    if bool(torch.isinf(rows).any()):
        raise ValueError(
            "`losses` contains ±inf; the DRO weights of an infinite loss are undefined"
        )
    return rows


def _temperature(temperature: Any) -> float:
    return check_positive_scalar(  # type: ignore[return-value]
        temperature, "temperature", what="r of the KL regulariser; large r = uniform weights"
    )


def kl_dro_weights(losses: Tensor, temperature: float, *, mask: Tensor | None = None) -> Tensor:
    r"""The maximising instance weights :math:`w^\star = \mathrm{softmax}(\ell / r)` (detached).

    Args:
        losses: ``(n,)`` per-example losses.
        temperature: r > 0.
        mask: optional bool ``(n,)``; masked examples get weight 0.

    Returns:
        ``(n,)`` weights, non-negative, summing to 1 over the kept examples; no gradient.

    Example:
        >>> kl_dro_weights(torch.tensor([0.0, 1.0, 2.0]), 1.0)
        tensor([0.0900, 0.2447, 0.6652])
    """
    rows = _kept(losses, mask)
    r = _temperature(temperature)
    weights = torch.softmax(rows.detach() / r, dim=0)
    if mask is None:
        return weights
    full = torch.zeros_like(losses, dtype=weights.dtype)
    return full.masked_scatter(mask.to(losses.device), weights)


def kl_dro_loss(losses: Tensor, temperature: float, *, mask: Tensor | None = None) -> Tensor:
    r""":math:`\sum_i w_i^\star \ell_i` with the weights :math:`w^\star = \mathrm{softmax}(\ell/r)`
    held fixed (gradients flow through the losses only).

    Same gradient as :func:`kl_dro_objective`; its value is the weighted loss, not the
    regularised maximum.

    Example:
        >>> losses = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
        >>> kl_dro_loss(losses, 1.0).backward(); losses.grad
        tensor([0.0900, 0.2447, 0.6652])
    """
    weights = kl_dro_weights(losses, temperature, mask=mask)
    losses = losses if mask is None else torch.where(mask.to(losses.device), losses, 0.0)
    return (weights.to(losses.dtype) * losses).sum()


def kl_dro_objective(losses: Tensor, temperature: float, *, mask: Tensor | None = None) -> Tensor:
    r"""The value of the KL-regularised DRO problem, :math:`r\log\frac1n\sum_i e^{\ell_i/r}`.

    Between the mean (r → ∞) and the maximum (r → 0) of the kept losses.

    Example:
        >>> round(float(kl_dro_objective(torch.tensor([0.0, 1.0, 2.0]), 1.0)), 4)
        1.309
    """
    rows = _kept(losses, mask)
    r = _temperature(temperature)
    # logsumexp is exact for large ℓ/r (no overflow)
    return r * (torch.logsumexp(rows / r, dim=0) - math.log(rows.numel()))


def dro_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    temperature: float,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Cross-entropy of a batch reweighted by the KL-DRO weights :math:`\mathrm{softmax}(\ell/r)`.

    Args:
        logits: ``(n, C)`` logits (on adversarial inputs in DONE).
        labels: ``(n,)`` int64 labels in ``[0, C)``.
        temperature: r > 0.
        mask: optional bool ``(n,)``.

    Returns:
        :func:`kl_dro_loss` of the per-example cross-entropies (0-d).

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0]]); y = torch.tensor([0, 0])
        >>> round(float(dro_cross_entropy(z, y, temperature=1e6)), 4)  # ≈ plain mean CE
        1.1269
    """
    logits = check_float_tensor(logits, "logits", dims=2)
    if (
        not isinstance(labels, Tensor)
        or labels.dtype != torch.int64
        or labels.shape != logits.shape[:1]
    ):
        raise ValueError(
            f"`labels` must be an int64 tensor of shape ({logits.shape[0]},), got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} "
            f"{tuple(getattr(labels, 'shape', ()))}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"`labels` must lie in [0, {logits.shape[1]}), got min {int(labels.min())} and "
            f"max {int(labels.max())}"
        )
    per_example = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return kl_dro_loss(per_example, temperature, mask=mask)


class KLDROLoss(nn.Module):
    """Module form of :func:`dro_cross_entropy` with a fixed temperature r.

    Example:
        >>> KLDROLoss(temperature=1.0)
        KLDROLoss(temperature=1.0)
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = _temperature(temperature)

    def forward(self, logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
        return dro_cross_entropy(logits, labels, self.temperature, mask=mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
