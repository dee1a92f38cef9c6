r"""Policy-gradient losses for RL on sampled sequences: PPO-clip, GRPO and where the KL goes.

Setting: a batch of ``B`` sampled completions (sequences of up to ``T`` tokens, padded, with a
``mask``), the log-probabilities of the sampled tokens under the trained policy (``logps``,
differentiable), under the policy that sampled them (``old_logps``), under a reference
(``ref_logps``) and one advantage per completion (or per token). Everything is a tensor
operation over ``(B, T)``: no Python loop over the batch.

**Surrogate.** With the per-token ratio :math:`\rho_{i,t} = \pi_\theta(o_{i,t})/\pi_{old}(o_{i,t})`
(or the sequence-level geometric mean of the ratios, GSPO):

.. math::

    \ell_{i,t} = -\min\big(\rho_{i,t} A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon_{low},
    1+\epsilon_{high}) A_{i,t}\big)\ \big[+\ \beta\, k(\log\pi_\theta, \log\pi_{ref})\big].

**Where the KL goes** (``kl_in``), with Schulman's estimators :math:`k_1, k_2, k_3` of
:func:`divergent.rl.policy_kl` on on-policy samples (exact statements, tested by enumeration):

* ``kl_in="loss"`` adds :math:`\beta k` to each token's loss. Expected gradients:
  :math:`k_1 \to 0`, :math:`k_2 \to \beta\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})` (reverse KL),
  :math:`k_3 \to \beta\nabla\mathrm{KL}(\pi_{ref}\|\pi_\theta)` (*forward* KL, although k3's value
  estimates the reverse KL: GRPO / TRL / verl ``low_var_kl``).
* ``kl_in="loss"`` with ``kl_importance_weight=True`` adds :math:`\beta\rho_{i,t} k` instead
  (TRL's ``use_bias_correction_kl``, DeepSeek-V3.2): since
  :math:`\mathbb E_{\pi_{old}}[\rho\, k] = \mathbb E_{\pi_\theta}[k]` for every θ, the expected
  gradient on samples of *any* :math:`\pi_{old}` (on- or off-policy) is
  :math:`\beta\nabla\mathbb E_{\pi_\theta}[k]`: :math:`k_1, k_3 \to
  \beta\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})` (reverse KL),
  :math:`k_2 \to \beta\nabla D_{½\log^2}` (below). Exact per token (token-level ρ); with the
  sequence-level ρ of GSPO the sequence's weight multiplies each of its tokens' k (as TRL).
* ``kl_in="reward"`` subtracts the *detached* estimate from the advantage of each token,
  :math:`A'_{i,t} = A_{i,t} - \beta\,\mathrm{sg}[k]` (a dense per-token reward, as in KDRL).
  Expected gradients: :math:`k_1 \to \beta\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})`,
  :math:`k_3 \to \beta[\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref}) - \nabla\mathrm{KL}(\pi_{ref}\|
  \pi_\theta)]`,
  :math:`k_2 \to \beta[\nabla D_{½\log^2} - \nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})]`
  with :math:`D_{½\log^2} = \mathbb E_\pi[\tfrac12\log^2(\pi_{ref}/\pi)]`. Use k1 here.
  (Per token:
  later tokens' penalties are not credited to earlier tokens; for the sequence-level KL put
  :math:`\beta\sum_t \mathrm{sg}[k_1]` into the reward before :func:`group_normalized_advantages`.)

**Normalisation** (``normalization``; TRL's ``loss_type`` in brackets):

* ``"sequence"`` (``grpo``): each sequence's token mean, then the mean over the B sequences;
* ``"token"`` (``bnpo``, DAPO): the sum over all kept tokens divided by their number (or by
  ``normalizer``, e.g. the token count of the whole gradient-accumulation window: ``dapo``);
* ``"max_length"`` (``dr_grpo``): the sum divided by ``B · max_length`` (Dr. GRPO); with
  ``max_length=1`` each sequence's token sum, then the mean over the B sequences (``luspo``).

References:
    J. Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347 (2017).
    Z. Shao et al., "DeepSeekMath" (GRPO), arXiv 2402.03300 (2024).
    Z. Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective" (Dr. GRPO),
    arXiv 2503.20783 (2025). Q. Yu et al., "DAPO", arXiv 2503.14476 (2025).
    "Length-Unbiased Sequence Policy Optimization" (LUSPO), arXiv 2602.05261 (2026).
    C. Zheng et al., "Group Sequence Policy Optimization" (GSPO), arXiv 2507.18071 (2025).
    D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences", arXiv 1909.08593
    (2019) (adaptive KL controller).
    DeepSeek-AI, "DeepSeek-V3.2", arXiv 2512.02556 (2025) (importance-weighted k3 KL).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    as_integer,
    check_bool,
    check_choice,
    check_positive_scalar,
    check_reduction,
    compute_dtype,
    is_traced,
    mass_tolerance,
    row_label,
)
from divergent.objectives._sequence_rows import zero_padding
from divergent.rl.policy_kl import KINDS, policy_kl

__all__ = [
    "NORMALIZATIONS",
    "AdaptiveKLController",
    "aggregate_token_loss",
    "group_normalized_advantages",
    "grpo_loss",
    "policy_gradient_loss",
]

NORMALIZATIONS: tuple[str, ...] = ("sequence", "token", "max_length")
_KL_PLACEMENTS = ("loss", "reward")
_IS_LEVELS = ("token", "sequence")


# --------------------------------------------------------------------------- validation
def _check_logps(x: Any, name: str, shape: torch.Size | None = None) -> Tensor:
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"`{name}` must be a floating-point tensor of per-token log-probabilities of shape "
            f"(batch, tokens), got {got}"
        )
    if shape is None and x.dim() != 2:
        raise ValueError(
            f"`{name}` must have shape (batch, tokens), got {tuple(x.shape)} (use tokens = 1 "
            "for one action per sample)"
        )
    if shape is not None and x.shape != shape:
        raise ValueError(
            f"`{name}` must have the shape of `logps` {tuple(shape)}, got {tuple(x.shape)}"
        )
    return x


def _check_mask(mask: Any, shape: torch.Size, device: torch.device) -> Tensor:
    """The mask as a bool tensor of ``shape`` (bool, or 0/1 numbers as TRL's completion_mask)."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor):
        raise ValueError(
            f"`mask` must be None or a tensor of shape {tuple(shape)} (bool or 0/1), got "
            f"{type(mask).__name__}"
        )
    if mask.shape != shape:
        raise ValueError(f"`mask` must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("`mask` must be bool or hold only 0 and 1 (True = kept token)")
        mask = mask != 0
    return mask.to(device)


def _check_advantages(advantages: Any, shape: torch.Size) -> Tensor:
    if not isinstance(advantages, Tensor) or not torch.is_floating_point(advantages):
        got = advantages.dtype if isinstance(advantages, Tensor) else type(advantages).__name__
        raise ValueError(f"`advantages` must be a floating-point tensor, got {got}")
    if advantages.shape == shape[:1]:
        return advantages.unsqueeze(-1)
    if advantages.shape == shape:
        return advantages
    raise ValueError(
        f"`advantages` must have shape (batch,) = {tuple(shape[:1])} (one per sequence) or "
        f"(batch, tokens) = {tuple(shape)}, got {tuple(advantages.shape)}"
    )


def _check_not_positive(logp: Tensor, name: str, keep: Tensor) -> None:
    """A kept log-probability above the dtype's rounding slack (or +inf) is a ValueError."""
    if is_traced(logp):
        return
    bad = (logp.detach() > mass_tolerance(logp.dtype)) & keep
    if bool(bad.any()):
        pos = row_label(int(bad.reshape(-1).nonzero()[0, 0]), logp.shape)
        value = float(logp.detach().reshape(-1)[int(bad.reshape(-1).nonzero()[0, 0])])
        raise ValueError(
            f"`{name}` must hold log-probabilities (<= 0), got {value:g} at entry {pos}"
        )


# --------------------------------------------------------------------------- aggregation
def aggregate_token_loss(
    per_token_loss: Tensor,
    mask: Tensor | None = None,
    *,
    normalization: str = "sequence",
    max_length: int | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""Reduce a ``(B, T)`` per-token loss to the scalar a trainer minimises.

    .. math::

        \text{sequence: } \frac1B\sum_i \frac{\sum_t m_{it}\ell_{it}}{\max(1, \sum_t m_{it})},
        \quad \text{token: } \frac{\sum_{it} m_{it}\ell_{it}}{\max(1, \sum_{it} m_{it})},
        \quad \text{max\_length: } \frac{\sum_{it} m_{it}\ell_{it}}{B\cdot L_{max}}.

    Args:
        per_token_loss: ``(B, T)`` per-token losses.
        mask: ``(B, T)`` bool (or 0/1) of kept tokens; None keeps all.
        normalization: ``"sequence"`` | ``"token"`` | ``"max_length"`` (see the module doc).
        max_length: L_max for ``"max_length"`` (default ``T``).
        reduction: ``"mean"`` (the normalised value above), ``"sum"`` (Σ m·ℓ) or ``"none"``
            (``(B, T)`` with masked entries 0).
        normalizer: only with ``normalization="token"``: the denominator instead of the token
            count (e.g. the tokens of a whole gradient-accumulation window).

    Returns:
        A scalar (``"mean"``, ``"sum"``) or ``(B, T)`` (``"none"``). A fully masked batch gives 0
        with zero gradient. NaN in a kept token propagates.
    """
    per_token_loss = _check_logps(per_token_loss, "per_token_loss")
    shape = per_token_loss.shape
    keep = _check_mask(mask, shape, per_token_loss.device)
    normalization = check_choice(normalization, "normalization", NORMALIZATIONS)
    check_reduction(reduction)
    if normalizer is not None and normalization != "token":
        raise ValueError(
            f"`normalizer` is only used with normalization='token', got normalization="
            f"{normalization!r}"
        )
    if normalizer is not None:
        check_positive_scalar(normalizer, "normalizer", what="the token count of the mean")
    if max_length is not None and ((length := as_integer(max_length)) is None or length < 1):
        raise ValueError(f"`max_length` must be None or an int >= 1, got {max_length!r}")
    # masked entries are replaced (not multiplied) so that NaN / inf there do not leak
    masked = torch.where(keep, per_token_loss, torch.zeros_like(per_token_loss))
    if reduction == "none":
        return masked
    if reduction == "sum":
        return masked.sum()
    weights = keep.to(masked.dtype)
    if normalization == "sequence":
        per_seq = masked.sum(-1) / weights.sum(-1).clamp(min=1.0)
        return per_seq.mean() if shape[0] > 0 else masked.sum()
    if normalization == "token":
        denom = weights.sum().clamp(min=1.0) if normalizer is None else normalizer
        return masked.sum() / denom
    length = shape[1] if max_length is None else max_length
    return masked.sum() / max(1, shape[0] * length)


# --------------------------------------------------------------------------- advantages
def group_normalized_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    scale: bool | str = True,
    eps: float = 1e-4,
) -> Tensor:
    r"""GRPO's group-relative advantages: each reward minus its group's mean, over its std.

    .. math::

        A_{g,j} = \frac{r_{g,j} - \bar r_g}{s_g + \epsilon},\qquad
        \bar r_g = \frac1G\sum_j r_{g,j},\quad
        s_g = \sqrt{\tfrac{1}{G-1}\sum_j (r_{g,j}-\bar r_g)^2}

    (the unbiased std, as TRL; ``scale="batch"`` uses the std of the whole batch instead of the
    group's, ``scale=False`` / ``"none"`` no division: Dr. GRPO). Groups are contiguous: rewards
    ``[g·G, (g+1)·G)`` belong to prompt g (TRL's ``repeat_interleave`` layout).

    Args:
        rewards: ``(B,)`` with B a multiple of ``group_size``.
        group_size: G ≥ 1 completions per prompt (with G = 1 the std is taken as 0).
            A group whose std is 0 gets advantages 0/(0+ε) (0 when ε = 0).
        scale: ``True`` / ``"group"`` | ``"batch"`` | ``False`` / ``"none"``.
        eps: ε > 0 added to the std (TRL: 1e-4).

    Returns:
        ``(B,)`` advantages (float32, float64 for float64 rewards).

    Example:
        >>> group_normalized_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2, eps=0.0)
        tensor([ 0.7071, -0.7071,  0.0000,  0.0000])

    References:
        Z. Shao et al., "DeepSeekMath", arXiv 2402.03300 (2024), Sec. 4.1.
    """
    if not isinstance(rewards, Tensor) or not torch.is_floating_point(rewards):
        got = rewards.dtype if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"`rewards` must be a floating-point tensor of shape (batch,), got {got}")
    if rewards.dim() != 1:
        raise ValueError(f"`rewards` must have shape (batch,), got {tuple(rewards.shape)}")
    given, group_size = group_size, as_integer(group_size)
    if group_size is None or group_size < 1:
        raise ValueError(f"`group_size` must be an int >= 1, got {given!r}")
    if rewards.shape[0] % group_size:
        raise ValueError(
            f"`rewards` has {rewards.shape[0]} entries, not a multiple of `group_size`="
            f"{group_size} (the completions of one prompt must be contiguous)"
        )
    if scale is True or scale == "group":
        mode = "group"
    elif scale is False or scale == "none":
        mode = "none"
    elif scale == "batch":
        mode = "batch"
    else:
        allowed = (True, False, "group", "batch", "none")
        raise ValueError(f"`scale` must be one of {allowed}, got {scale!r}")
    eps = check_positive_scalar(eps, "eps", allow_zero=True, what="added to the std")
    r = rewards.to(compute_dtype(rewards))
    groups = r.view(-1, group_size)
    centred = (groups - groups.mean(-1, keepdim=True)).reshape(-1)
    if mode == "none":
        return centred
    if mode == "group":
        std = (
            groups.std(-1, correction=1, keepdim=True).expand_as(groups).reshape(-1)
            if group_size > 1
            else torch.zeros_like(r)
        )
    else:
        std = r.std(correction=1).expand_as(r) if r.numel() > 1 else torch.zeros_like(r)
    out = centred / (std + eps)
    if eps == 0:  # a group with equal rewards carries no signal: 0, not 0/0
        out = torch.where(std == 0, torch.zeros_like(out), out)
    return out


# --------------------------------------------------------------------------- losses
def _importance_ratio(
    logps: Tensor, old_logps: Tensor, keep: Tensor, importance_sampling_level: str
) -> Tensor:
    """ρ = π_θ/π_old: ``(B, T)`` per token, or ``(B, 1)`` per sequence (GSPO: the geometric mean
    of the kept tokens' ratios). Differentiable through ``logps`` (TRL's ``coef_1``)."""
    log_ratio = logps - old_logps
    if importance_sampling_level == "sequence":
        kept = keep.to(log_ratio.dtype)
        log_ratio = torch.where(keep, log_ratio, torch.zeros_like(log_ratio))
        log_ratio = ((log_ratio * kept).sum(-1) / kept.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    return torch.exp(log_ratio)


def _clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    keep: Tensor,
    clip_low: float | None,
    clip_high: float | None,
) -> Tensor:
    unclipped = ratio * advantages
    if clip_low is None:
        return -unclipped.expand(keep.shape)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped).expand(keep.shape)


def _clip_bounds(clip_eps: Any, clip_eps_high: Any) -> tuple[float | None, float | None]:
    if clip_eps is None:
        if clip_eps_high is not None:
            raise ValueError("`clip_eps_high` needs `clip_eps` (the lower clip range) to be set")
        return None, None
    low = check_positive_scalar(clip_eps, "clip_eps", allow_zero=True, what="PPO clip range ε")
    if low >= 1:
        raise ValueError(
            f"`clip_eps` must be in [0, 1) (the ratio is clipped to [1-ε, 1+ε]), got {clip_eps!r}"
        )
    high = (
        low
        if clip_eps_high is None
        else check_positive_scalar(
            clip_eps_high, "clip_eps_high", allow_zero=True, what="upper clip range (DAPO)"
        )
    )
    return low, high


def policy_gradient_loss(
    logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    old_logps: Tensor | None = None,
    clip_eps: float | None = None,
    clip_eps_high: float | None = None,
    importance_sampling_level: str = "token",
    normalization: str = "token",
    max_length: int | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""REINFORCE / PPO-clip surrogate loss on sampled tokens (no KL term; see :func:`grpo_loss`).

    .. math::

        \ell_{i,t} = -\min\big(\rho_{i,t} A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon,
        1+\epsilon_{high}) A_{i,t}\big),\qquad \rho_{i,t} = e^{\log\pi_\theta - \log\pi_{old}},

    aggregated by :func:`aggregate_token_loss`. Without ``old_logps`` the ratio is
    :math:`e^{\log\pi_\theta - \mathrm{sg}[\log\pi_\theta]}` (value 1, gradient
    :math:`\nabla\log\pi_\theta`): the on-policy REINFORCE gradient
    :math:`-A\,\nabla\log\pi_\theta`. Without ``clip_eps`` nothing is clipped.

    Args:
        logps: ``(B, T)`` log π_θ of the sampled tokens (differentiable).
        advantages: ``(B,)`` (one per sequence) or ``(B, T)``.
        mask: ``(B, T)`` bool or 0/1 (True = completion token); None keeps all.
        old_logps: ``(B, T)`` log π_old of the sampling policy, or None (= ``logps`` detached).
        clip_eps: ε of the clipped ratio (PPO / GRPO 0.2), or None for no clipping.
        clip_eps_high: upper ε (DAPO's clip-higher, 0.28); default ``clip_eps``.
        importance_sampling_level: ``"token"`` (PPO / GRPO) or ``"sequence"`` (GSPO: the ratio
            is :math:`\exp(\frac{1}{|o_i|}\sum_t \log\rho_{i,t})` for every token of sequence i).
        normalization, max_length, reduction, normalizer: see :func:`aggregate_token_loss`.

    Returns:
        A scalar, or ``(B, T)`` per-token losses with ``reduction="none"``.

    References:
        J. Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347 (2017).
    """
    return grpo_loss(
        logps,
        old_logps,
        None,
        advantages,
        mask,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        kl_coef=0.0,
        importance_sampling_level=importance_sampling_level,
        normalization=normalization,
        max_length=max_length,
        reduction=reduction,
        normalizer=normalizer,
    )


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor | None,
    ref_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    clip_eps: float | None = 0.2,
    clip_eps_high: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    kl_gradient: str | None = None,
    kl_in: str = "loss",
    kl_importance_weight: bool = False,
    importance_sampling_level: str = "token",
    normalization: str = "sequence",
    max_length: int | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    clamp_log_ratio: float | None = None,
) -> Tensor:
    r"""GRPO loss: the clipped surrogate plus a KL penalty placed in the loss or in the reward.

    .. math::

        \ell_{i,t} = -\min\big(\rho_{i,t} A'_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon,
        1+\epsilon_{high}) A'_{i,t}\big) + [\texttt{kl\_in}=\text{loss}]\ \beta\, w_{i,t}\,
        k_{i,t},\qquad A'_{i,t} = A_{i,t} - [\texttt{kl\_in}=\text{reward}]\ \beta\,
        \mathrm{sg}[k_{i,t}],

    with :math:`k_{i,t}` Schulman's estimator ``kl_estimator`` of
    :math:`\mathrm{KL}(\pi_\theta\|\pi_{ref})` at token t (:func:`divergent.rl.policy_kl`; k3
    is :math:`e^{\log\pi_{ref}-\log\pi_\theta} - (\log\pi_{ref}-\log\pi_\theta) - 1`, TRL's
    ``per_token_kl``), :math:`w_{i,t} = \rho_{i,t}` (the unclipped, differentiable ratio) with
    ``kl_importance_weight=True`` and 1 otherwise, aggregated by :func:`aggregate_token_loss`.

    Gradient semantics on on-policy samples (exact by enumeration in the tests):

    =========  ===========================  ===================  ===========================
    estimator  ``kl_in="loss"``             loss, weighted by ρ  ``kl_in="reward"``
    =========  ===========================  ===================  ===========================
    k1         0                            β∇KL(π_θ‖π_ref)      β∇KL(π_θ‖π_ref)
    k2         β∇KL(π_θ‖π_ref)  (reverse)   β∇D_{½log²}          β(∇D_{½log²} − ∇KL(π_θ‖π_ref))
    k3         β∇KL(π_ref‖π_θ)  (forward)   β∇KL(π_θ‖π_ref)      β(∇KL(π_θ‖π_ref) − ∇KL(π_ref‖π_θ))
    =========  ===========================  ===================  ===========================

    (:math:`D_{½\log^2} = \mathbb E_{\pi_\theta}[\tfrac12\log^2(\pi_{ref}/\pi_\theta)]`; the
    weighted column, ``kl_importance_weight=True`` with token-level ρ, holds off-policy too.)

    ``kl_gradient`` (``kl_in="loss"`` only) keeps ``kl_estimator``'s value with another
    estimator's gradient (straight-through): ``kl_estimator="k3", kl_gradient="k2"`` is the
    unbiased non-negative k3 value with the reverse-KL gradient.

    **TRL equality** (trl 1.16 ``GRPOTrainer._compute_loss``, tested): ``loss_type="grpo"`` =
    ``normalization="sequence"``, ``"bnpo"`` = ``"token"``, ``"dr_grpo"`` = ``"max_length"`` with
    ``max_length=max_completion_length``, ``"dapo"`` = ``"token"`` with ``normalizer`` = the
    window's token count, ``"luspo"`` = ``"max_length"`` with ``max_length=1``; ``beta`` =
    ``kl_coef`` with ``kl_estimator="k3"``, ``kl_in="loss"``;
    ``use_bias_correction_kl`` (TRL's default True) = ``kl_importance_weight``;
    ``epsilon`` / ``epsilon_high`` = ``clip_eps`` / ``clip_eps_high``;
    ``importance_sampling_level`` the same.

    Args:
        logps: ``(B, T)`` log π_θ of the sampled tokens (differentiable).
        old_logps: ``(B, T)`` log π_old of the sampling policy, or None (= ``logps``
            detached: one optimisation step per generation).
        ref_logps: ``(B, T)`` log π_ref, or None when ``kl_coef == 0``.
        advantages: ``(B,)`` or ``(B, T)`` (e.g. :func:`group_normalized_advantages`).
        mask: ``(B, T)`` bool or 0/1 of completion tokens; None keeps all.
        clip_eps: ε (0.2), or None for the unclipped ratio.
        clip_eps_high: upper ε (DAPO clip-higher), default ``clip_eps``.
        kl_coef: β ≥ 0.
        kl_estimator: ``"k1"`` | ``"k2"`` | ``"k3"`` (default, as GRPO).
        kl_gradient: None or ``"k1"`` | ``"k2"`` | ``"k3"`` (straight-through; loss placement).
        kl_in: ``"loss"`` | ``"reward"``.
        kl_importance_weight: multiply each token's KL term by ρ (``kl_in="loss"`` only, not
            with ``kl_gradient``): the off-policy bias correction of DeepSeek-V3.2 / TRL's
            ``use_bias_correction_kl``. Changes the gradient even on-policy (ρ = 1 in value).
        importance_sampling_level: ``"token"`` | ``"sequence"`` (GSPO).
        normalization: ``"sequence"`` (default, GRPO) | ``"token"`` | ``"max_length"``.
        max_length, reduction, normalizer: see :func:`aggregate_token_loss`.
        clamp_log_ratio: optional clamp of log(π_ref/π_θ) in the estimator (verl: 20).

    Returns:
        A scalar (``reduction="mean"`` / ``"sum"``) or ``(B, T)`` per-token losses
        (``"none"``, masked tokens 0). Float32 (float64 if an input is float64).

    Raises:
        ValueError: naming the argument, for mismatched shapes, a kept log-probability > 0,
            unknown options, ``kl_coef > 0`` without ``ref_logps``, ``kl_importance_weight``
            not a bool or combined with ``kl_in="reward"`` or ``kl_gradient``.

    Example:
        >>> logps = torch.log(torch.tensor([[0.5, 0.4], [0.2, 0.9]]))
        >>> adv = torch.tensor([1.0, -1.0])
        >>> grpo_loss(logps, None, logps - 0.1, adv, kl_coef=0.1)
        tensor(0.0005)

    References:
        Z. Shao et al., "DeepSeekMath" (GRPO), arXiv 2402.03300 (2024), Eq. 3-4;
        J. Schulman, "Approximating KL Divergence" (2020);
        DeepSeek-AI, "DeepSeek-V3.2", arXiv 2512.02556 (2025) (the importance-weighted KL).
    """
    logps = _check_logps(logps, "logps")
    shape = logps.shape
    if old_logps is not None:
        _check_logps(old_logps, "old_logps", shape)
    if ref_logps is not None:
        _check_logps(ref_logps, "ref_logps", shape)
    keep = _check_mask(mask, shape, logps.device)
    adv = _check_advantages(advantages, shape)
    clip_low, clip_high = _clip_bounds(clip_eps, clip_eps_high)
    beta = check_positive_scalar(kl_coef, "kl_coef", allow_zero=True, what="the KL coefficient")
    kl_estimator = check_choice(kl_estimator, "kl_estimator", KINDS)
    if kl_gradient is not None:
        check_choice(kl_gradient, "kl_gradient", KINDS)
    kl_in = check_choice(kl_in, "kl_in", _KL_PLACEMENTS)
    if kl_in == "reward" and kl_gradient is not None:
        raise ValueError(
            "`kl_gradient` only applies with kl_in='loss' (in the reward the penalty is detached)"
        )
    if check_bool(kl_importance_weight, "kl_importance_weight") and kl_in == "reward":
        raise ValueError(
            "`kl_importance_weight` only applies with kl_in='loss' (in the reward the surrogate's "
            "ratio already weights the detached penalty)"
        )
    if kl_importance_weight and kl_gradient is not None:
        raise ValueError(
            "`kl_importance_weight` and `kl_gradient` both set the KL term's gradient; use one "
            "(weighted, k1 and k3 already give the reverse-KL gradient)"
        )
    importance_sampling_level = check_choice(
        importance_sampling_level, "importance_sampling_level", _IS_LEVELS
    )
    if beta > 0 and ref_logps is None:
        raise ValueError(f"`ref_logps` is required when `kl_coef` > 0 (got kl_coef={kl_coef!r})")
    dtype = compute_dtype(logps, old_logps, ref_logps, adv)
    _check_not_positive(logps, "logps", keep)
    if old_logps is not None:
        _check_not_positive(old_logps, "old_logps", keep)
    if ref_logps is not None and beta > 0:
        _check_not_positive(ref_logps, "ref_logps", keep)

    logps = logps.to(dtype)
    old = logps.detach() if old_logps is None else old_logps.to(dtype)
    adv = adv.to(dtype)
    kl = None
    if beta > 0:
        # padding may hold anything: evaluate the estimator on 0 there (masked out below)
        safe_logps, safe_ref = zero_padding(keep, logps, ref_logps.to(dtype))
        kl = policy_kl(
            safe_logps,
            safe_ref,
            kind=kl_estimator,
            gradient=kl_gradient,
            reduction="none",
            clamp_log_ratio=clamp_log_ratio,
        )
        if kl_in == "reward":
            adv = adv - beta * kl.detach()
    ratio = _importance_ratio(logps, old, keep, importance_sampling_level)
    per_token = _clipped_surrogate(ratio, adv, keep, clip_low, clip_high)
    if kl is not None and kl_in == "loss":
        per_token = per_token + beta * (kl * ratio if kl_importance_weight else kl)
    return aggregate_token_loss(
        per_token,
        keep,
        normalization=normalization,
        max_length=max_length,
        reduction=reduction,
        normalizer=normalizer,
    )


# --------------------------------------------------------------------------- adaptive KL
class AdaptiveKLController:
    r"""Adaptive KL coefficient of Ziegler et al. (2019): steer the measured KL to a target.

    After each batch with measured KL :math:`\widehat{KL}` over ``n_steps`` samples:

    .. math::

        e = \mathrm{clip}\Big(\frac{\widehat{KL}}{KL_{target}} - 1,\ -0.2,\ 0.2\Big),\qquad
        \beta \leftarrow \beta\,\Big(1 + e\,\frac{n_{steps}}{H}\Big),

    so β grows when the KL is above the target and shrinks below it, by at most a factor
    :math:`1 \pm 0.2\,n/H` per update (the proportional controller of ``lm-human-preferences``,
    TRL's ``AdaptiveKLController``).

    Args:
        init_kl_coef: initial β > 0 (Ziegler et al.: 0.1-0.2).
        target: target KL > 0 (nats per sequence, e.g. 6).
        horizon: H > 0, in samples (e.g. 10000): how fast β adapts.

    Attributes:
        value: the current β.

    Example:
        >>> c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
        >>> c.update(12.0, n_steps=256)
        0.201024

    References:
        D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
        arXiv 1909.08593 (2019), Sec. 2.2.
    """

    MAX_PROPORTIONAL_ERROR = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = check_positive_scalar(init_kl_coef, "init_kl_coef", what="initial β")
        self.target = check_positive_scalar(target, "target", what="the target KL")
        self.horizon = check_positive_scalar(horizon, "horizon", what="adaptation horizon")

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        """Update β from the KL measured on the last ``n_steps`` samples; return the new β."""
        if isinstance(current_kl, Tensor) and current_kl.numel() == 1:
            current_kl = current_kl.item()
        if (
            isinstance(current_kl, bool)
            or not isinstance(current_kl, (int, float))
            or (not math.isfinite(current_kl))
        ):
            raise ValueError(f"`current_kl` must be a finite number, got {current_kl!r}")
        if (steps := as_integer(n_steps)) is None or steps < 1:
            raise ValueError(f"`n_steps` must be an int >= 1, got {n_steps!r}")
        bound = self.MAX_PROPORTIONAL_ERROR
        error = min(max(current_kl / self.target - 1.0, -bound), bound)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return (
            f"AdaptiveKLController(value={self.value:g}, target={self.target:g}, "
            f"horizon={self.horizon:g})"
        )
