r"""Math-PUMA view alignment: a KL between the next-token distributions of two views.

Zhuang et al. (2025), "Math-PUMA: Progressive Upward Multimodal Alignment to Enhance
Mathematical Reasoning" (arXiv 2408.08640, AAAI 2025), give each problem in two renderings
with the same answer tokens — a *text-rich* one (the reference, forwarded without gradient)
and a *vision-rich* one (the active view, trained) — and align the active view's next-token
distributions with the reference's at the answer positions (official code
``train/vta_trainer.py``):

.. math::

    \hat z = \frac{z - \operatorname{mean}(z)}{\operatorname{std}(z) + 10^{-6}}, \qquad
    p_\mathrm{act} = \mathrm{softmax}(\hat z_\mathrm{act}/T), \quad
    q_\mathrm{ref} = \mathrm{softmax}(\hat z_\mathrm{ref}/T),

.. math::

    \mathrm{KL}_\mathrm{mix} = \alpha\,\mathrm{KL}(p_\mathrm{act}\,\|\,q_\mathrm{ref})
        + (1-\alpha)\,\mathrm{KL}(q_\mathrm{ref}\,\|\,p_\mathrm{act}),
    \qquad
    \mathcal L = \lambda\,T^2\,\mathrm{KL}_\mathrm{mix} + (1-\lambda)\,\mathrm{CE}_\mathrm{act}.

Direction as in the paper's code: the α-weighted term has the *active* (trained) view first,
KL(p_act‖q_ref) — in this library's words that is the reverse KL (model ‖ target); the
(1−α)-weighted term is the forward KL(q_ref‖p_act). The code's names are swapped (its
``fkl`` is KL(p_act‖q_ref)); the formula here follows what it computes. Defaults α = 0.5,
λ = 0.1 (the training scripts; ``args.py`` defaults to λ = 0.5), T = 1. The code multiplies
by T² twice (T⁴ overall); here once — equal at the default T = 1. The code's ``batchmean``
divides the sum over tokens by the batch size; here ``"mean"`` averages over kept tokens and
``normalizer=batch_size`` gives the code's value.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from torch import Tensor

from divergent._validation import check_temperature
from divergent.objectives._common import Objective, Rows, check_weights, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = ["ViewAlignmentLoss", "math_puma_loss", "view_alignment_loss", "z_normalize_logits"]


def z_normalize_logits(logits: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Math-PUMA's logit z-score over the class axis,
    :math:`(z - \operatorname{mean}(z))/(\operatorname{std}(z) + \epsilon)`, with the
    unbiased standard deviation (``torch.std``'s default, as the official code).

    Example:
        >>> import torch
        >>> z_normalize_logits(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-1.0000,  0.0000,  1.0000]])
    """
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + eps)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}")
    return float(value)


def _mix_rows(r: Rows, alpha: float, tau: float, z_normalize: bool) -> Tensor:
    act, ref = r.logits()
    if z_normalize:
        act, ref = z_normalize_logits(act), z_normalize_logits(ref)
    log_p = (act / tau).log_softmax(-1)  # active view
    log_q = (ref / tau).log_softmax(-1)  # reference view
    kl_act_ref = (log_p.exp() * (log_p - log_q)).sum(-1)
    kl_ref_act = (log_q.exp() * (log_q - log_p)).sum(-1)
    return tau * tau * (alpha * kl_act_ref + (1.0 - alpha) * kl_ref_act)


@loss_keywords
def view_alignment_loss(
    active_logits: Tensor,
    reference_logits: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    z_normalize: bool = True,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""Math-PUMA's mixed KL between two views' next-token distributions,
    :math:`T^2[\alpha\,\mathrm{KL}(p_\mathrm{act}\|q_\mathrm{ref}) +
    (1-\alpha)\,\mathrm{KL}(q_\mathrm{ref}\|p_\mathrm{act})]` per token (see the module
    docstring for the z-normalisation and the direction).

    Args:
        active_logits: logits of the trained view, ``(..., V)``.
        reference_logits: logits of the reference view, same shape (detach them: the paper
            forwards the reference under ``no_grad``).
        labels: optional ``(...)`` token ids; positions equal to ``ignore_index`` are skipped
            (the code aligns only the answer tokens, labels ≠ −100).
        alpha: weight of KL(p_act‖q_ref), in [0, 1].
        temperature: T > 0.
        z_normalize: z-score both sides' logits first (the paper's code; False: raw logits).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Returns:
        Scalar (``"mean"``/``"sum"``) or per-token values (``"none"``).

    Example:
        >>> import torch
        >>> a = torch.tensor([[2.0, 0.0, -1.0]])
        >>> r = torch.tensor([[0.0, 1.0, 0.0]])
        >>> view_alignment_loss(a, r, z_normalize=False)
        tensor(0.9478)

    References:
        Zhuang, Huang, Zhang & Zeng 2025, "Math-PUMA", arXiv:2408.08640 (official code
        ``wwzhuang01/Math-PUMA``, ``train/vta_trainer.py``).
    """
    alpha = _check_fraction(alpha, "alpha")
    tau = check_temperature(temperature)
    r = Rows.select(active_logits, reference_logits, labels, row_options, "view_alignment_loss")
    return r.finish(_mix_rows(r, alpha, tau, bool(z_normalize)))


@loss_keywords
def math_puma_loss(
    active_logits: Tensor,
    reference_logits: Tensor,
    labels: Tensor,
    *,
    kl_weight: float = 0.1,
    alpha: float = 0.5,
    temperature: float = 1.0,
    z_normalize: bool = True,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""Math-PUMA's stage-2 loss :math:`\lambda\,T^2\,\mathrm{KL}_\mathrm{mix} +
    (1-\lambda)\,\mathrm{CE}(s_\mathrm{act}, y)` per token.

    Args:
        active_logits, reference_logits: ``(..., V)``, as :func:`view_alignment_loss`.
        labels: next-token ids ``(...)`` (``ignore_index`` skipped); the CE uses the active
            view's raw (not z-normalised) logits.
        kl_weight: λ in [0, 1] (0.1 in the paper's scripts).
        alpha, temperature, z_normalize: as :func:`view_alignment_loss`.
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> import torch
        >>> a = torch.tensor([[2.0, 0.0, -1.0]])
        >>> r = torch.tensor([[0.0, 1.0, 0.0]])
        >>> math_puma_loss(a, r, torch.tensor([0]), kl_weight=0.5, z_normalize=False)
        tensor(0.5588)

    References:
        Zhuang, Huang, Zhang & Zeng 2025, "Math-PUMA", arXiv:2408.08640.
    """
    lam = _check_fraction(kl_weight, "kl_weight")
    alpha = _check_fraction(alpha, "alpha")
    tau = check_temperature(temperature)
    (ce_weight,) = check_weights(ce_weight=1.0 - lam)
    r = Rows.select(
        active_logits,
        reference_logits,
        labels,
        row_options,
        "math_puma_loss",
        need_labels=True,
        ce_weight=ce_weight,
    )
    return r.finish(lam * _mix_rows(r, alpha, tau, bool(z_normalize)))


class ViewAlignmentLoss(Objective):
    """Module form of :func:`view_alignment_loss`: called as ``loss(active_logits,
    reference_logits, labels)`` (the active view in the student's place).

    Example:
        >>> import torch
        >>> loss = ViewAlignmentLoss(alpha=0.5)
        >>> a, r = torch.zeros(4, 6, requires_grad=True), torch.randn(4, 6)
        >>> loss(a, r).backward(); a.grad.shape
        torch.Size([4, 6])
    """

    function = staticmethod(view_alignment_loss)
