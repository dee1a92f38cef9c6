r"""KDRL: GRPO plus a reverse-KL distillation term to a teacher, on the student's own rollouts.

Xu et al. (2025) post-train a reasoning student with

.. math::

    J_{KDRL}(\theta) = J_{GRPO}(\theta) - \beta\,\mathrm{KL}(\pi_\theta\|\pi_T),

the KL estimated per token on on-policy samples with Schulman's estimators
(:func:`divergent.rl.policy_kl`; :math:`\log r = \log\pi_T - \log\pi_\theta`):

* **k2** :math:`\tfrac12(\log\pi_\theta - \log\pi_T)^2`: expected gradient
  :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_T)` (the reverse KL, mode-seeking; the paper's choice);
  per token the update is
  :math:`[\hat A_i - \beta(\log\pi_\theta - \log\pi_T)]\nabla\log\pi_\theta`;
* **k3** :math:`\pi_T/\pi_\theta - \log(\pi_T/\pi_\theta) - 1`: its value estimates the reverse
  KL but its expected gradient is :math:`\nabla\mathrm{KL}(\pi_T\|\pi_\theta)` (the *forward*
  KL, mass-covering: a different fixed point).

``kd_in="reward"`` places :math:`-\beta\,\mathrm{sg}[k_1]` in each token's advantage instead,
with the same expected gradient as k2 in the loss (the teacher log-ratio as a dense reward).

**Reward-guided KD** (:func:`reward_guided_kd_mask`): the KD term is applied only to responses
that failed (``level="response"``) or to every response of prompts whose group has no success
(``level="group"``); the paper's exact rule is not confirmed by the notes (marked unverified).
The KD coefficient is annealed (5e-3 → 1e-3 in the paper; :func:`linear_kd_coef`).

Reference:
    H. Xu, Q. Zhu, H. Deng, J. Li, L. Hou, Y. Wang, L. Shang, R. Xu, F. Mi, "KDRL: Post-Training
    Reasoning LLMs via Unified Knowledge Distillation and Reinforcement Learning",
    arXiv 2506.02208 (2025).
"""

from __future__ import annotations

import torch
from torch import Tensor

from divergent._validation import as_integer, check_choice, check_positive_scalar
from divergent.objectives._sequence_rows import zero_padding
from divergent.objectives.policy_gradient import (
    _check_logps,
    _check_mask,
    aggregate_token_loss,
    policy_gradient_loss,
)
from divergent.rl.policy_kl import KINDS, policy_kl

__all__ = ["kdrl_loss", "linear_kd_coef", "reward_guided_kd_mask"]

_KD_PLACEMENTS = ("loss", "reward")


def kdrl_loss(
    logps: Tensor,
    old_logps: Tensor | None,
    teacher_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    kd_coef: float = 5e-3,
    kd_estimator: str = "k2",
    kd_in: str = "loss",
    kd_mask: Tensor | None = None,
    clip_eps: float | None = 0.2,
    clip_eps_high: float | None = None,
    normalization: str = "token",
    max_length: int | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    clamp_log_ratio: float | None = None,
) -> Tensor:
    r"""KDRL loss: the GRPO clipped surrogate plus β times a per-token KL to the teacher.

    .. math::

        \ell_{i,t} = -\min\big(\rho_{i,t}A'_{i,t}, \mathrm{clip}(\rho_{i,t}, 1\pm\epsilon)
        A'_{i,t}\big) + [\text{loss}]\,\beta\,m_i\,k(\log\pi_\theta, \log\pi_T),\qquad
        A'_{i,t} = \hat A_i - [\text{reward}]\,\beta\,m_i\,\mathrm{sg}[k],

    aggregated by :func:`divergent.objectives.policy_gradient.aggregate_token_loss`
    (``normalization="token"``: the paper's :math:`1/\sum_i|o_i|`), with :math:`m_i` the
    optional reward-guided KD mask.

    Expected KD gradients on on-policy samples (tested exactly by enumeration):
    ``kd_in="loss"``: k2 → β∇KL(π_θ‖π_T), k3 → β∇KL(π_T‖π_θ), k1 → 0;
    ``kd_in="reward"``: k1 → β∇KL(π_θ‖π_T).

    Args:
        logps: ``(B, T)`` log π_θ of the sampled tokens (differentiable).
        old_logps: ``(B, T)`` log π_old of the sampling policy, or None (on-policy).
        teacher_logps: ``(B, T)`` log π_T of the same tokens under the teacher.
        advantages: ``(B,)`` or ``(B, T)`` (e.g. group-normalised).
        mask: ``(B, T)`` bool or 0/1 of completion tokens.
        kd_coef: β ≥ 0 (paper: annealed 5e-3 → 1e-3).
        kd_estimator: ``"k2"`` (default, reverse-KL gradient) | ``"k3"`` | ``"k1"``.
        kd_in: ``"loss"`` | ``"reward"``.
        kd_mask: None (KD on every response) or ``(B,)`` bool, KD only where True
            (:func:`reward_guided_kd_mask`).
        clip_eps, clip_eps_high: PPO clip ranges.
        normalization, max_length, reduction, normalizer: see ``aggregate_token_loss``.
        clamp_log_ratio: optional clamp of the teacher log-ratio in the estimator.

    Returns:
        A scalar, or ``(B, T)`` per-token losses with ``reduction="none"``.

    Raises:
        ValueError: shape mismatches, positive log-probabilities, unknown options.

    References:
        H. Xu et al., "KDRL", arXiv 2506.02208 (2025), Sec. 3.
    """
    check_choice(kd_in, "kd_in", _KD_PLACEMENTS)
    check_choice(kd_estimator, "kd_estimator", KINDS)
    beta = check_positive_scalar(kd_coef, "kd_coef", allow_zero=True, what="the KD coefficient")
    logps = _check_logps(logps, "logps")
    teacher_logps = _check_logps(teacher_logps, "teacher_logps", logps.shape)
    B, T = logps.shape
    keep = _check_mask(mask, logps.shape, logps.device)
    if kd_mask is None:
        response = torch.ones(B, dtype=torch.bool, device=logps.device)
    else:
        if not isinstance(kd_mask, Tensor) or kd_mask.shape != (B,):
            got = tuple(kd_mask.shape) if isinstance(kd_mask, Tensor) else type(kd_mask).__name__
            raise ValueError(
                f"`kd_mask` must be None or a (batch,) = ({B},) bool tensor, got {got}"
            )
        response = kd_mask.to(torch.bool)
    kd_where = keep & response[:, None]
    adv = advantages
    kd = None
    if beta > 0:
        kd = policy_kl(
            *zero_padding(kd_where, logps, teacher_logps),
            kind=kd_estimator,
            reduction="none",
            clamp_log_ratio=clamp_log_ratio,
        )
        (kd,) = zero_padding(kd_where, kd)
        if kd_in == "reward":
            if not isinstance(advantages, Tensor) or advantages.shape not in ((B,), (B, T)):
                raise ValueError(
                    f"`advantages` must have shape (batch,) or (batch, tokens), got "
                    f"{getattr(advantages, 'shape', type(advantages).__name__)}"
                )
            base = advantages if advantages.dim() == 2 else advantages[:, None].expand(B, T)
            adv = base.to(kd.dtype) - beta * kd.detach()
    per_token = policy_gradient_loss(
        logps,
        adv,
        mask,
        old_logps=old_logps,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        reduction="none",
    )
    if kd is not None and kd_in == "loss":
        per_token = per_token + beta * kd.to(per_token.dtype)
    return aggregate_token_loss(
        per_token,
        mask,
        normalization=normalization,
        max_length=max_length,
        reduction=reduction,
        normalizer=normalizer,
    )


def reward_guided_kd_mask(
    rewards: Tensor,
    *,
    group_size: int | None = None,
    success_threshold: float = 0.5,
    level: str = "response",
) -> Tensor:
    r"""Which responses get the KD term in reward-guided KDRL.

    ``level="response"``: responses whose reward is below ``success_threshold`` (failed);
    ``level="group"``: every response of a prompt none of whose ``group_size`` responses
    succeeded (hard prompts). (The paper's exact rule is unverified in the notes.)

    Args:
        rewards: ``(B,)`` rewards, groups contiguous.
        group_size: G (required for ``level="group"``).
        success_threshold: a reward ≥ this is a success.
        level: ``"response"`` | ``"group"``.

    Returns:
        ``(B,)`` bool, True = apply KD.
    """
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError("`rewards` must be a (batch,) tensor")
    failed = rewards < success_threshold
    if level == "response":
        return failed
    if level != "group":
        raise ValueError(f"`level` must be 'response' or 'group', got {level!r}")
    given, group_size = group_size, as_integer(group_size)
    if group_size is None or group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"`group_size` must be an int >= 1 dividing the batch {rewards.shape[0]}, got {given!r}"
        )
    hard = failed.view(-1, group_size).all(-1, keepdim=True)
    return hard.expand(-1, group_size).reshape(-1)


def linear_kd_coef(step: int, total_steps: int, start: float = 5e-3, end: float = 1e-3) -> float:
    r"""Linearly annealed KD coefficient :math:`\beta_s = \beta_0 + (\beta_1-\beta_0)\,s/S`.

    KDRL anneals β from 5e-3 to 1e-3 (secondary source). ``step`` is clamped to [0, S].
    """
    for value, name in ((step, "step"), (total_steps, "total_steps")):
        if as_integer(value) is None or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
    if total_steps == 0:
        return float(end)
    frac = min(max(step / total_steps, 0.0), 1.0)
    return float(start + (end - start) * frac)
