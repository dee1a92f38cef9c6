r"""Source-free domain adaptation: entropy minimisation guided by a class-ratio prior (SFDA).

Bateson, Kervadec, Dolz, Lombaert & Ben Ayed (MICCAI 2020 / MedIA 2022, arXiv 2108.03152)
adapt a source-trained network to an unlabeled target domain, without the source data, by

.. math::

    \mathcal{L} = \lambda_\mathrm{ent}\,\frac{1}{N}\sum_{i}\Big(-\sum_k w_k\,p_{ik}\log p_{ik}\Big)
        + \lambda_\mathrm{prior}\,\mathrm{KL}\big(\hat\tau\,\|\,\tau\big),
    \qquad \hat\tau_k = \frac{1}{N}\sum_i p_{ik},

with :math:`p_i = \mathrm{softmax}(z_i)` the model's prediction for row i (a pixel in the
paper, a sample here), :math:`\hat\tau` the predicted class proportions of the batch and
:math:`\tau` a prior on them (anatomical knowledge in the paper). The entropy alone collapses
onto few classes; the KL term keeps the proportions near the prior (the paper links the sum
to maximising the mutual information between inputs and predictions).

Direction. The official code (``mathilde-b/SFDA``, ``losses.py``, ``EntKLProp``) takes
:math:`\mathrm{KL}(\hat\tau\|\tau)`, prediction first. In this library's words (target P first,
model Q second) that is the *reverse* KL from the prior: ``direction="reverse"`` (default).
``direction="forward"`` gives :math:`\mathrm{KL}(\tau\|\hat\tau)`. The code adds 1e-10 inside
the logs; here a prior of 0 on a class the model predicts gives +∞ for the reverse direction
(the true value), so give such a class a small positive prior instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from divergent._validation import (
    check_choice,
    check_float_tensor,
    check_mask,
    check_positive_scalar,
    check_tensor,
    compute_dtype,
)
from divergent.functional import kl, reverse_kl

__all__ = [
    "DIRECTIONS",
    "PriorKLEntropyLoss",
    "PriorKLEntropyTerms",
    "class_proportions",
    "prior_kl_entropy_loss",
    "prior_kl_entropy_terms",
]

DIRECTIONS: tuple[str, ...] = ("reverse", "forward")


class PriorKLEntropyTerms(NamedTuple):
    """The SFDA loss and its parts (0-d tensors, nats) and the batch's predicted proportions.

    ``total = entropy_weight · entropy + prior_weight · prior_kl``.
    """

    total: Tensor
    entropy: Tensor
    prior_kl: Tensor
    proportions: Tensor


def _rows(logits: Tensor, mask: Tensor | None) -> Tensor:
    n_classes = logits.shape[-1]
    keep = check_mask(mask, logits.shape[:-1], logits.device)
    rows = logits.reshape(-1, n_classes)
    if keep is not None:
        rows = rows[keep.reshape(-1)]
    if rows.shape[0] == 0:
        raise ValueError(
            "no row is kept (`mask` is all False or the batch is empty); the predicted class "
            "proportions of an empty batch are undefined"
        )
    return rows


def class_proportions(logits: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""Predicted class proportions :math:`\hat\tau_k = \frac1N\sum_i \mathrm{softmax}(z_i)_k`.

    Args:
        logits: ``(..., C)`` model logits, class axis last.
        mask: optional bool tensor of the leading shape; only True rows count.

    Returns:
        A ``(C,)`` tensor summing to 1 (float32, or float64 for float64 input).

    Example:
        >>> class_proportions(torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        tensor([0.3731, 0.6269])
    """
    check_tensor(logits, "logits")
    rows = _rows(logits, mask)
    dtype = compute_dtype(rows)
    return torch.softmax(rows.to(dtype), dim=-1).mean(0)


def _check_prior(prior: Any, n_classes: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    prior = check_float_tensor(prior, "prior", dims=1)
    if prior.shape[0] != n_classes:
        raise ValueError(
            f"`prior` must hold one proportion per class ({n_classes}), got shape "
            f"{tuple(prior.shape)}"
        )
    if bool(torch.isnan(prior).any()) or bool((prior < 0).any()):
        raise ValueError(f"`prior` must be non-negative proportions, got {prior.tolist()}")
    total = float(prior.double().sum())
    if abs(total - 1.0) > 1e-5:
        raise ValueError(
            f"`prior` must sum to 1 (class proportions), got sum {total:.6g}; normalise it "
            "yourself if that is what you mean"
        )
    return prior.to(device=device, dtype=dtype)


def prior_kl_entropy_terms(
    logits: Tensor,
    prior: Tensor,
    *,
    entropy_weight: float = 1.0,
    prior_weight: float = 1.0,
    class_weights: Tensor | None = None,
    direction: str = "reverse",
    mask: Tensor | None = None,
) -> PriorKLEntropyTerms:
    r"""The SFDA loss (entropy + class-ratio prior KL) and its parts; see the module docstring.

    Args:
        logits: ``(..., C)`` logits of the model being adapted, on unlabeled target rows.
        prior: ``(C,)`` class proportions τ (non-negative, summing to 1).
        entropy_weight: λ_ent ≥ 0 (the code's default 1).
        prior_weight: λ_prior ≥ 0 (the code's default 1).
        class_weights: optional ``(C,)`` non-negative weights w_k of the entropy terms (the
            code uses 0.1 for background, 0.9 for foreground); default all 1.
        direction: ``"reverse"`` for KL(τ̂‖τ) (the official code's) or ``"forward"`` for
            KL(τ‖τ̂).
        mask: optional bool tensor of the leading shape; only True rows count.

    Returns:
        :class:`PriorKLEntropyTerms` ``(total, entropy, prior_kl, proportions)``.

    Example:
        >>> z = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
        >>> t = prior_kl_entropy_terms(z, torch.tensor([0.5, 0.5]))
        >>> [round(float(v), 4) for v in (t.total, t.entropy, t.prior_kl)]
        [0.4624, 0.3795, 0.0829]

    References:
        Bateson et al., Source-Free Domain Adaptation for Image Segmentation, MedIA 2022
        (arXiv 2108.03152); code ``mathilde-b/SFDA``.
    """
    check_tensor(logits, "logits")
    entropy_weight = check_positive_scalar(entropy_weight, "entropy_weight", allow_zero=True)
    prior_weight = check_positive_scalar(prior_weight, "prior_weight", allow_zero=True)
    meaning = " ('reverse' = KL(predicted ‖ prior), as the official code)"
    check_choice(direction, "direction", DIRECTIONS, meaning)
    rows = _rows(logits, mask)
    dtype = compute_dtype(rows)
    n_classes = rows.shape[-1]
    tau = _check_prior(prior, n_classes, dtype, rows.device)
    log_p = torch.log_softmax(rows.to(dtype), dim=-1)
    p = log_p.exp()
    if class_weights is None:
        weights = torch.ones(n_classes, dtype=dtype, device=rows.device)
    else:
        weights = check_float_tensor(class_weights, "class_weights", dims=1)
        if weights.shape[0] != n_classes or bool((weights < 0).any()):
            raise ValueError(
                f"`class_weights` must be {n_classes} non-negative numbers, got {weights.tolist()}"
            )
        weights = weights.to(device=rows.device, dtype=dtype)
    # p log p → 0 as p → 0; log_softmax is finite for finite logits, so 0·finite = 0
    entropy = -(weights * p * log_p).sum(-1).mean()
    proportions = p.mean(0)
    pair = (tau.unsqueeze(0), proportions.unsqueeze(0))  # P = prior (target), Q = prediction
    divergence = reverse_kl if direction == "reverse" else kl
    if bool(torch.isnan(proportions).any()):
        prior_kl = proportions.sum() * float("nan")  # NaN in → NaN out (keeps the graph)
    else:
        prior_kl = divergence(*pair, inputs="probs", engine="reference")
    total = entropy_weight * entropy + prior_weight * prior_kl
    return PriorKLEntropyTerms(total, entropy, prior_kl, proportions)


def prior_kl_entropy_loss(logits: Tensor, prior: Tensor, **options: Any) -> Tensor:
    """The SFDA loss as a 0-d tensor; options as in :func:`prior_kl_entropy_terms`.

    Example:
        >>> z = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
        >>> prior_kl_entropy_loss(z, torch.tensor([0.5, 0.5]), entropy_weight=0.0)
        tensor(0.0829)
    """
    return prior_kl_entropy_terms(logits, prior, **options).total


class PriorKLEntropyLoss(nn.Module):
    """Module form of :func:`prior_kl_entropy_loss` holding the prior (a buffer).

    Example:
        >>> loss = PriorKLEntropyLoss(torch.full((3,), 1 / 3))
        >>> loss(torch.zeros(4, 3))  # uniform predictions: entropy log 3, proportions = prior
        tensor(1.0986)
    """

    def __init__(
        self,
        prior: Tensor,
        *,
        entropy_weight: float = 1.0,
        prior_weight: float = 1.0,
        class_weights: Tensor | None = None,
        direction: str = "reverse",
    ) -> None:
        super().__init__()
        prior = check_float_tensor(prior, "prior", dims=1)
        _check_prior(prior, prior.shape[0], prior.dtype, prior.device)
        self.register_buffer("prior", prior.detach().clone())
        self.options: dict[str, Any] = {
            "entropy_weight": entropy_weight,
            "prior_weight": prior_weight,
            "class_weights": class_weights,
            "direction": direction,
        }
        prior_kl_entropy_terms(torch.zeros(1, prior.shape[0]), self.prior, **self.options)

    def forward(self, logits: Tensor, mask: Tensor | None = None) -> Tensor:
        return prior_kl_entropy_terms(logits, self.prior, mask=mask, **self.options).total

    def extra_repr(self) -> str:
        return f"n_classes={self.prior.shape[0]}, " + ", ".join(
            f"{k}={v}" for k, v in self.options.items() if k != "class_weights"
        )
