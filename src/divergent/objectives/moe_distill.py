r"""LLaVA-MoD: mimic distillation and preference distillation into a sparse MoE student.

Shu et al. (2025), "LLaVA-MoD: Making LLaVA Tiny via MoE Knowledge Distillation" (arXiv
2408.15881, ICLR 2025; official code ``shufangxun/LLaVA-MoD``) distil a dense teacher into a
mixture-of-experts student in two stages:

* **Mimic distillation** (``llavamod/train/align_trainer.py``): the soft-label cross-entropy
  of the student under the teacher's next-token distribution on the response tokens, plus
  the supervised CE and the router's load-balancing loss (coefficient 0.01):
  :func:`mimic_distillation_loss`, :func:`load_balancing_loss`.
* **Preference distillation** (``llavamod/train/dpo_trainer.py``): DPO with the *teacher as
  the reference model*, so the student is rewarded for preferring the chosen response more
  than the teacher does: :func:`preference_distillation_loss` (``"sigmoid"``: DPO;
  ``"kto_pair"``: the released script's default), on sequence log-probabilities from
  :func:`sequence_log_probs`.

The DPO sigmoid term is :func:`divergent.objectives.preference.f_dpo_loss` with the reverse
KL (plain DPO) and the teacher's log-probabilities as the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from divergent._validation import (
    as_integer,
    check_choice,
    check_float_tensor,
    check_ignore_index,
    check_mask,
    check_positive_scalar,
    check_reduction,
    check_temperature,
    compute_dtype,
    reduce_rows,
)
from divergent.objectives._common import Objective, Rows, check_ids, check_weights, loss_keywords
from divergent.objectives.preference import f_dpo_loss

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = [
    "PREFERENCE_LOSS_TYPES",
    "MimicDistillationLoss",
    "load_balancing_loss",
    "mimic_distillation_loss",
    "preference_distillation_loss",
    "sequence_log_probs",
]

PREFERENCE_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "kto_pair")


@loss_keywords
def mimic_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    align_weight: float = 1.0,
    ce_weight: float = 1.0,
    temperature: float = 1.0,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""LLaVA-MoD's mimic-distillation loss per token,

    .. math::

        \ell = w_\mathrm{align}\Big(-\sum_v p_T(v)\log p_S(v)\Big) + w_\mathrm{ce}\,
            \mathrm{CE}(s, y),

    the soft-label cross-entropy (:math:`= \mathrm{KL}(p_T\|p_S) + H(p_T)`: the forward-KL
    gradient, shifted by the teacher's entropy, as the official ``compute_align_loss``) plus
    the supervised CE. Teacher classes with probability 0 contribute 0 (the code masks
    infinite log-probabilities). Add the router term :func:`load_balancing_loss` (weight
    0.01 in the paper) yourself: it lives on the router logits, not on these.

    Args:
        student_logits, teacher_logits: ``(..., V)`` (detach the teacher).
        labels: next-token ids ``(...)``; ``ignore_index`` rows are skipped (the code aligns
            response tokens only); needed when ``ce_weight > 0``.
        align_weight, ce_weight: weights ≥ 0.
        temperature: T > 0 dividing both sides' logits in the alignment term (1 in the paper).
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> s = torch.tensor([[1.0, 0.0, -1.0]])
        >>> t = torch.tensor([[2.0, 0.0, 0.0]])
        >>> mimic_distillation_loss(s, t, torch.tensor([0]))
        tensor(1.1347)

    References:
        Shu et al. 2025, "LLaVA-MoD", arXiv:2408.15881 (``align_trainer.py``).
    """
    align_w, ce_w = check_weights(align_weight=align_weight, ce_weight=ce_weight)
    tau = check_temperature(temperature)
    r = Rows.select(
        student_logits,
        teacher_logits,
        labels,
        row_options,
        "mimic_distillation_loss",
        ce_weight=ce_w,
    )
    s, t = r.logits()
    log_q = (s / tau).log_softmax(-1)
    p = (t / tau).softmax(-1)
    terms = torch.where(p > 0, p * log_q, torch.zeros_like(p))
    return r.finish(-align_w * terms.sum(-1))


def load_balancing_loss(router_logits: Tensor, top_k: int, *, mask: Tensor | None = None) -> Tensor:
    r"""Switch-Transformer load-balancing loss of a top-k router,

    .. math::

        \mathcal L_\mathrm{aux} = E\sum_{e=1}^{E} f_e\,P_e, \qquad
        f_e = \frac{1}{kN}\sum_{n} \mathbb 1[e \in \mathrm{top}_k(r_n)], \quad
        P_e = \frac1N\sum_n \mathrm{softmax}(r_n)_e,

    over the N tokens kept by ``mask``; 1 for a perfectly balanced router, up to E when
    every token goes to the same experts with probability 1. (Hugging Face's Mixtral
    ``load_balancing_loss_func`` is k times this.)

    Args:
        router_logits: ``(..., E)``.
        top_k: experts per token, ``1 <= top_k <= E``.
        mask: bool of the leading shape, True = count the token.

    Returns:
        A scalar (0 with zero gradient when no token is kept).

    Example:
        >>> load_balancing_loss(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), 1)  # balanced
        tensor(1.)
        >>> load_balancing_loss(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), 1)  # 2 · 0.9933
        tensor(1.9866)

    References:
        Fedus, Zoph & Shazeer 2022, "Switch Transformers", arXiv:2101.03961 (Eq. 4);
        LLaVA-MoD uses it with coefficient 0.01.
    """
    r = check_float_tensor(router_logits, "router_logits", min_dim=1)
    n_experts = r.shape[-1]
    given, top_k = top_k, as_integer(top_k)
    if top_k is None or not 1 <= top_k <= n_experts:
        raise ValueError(f"`top_k` must be an int in 1..{n_experts} (the experts), got {given!r}")
    keep = check_mask(mask, r.shape[:-1], r.device)
    flat = r.reshape(-1, n_experts)
    if keep is not None:
        flat = flat[keep.reshape(-1)]
    if flat.shape[0] == 0:
        return r.sum() * 0.0
    dtype = compute_dtype(r)
    probs = flat.to(dtype).softmax(-1)
    chosen = torch.zeros_like(probs).scatter(-1, probs.topk(top_k, dim=-1).indices, 1.0)
    fraction = chosen.mean(0) / top_k
    return n_experts * (fraction * probs.mean(0)).sum()


def sequence_log_probs(logits: Tensor, labels: Tensor, *, ignore_index: int = -100) -> Tensor:
    r"""Sequence log-probabilities :math:`\log\pi(y) = \sum_t \log\mathrm{softmax}(z_t)_{y_t}`
    over the positions whose label is not ``ignore_index``.

    Args:
        logits: ``(B, L, V)`` aligned with ``labels`` (position t predicts ``labels[:, t]``).
        labels: int64 ``(B, L)``.

    Returns:
        ``(B,)`` float32 (float64 for float64 logits), differentiable.

    Example:
        >>> z = torch.zeros(1, 2, 4)
        >>> sequence_log_probs(z, torch.tensor([[1, -100]]))  # log(1/4)
        tensor([-1.3863])
    """
    z = check_float_tensor(logits, "logits", dims=3)
    check_ids(labels, "labels", z.shape[:2])
    ignore_index = check_ignore_index(ignore_index, allow_none=False)
    valid = labels != ignore_index
    if bool(((labels < 0) | (labels >= z.shape[-1]))[valid].any()):
        raise ValueError(
            f"`labels` has a value outside 0..{z.shape[-1] - 1} (and not ignore_index="
            f"{ignore_index})"
        )
    dtype = compute_dtype(z)
    log_p = z.to(dtype).log_softmax(-1)
    picked = log_p.gather(-1, labels.clamp(0, z.shape[-1] - 1)[..., None])[..., 0]
    return (picked * valid).sum(-1)


def preference_distillation_loss(
    student_chosen_logps: Tensor,
    student_rejected_logps: Tensor,
    teacher_chosen_logps: Tensor,
    teacher_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    reduction: str = "mean",
) -> Tensor:
    r"""LLaVA-MoD's preference distillation: DPO with the teacher as the reference policy.

    With the log-ratios :math:`\rho_w = \log\pi_S(y_w) - \log\pi_T(y_w)` and
    :math:`\rho_l = \log\pi_S(y_l) - \log\pi_T(y_l)`:

    * ``"sigmoid"`` (DPO): :math:`\ell = -\log\sigma\big(\beta(\rho_w - \rho_l)\big)`;
    * ``"kto_pair"`` (the released script's default; TRL's former ``kto_pair``): with the
      batch anchors :math:`\kappa_w = \max(0, \overline{\rho_w})`,
      :math:`\kappa_l = \max(0, \overline{\rho_l})` (means over the batch),
      :math:`\ell = \tfrac12\big[(1 - \sigma(\beta(\rho_w - \kappa_l))) +
      (1 - \sigma(\beta(\kappa_w - \rho_l)))\big]` per pair (TRL concatenates the two halves
      and averages the 2B values: the same mean).

    Args:
        student_chosen_logps, student_rejected_logps: ``(B,)`` sequence log-probabilities
            under the student (differentiable, <= 0), e.g. from :func:`sequence_log_probs`.
        teacher_chosen_logps, teacher_rejected_logps: ``(B,)`` under the teacher (reference).
        beta: β > 0 (0.1 in the paper's trainer).
        loss_type: one of :data:`PREFERENCE_LOSS_TYPES`.
        reduction: ``"none"`` (``(B,)``), ``"sum"`` or ``"mean"``.

    Example:
        >>> s_w, s_l = torch.tensor([-3.0]), torch.tensor([-5.0])
        >>> t_w, t_l = torch.tensor([-4.0]), torch.tensor([-4.0])
        >>> preference_distillation_loss(s_w, s_l, t_w, t_l, beta=0.5)  # -log σ(1)
        tensor(0.3133)

    References:
        Shu et al. 2025, "LLaVA-MoD", arXiv:2408.15881 (``dpo_trainer.py``); Rafailov et al.
        2023, "Direct Preference Optimization", arXiv:2305.18290.
    """
    b = check_positive_scalar(beta, "beta")
    check_reduction(reduction)
    check_choice(loss_type, "loss_type", PREFERENCE_LOSS_TYPES)
    names = (
        "student_chosen_logps",
        "student_rejected_logps",
        "teacher_chosen_logps",
        "teacher_rejected_logps",
    )
    values = (
        student_chosen_logps,
        student_rejected_logps,
        teacher_chosen_logps,
        teacher_rejected_logps,
    )
    for name, value in zip(names, values, strict=True):
        check_float_tensor(value, name, dims=1)
        if value.shape != student_chosen_logps.shape:
            raise ValueError(
                f"`{name}` must have the shape {tuple(student_chosen_logps.shape)} of "
                f"`student_chosen_logps`, got {tuple(value.shape)}"
            )
        if value.numel() and bool((value.detach() > 1e-6).any()):
            raise ValueError(
                f"`{name}` holds a positive log-probability (max {float(value.max()):.3g}); "
                "pass sequence log-probabilities log π(y) <= 0"
            )
    dtype = compute_dtype(*values)
    s_w, s_l, t_w, t_l = (v.to(dtype) for v in values)
    rho_w, rho_l = s_w - t_w, s_l - t_l
    if loss_type == "sigmoid":
        # −log σ(β(ρ_w − ρ_l)): f-DPO with the reverse KL is DPO
        rows = f_dpo_loss(s_w, s_l, t_w, t_l, divergence="reverse_kl", beta=b, reduction="none")
    else:
        kappa_w, kappa_l = rho_w.mean().clamp(min=0), rho_l.mean().clamp(min=0)
        rows = 0.5 * (
            (1 - torch.sigmoid(b * (rho_w - kappa_l))) + (1 - torch.sigmoid(b * (kappa_w - rho_l)))
        )
    if reduction == "none":
        return rows
    return reduce_rows(rows, reduction, count=rows.shape[0], normalizer=None)


class MimicDistillationLoss(Objective):
    """Module form of :func:`mimic_distillation_loss` (soft-label CE to the teacher + CE).

    Example:
        >>> loss = MimicDistillationLoss(ce_weight=0.0)
        >>> s, t = torch.zeros(4, 6, requires_grad=True), torch.randn(4, 6)
        >>> loss(s, t).backward(); s.grad.shape
        torch.Size([4, 6])
    """

    function = staticmethod(mimic_distillation_loss)

    @property
    def needs_labels(self) -> bool:
        return float(self.options.get("ce_weight", 1.0)) > 0
