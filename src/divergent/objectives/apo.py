r"""APO: GRPO with a difficulty-adaptive KL weight (DADS) and a long-wrong-answer penalty (STCR).

Asymmetric Policy Optimization (Hong et al. 2025) starts from GRPO with the k3 KL *in the loss*
(group-normalised advantages, n = 8 samples per prompt, ``init_kl_coef = 1e-3``) and splits the
responses of a group into correct (positive) and incorrect (negative) ones.

**DADS** (difficulty-adaptive divergence shaping, :func:`dads_kl_weights`). The prompt
difficulty is :math:`d = 1 - \#\mathrm{correct}/n` (:func:`prompt_difficulty`); a
positive-advantage sample's KL term is weighted by

.. math::

    w(d) = 1 - e^{-e\,(1 - d)}\quad (0 < d < 1), \qquad w = 1 \text{ if } d \in \{0, 1\},

and every other sample keeps :math:`w = 1`. On hard prompts (:math:`d \to 1`) the KL on the
rare successes vanishes (more freedom to move towards them); on easy ones
:math:`w \approx 1 - e^{-e} \approx 0.934`.

**STCR** (suboptimal trajectory complexity regularisation, :func:`stcr_advantage_scale`). In a
group with at least one correct response, an incorrect response longer than the mean correct
length, :math:`\Delta_i = L_i - \overline{L}_\mathrm{correct} > 0`, has its (negative)
advantage multiplied by

.. math:: s_i = 1 + (1 - b^{-\Delta_i}) \in [1, 2), \qquad b = 1.00001

(the official code's base; with it, :math:`s_i \approx 1.01` even at Δ = 1000 tokens, so the
effect is small unless responses are long; ``base`` is a parameter).

**Loss** (:func:`apo_loss`), per response i with tokens t, ratio
:math:`\rho_{i,t} = \exp(\log\pi_\theta - \log\pi_\mathrm{old})`, scaled advantage
:math:`\hat A_i = s_i A_i` and :math:`k_3` to the reference:

.. math::

    \ell_i = \frac1{|o_i|}\sum_t -\min\big(\rho_{i,t}\hat A_i,
    \operatorname{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_i\big)
    + \beta\, w_i\, \frac1{|o_i|}\sum_t k_3(\log\pi_\theta, \log\pi_\mathrm{ref})_{i,t}.

As a loss, k3's gradient is the forward-KL gradient :math:`\nabla\mathrm{KL}(\pi_\mathrm{ref}\|
\pi_\theta)` on on-policy samples (:mod:`divergent.rl.policy_kl`).

References:
    Hong, Guo, Xia, Wang, Zhang, Jin, Zhao, "APO: Enhancing Reasoning Ability of MLLMs via
    Asymmetric Policy Optimization", arXiv 2506.21655 (2025); code
    github.com/Indolent-Kawhi/View-R1 (``ppo_actor.py`` ``calculate_kl_weight``,
    ``experience_maker.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from divergent._validation import check_bool, check_positive_scalar, compute_dtype
from divergent.objectives._sequence_rows import (
    check_group_tensor,
    check_reduction_options,
    check_token_log_probs,
    finish_sequences,
    sequence_mean,
    zero_padding,
)
from divergent.rl.policy_kl import policy_kl

__all__ = [
    "STCR_BASE",
    "apo_loss",
    "dads_kl_weights",
    "prompt_difficulty",
    "stcr_advantage_scale",
]

STCR_BASE = 1.00001  # the official code's base of b^{-Δ}


def _check_correct(correct: Tensor, name: str = "correct") -> Tensor:
    if not isinstance(correct, Tensor) or correct.dtype != torch.bool:
        got = correct.dtype if isinstance(correct, Tensor) else type(correct).__name__
        raise ValueError(
            f"`{name}` must be a bool tensor (prompts, group) marking correct responses, got {got}"
        )
    if correct.dim() < 1 or correct.shape[-1] == 0:
        raise ValueError(
            f"`{name}` must have a non-empty group axis (last), got shape {tuple(correct.shape)}"
        )
    return correct


def prompt_difficulty(correct: Tensor) -> Tensor:
    r"""Prompt difficulty :math:`d = 1 - \#\mathrm{correct}/n` over each group of n responses.

    Args:
        correct: bool ``(..., n)``, True for a correct response (APO: ``trunc(reward) >= 1``).

    Returns:
        float32 ``(...,)`` in [0, 1].

    Example:
        >>> import torch
        >>> prompt_difficulty(torch.tensor([[True, False, False, False], [True] * 4]))
        tensor([0.7500, 0.0000])
    """
    correct = _check_correct(correct)
    return 1.0 - correct.to(torch.float32).mean(-1)


def dads_kl_weights(correct: Tensor, advantages: Tensor) -> Tensor:
    r"""DADS per-response KL weights :math:`w_i`.

    .. math::

        w_i = \begin{cases} 1 - e^{-e\,(1-d)} & A_i > 0 \text{ and } 0 < d < 1 \\
        1 & \text{otherwise}\end{cases}

    with the group's difficulty :math:`d` (:func:`prompt_difficulty`).

    Args:
        correct: bool ``(..., n)``.
        advantages: float ``(..., n)``, the responses' advantages.

    Returns:
        ``(..., n)`` weights in (0, 1] in the advantages' float dtype (float32 for bf16/fp16).

    Example:
        >>> import torch
        >>> c = torch.tensor([[True, False, False, False]])
        >>> a = torch.tensor([[1.5, -0.5, -0.5, -0.5]])
        >>> dads_kl_weights(c, a)
        tensor([[0.4932, 1.0000, 1.0000, 1.0000]])
    """
    correct = _check_correct(correct)
    advantages = check_group_tensor(advantages, "advantages", correct.shape)
    dtype = compute_dtype(advantages)
    d = (1.0 - correct.to(dtype).mean(-1, keepdim=True)).expand(correct.shape)
    shaped = -torch.expm1(-math.e * (1.0 - d))  # 1 − e^{−e(1−d)}, accurate near d → 1
    interior = (d > 0) & (d < 1)
    use = interior & (advantages > 0)
    return torch.where(use, shaped, torch.ones_like(shaped))


def stcr_advantage_scale(correct: Tensor, lengths: Tensor, *, base: float = STCR_BASE) -> Tensor:
    r"""STCR's advantage factors :math:`s_i = 1 + (1 - b^{-\Delta_i})` for long wrong answers.

    :math:`\Delta_i = L_i - \operatorname{mean}_{j\ \mathrm{correct}} L_j`; :math:`s_i` applies
    to an incorrect response with :math:`\Delta_i > 0` in a group that has at least one correct
    response; every other response has :math:`s_i = 1`.

    Args:
        correct: bool ``(..., n)``.
        lengths: ``(..., n)`` response lengths in tokens (float or integer).
        base: b > 1 (the official code's 1.00001).

    Returns:
        float32 (float64 if ``lengths`` is float64) factors in [1, 2), shape ``(..., n)``.

    Example:
        >>> import torch
        >>> c = torch.tensor([[True, False, False]]); L = torch.tensor([[10, 5, 10 + 69315]])
        >>> stcr_advantage_scale(c, L).round(decimals=4)
        tensor([[1.0000, 1.0000, 1.5000]])
    """
    correct = _check_correct(correct)
    if not isinstance(lengths, Tensor) or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError("`lengths` must be a real tensor of response lengths (tokens)")
    if lengths.shape != correct.shape:
        raise ValueError(
            f"`lengths` must have the shape of `correct` {tuple(correct.shape)}, got "
            f"{tuple(lengths.shape)}"
        )
    b = check_positive_scalar(base, "base")
    if not b > 1:
        raise ValueError(f"`base` must be a number > 1 (the official code: 1.00001), got {base!r}")
    dtype = compute_dtype(lengths)
    lengths = lengths.to(dtype)
    if bool((lengths < 0).any()):
        raise ValueError("`lengths` must be >= 0 (token counts)")
    c = correct.to(dtype)
    n_correct = c.sum(-1, keepdim=True)
    mean_correct = (lengths * c).sum(-1, keepdim=True) / n_correct.clamp_min(1.0)
    delta = lengths - mean_correct
    applies = (~correct) & (n_correct > 0) & (delta > 0)
    factor = 1.0 - torch.exp(-delta.clamp_min(0.0) * math.log(b))  # 1 − b^{−Δ}
    return torch.where(applies, 1.0 + factor, torch.ones_like(factor))


def apo_loss(
    logps: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor,
    advantages: Tensor,
    correct: Tensor,
    mask: Tensor | None = None,
    *,
    kl_coef: float = 1e-3,
    clip_eps: float = 0.2,
    dads: bool = True,
    stcr: bool = True,
    stcr_base: float = STCR_BASE,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""APO's loss: clipped GRPO surrogate + DADS-weighted k3 KL, with STCR-scaled advantages.

    See the module docstring for the formula. ``dads=False, stcr=False`` is GRPO with the k3
    KL in the loss and per-sequence token means (the APO baseline).

    Args:
        logps: :math:`\log\pi_\theta` of the sampled tokens, ``(prompts, group, tokens)``
            (any leading shape whose last axis is the group), differentiable.
        old_logps: :math:`\log\pi_\mathrm{old}` (the sampling policy), same shape, no grad.
        ref_logps: :math:`\log\pi_\mathrm{ref}`, same shape, no grad.
        advantages: ``(prompts, group)`` (e.g. group-normalised rewards).
        correct: bool ``(prompts, group)``, True for a correct response.
        mask: None or bool of ``logps``' shape (True = completion token); response lengths for
            STCR are the kept-token counts.
        kl_coef: β >= 0 (APO: 1e-3).
        clip_eps: ε > 0 of the PPO clip.
        dads: weight the KL by :func:`dads_kl_weights`.
        stcr: scale the advantages by :func:`stcr_advantage_scale`.
        stcr_base: b of STCR.
        reduction: ``"none"`` (``(prompts, group)``) | ``"sum"`` | ``"mean"`` over responses
            with a kept token.
        normalizer: the mean's denominator instead of the number of kept responses.

    Returns:
        The loss, float32 (float64 if an input is float64).

    Raises:
        ValueError: mismatched shapes, a positive log-probability, bad options.

    References:
        Hong et al., APO, arXiv 2506.21655 (2025); Shao et al. (GRPO), arXiv 2402.03300.
    """
    tmask, (logps, old_logps, ref_logps) = check_token_log_probs(
        mask, logps=logps, old_logps=old_logps, ref_logps=ref_logps, allow_neg_inf=("ref_logps",)
    )
    group_shape = logps.shape[:-1]
    advantages = check_group_tensor(advantages, "advantages", group_shape)
    correct = _check_correct(correct)
    if correct.shape != group_shape:
        raise ValueError(
            f"`correct` must have the sequence shape {tuple(group_shape)}, got "
            f"{tuple(correct.shape)}"
        )
    beta = check_positive_scalar(kl_coef, "kl_coef", allow_zero=True)
    eps = check_positive_scalar(clip_eps, "clip_eps")
    check_bool(dads, "dads")
    check_bool(stcr, "stcr")
    normalizer = check_reduction_options(reduction, normalizer)
    dtype = compute_dtype(logps, old_logps, ref_logps, advantages)
    logps, old_logps, ref_logps = logps.to(dtype), old_logps.to(dtype), ref_logps.to(dtype)
    adv = advantages.to(dtype).detach()
    if stcr:
        lengths = (
            torch.full(group_shape, float(logps.shape[-1]), dtype=dtype, device=logps.device)
            if tmask is None
            else tmask.sum(-1).to(dtype)
        )
        adv = adv * stcr_advantage_scale(correct, lengths, base=stcr_base).to(dtype)
    logps, old_logps, ref_logps = zero_padding(tmask, logps, old_logps, ref_logps)
    ratio = torch.exp(logps - old_logps.detach())
    a = adv.unsqueeze(-1)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1.0 - eps, 1.0 + eps) * a)
    pg = sequence_mean(-surrogate, tmask)
    per_sequence = pg
    if beta > 0:
        k3 = policy_kl(logps, ref_logps.detach(), kind="k3", reduction="none")
        weight = dads_kl_weights(correct, advantages.detach()).to(dtype) if dads else 1.0
        per_sequence = per_sequence + beta * weight * sequence_mean(k3, tmask)
    return finish_sequences(per_sequence, tmask, reduction, normalizer)
