r"""SuperHF: filter the best of n samples by reward, then fine-tune on them with a KL prior.

SuperHF (Mukobi et al. 2023) replaces PPO by a supervised loop ("expert iteration" / online
best-of-n distillation). For each prompt x:

1. sample n completions from the current policy :math:`\pi_\theta`;
2. score them with the reward model and keep the top k (k = 1 by default):
   :func:`superhf_select`;
3. take gradient steps on the kept completions :math:`y^\star` with (:func:`superhf_loss`)

.. math::

    \mathcal L(\theta) = \underbrace{-\frac{1}{|y^\star|}\sum_t
    \log\pi_\theta(y^\star_t\mid x, y^\star_{<t})}_{\text{SFT (cross-entropy)}}
    \;+\;\beta\,\max\Big(0,\ \frac{1}{|y^\star|}\sum_t
    \mathrm{KL}\big(\pi_0(\cdot\mid x, y^\star_{<t})\,\big\|\,
    \pi_\theta(\cdot\mid x, y^\star_{<t})\big)\Big),

the "KL prior" to the initial model :math:`\pi_0`. The direction is the *forward* KL from the
prior, :math:`\mathrm{KL}(\pi_0\|\pi_\theta)`, summed over the vocabulary at every completion
position: the official code computes ``KLDivLoss(log_target=True)(log π_θ, log π_0)``
(PyTorch's reversed argument order), and clamps it at 0 "to avoid negative KL gaming"
(the exact KL is >= 0, so the clamp only matters for approximations; kept for fidelity).
Defaults from the official ``default.yaml``: β = 0.35, n = 16, k = 1.

References:
    G. Mukobi, P. Chatain, S. Fong, R. Windesheim, G. Kutyniok, K. Bhatia, S. Alberti,
    "SuperHF: Supervised Iterative Learning from Human Feedback", arXiv 2310.16763 (2023);
    code github.com/openfeedback/superhf (``training.py``, ``filtering.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from divergent._validation import (
    as_integer,
    check_bool,
    check_float_tensor,
    check_ignore_index,
    check_mask,
    check_pair,
    check_positive_scalar,
    compute_dtype,
)
from divergent.functional import kl
from divergent.objectives._sequence_rows import (
    check_reduction_options,
    finish_sequences,
    sequence_mean,
)

__all__ = ["superhf_loss", "superhf_select"]


def superhf_select(rewards: Tensor, k: int = 1, valid: Tensor | None = None) -> Tensor:
    r"""The top-k completions of each prompt by reward: SuperHF's filter.

    .. math:: S = \operatorname{top\text{-}k}_{j:\ \mathrm{valid}_j}\ r_j

    Ties are broken by the lower index (a stable sort), so the selection is deterministic.
    Invalid completions (empty ones, which SuperHF drops) are never selected; a prompt with
    fewer than k valid completions keeps all its valid ones.

    Args:
        rewards: reward-model scores, ``(..., n)``: the last axis holds the n completions of
            one prompt (any leading shape, e.g. ``(prompts, n)``).
        k: how many to keep per prompt, 1 <= k <= n (SuperHF: 1).
        valid: None or bool, ``rewards``' shape; False = never selected.

    Returns:
        A bool tensor of ``rewards``' shape, True for the selected completions (use it as the
        sequence ``mask`` of :func:`superhf_loss` after flattening to the batch).

    Raises:
        ValueError: a NaN reward on a valid completion, k out of range, a bad ``valid``.

    Example:
        >>> import torch
        >>> superhf_select(torch.tensor([[0.1, 0.9, 0.5], [2.0, 1.0, 2.0]]))
        tensor([[False,  True, False],
                [ True, False, False]])

    References:
        Mukobi et al., SuperHF, arXiv 2310.16763 (2023), ``CompletionFilterTopK``.
    """
    rewards = check_float_tensor(rewards, "rewards", min_dim=1)
    n = rewards.shape[-1]
    given, k = k, as_integer(k)
    if k is None or not 1 <= k <= max(n, 1):
        raise ValueError(
            f"`k` must be an integer in 1..{n} (completions per prompt), got {given!r}"
        )
    keep = check_mask(valid, rewards.shape, rewards.device) if valid is not None else None
    nan = torch.isnan(rewards) if keep is None else torch.isnan(rewards) & keep
    if bool(nan.any()):
        raise ValueError(
            "`rewards` has NaN on a valid completion; mark it invalid with `valid` or fix the "
            "reward model"
        )
    scores = rewards.to(torch.float64)
    if keep is not None:
        scores = torch.where(keep, scores, torch.full_like(scores, -torch.inf))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    selected = torch.zeros(rewards.shape, dtype=torch.bool, device=rewards.device)
    selected.scatter_(-1, order, True)
    if keep is not None:
        selected &= keep
    return selected


def superhf_loss(
    policy_logits: Tensor,
    prior_logits: Tensor,
    labels: Tensor,
    *,
    kl_coef: float = 0.35,
    clamp_kl: bool = True,
    ignore_index: int = -100,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""SuperHF's fine-tuning loss on filtered completions: SFT + β·KL prior.

    Per sequence i with completion tokens :math:`T_i = \{t: \mathrm{labels}_{i,t} \ne
    \mathrm{ignore\_index}\}`:

    .. math::

        \ell_i = \frac1{|T_i|}\sum_{t\in T_i} -\log\pi_\theta(y_{i,t}\mid\cdot)
        + \beta\,\max\Big(0, \frac1{|T_i|}\sum_{t\in T_i}
        \mathrm{KL}(\pi_0(\cdot\mid\cdot)\,\|\,\pi_\theta(\cdot\mid\cdot))\Big)

    (the clamp at 0 only with ``clamp_kl=True``). The logits at position t are those that
    predict ``labels[..., t]`` (shift them before the call, as for any causal-LM loss).

    Args:
        policy_logits: :math:`\pi_\theta` logits, ``(..., tokens, vocab)``, differentiable.
        prior_logits: :math:`\pi_0` logits (the frozen initial model), same shape.
        labels: int64 token ids ``(..., tokens)``; ``ignore_index`` marks prompt / padding.
        kl_coef: β >= 0 (SuperHF default 0.35).
        clamp_kl: apply :math:`\max(0, \cdot)` to the mean KL (the official code does).
        ignore_index: the label value of non-completion positions.
        mask: None or bool of the sequence shape ``(...,)``: which sequences enter the loss
            (e.g. :func:`superhf_select`'s result, flattened like the batch).
        reduction: ``"none"`` (one value per sequence) | ``"sum"`` | ``"mean"`` (over kept
            sequences with at least one completion token).
        normalizer: the mean's denominator instead of the number of kept sequences.

    Returns:
        The loss, float32 (float64 if an input is float64).

    Raises:
        ValueError: shape / class-axis mismatch, labels out of range or not integer, β < 0, a
            bad mask or reduction.

    References:
        Mukobi et al., SuperHF, arXiv 2310.16763 (2023), ``SuperHFTrainer`` (KL term
        ``KLDivLoss(reduction="batchmean", log_target=True)``, clamped at 0).
    """
    policy_logits, prior_logits = check_pair(
        policy_logits, prior_logits, "policy_logits", "prior_logits"
    )
    if policy_logits.dim() < 2:
        raise ValueError(
            "`policy_logits` must have a token axis and a vocabulary axis (..., tokens, vocab), "
            f"got shape {tuple(policy_logits.shape)}"
        )
    token_shape = policy_logits.shape[:-1]
    vocab = policy_logits.shape[-1]
    if not isinstance(labels, Tensor) or labels.dtype == torch.bool or labels.is_floating_point():
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must be an integer tensor of token ids, got {got}")
    if labels.shape != token_shape:
        raise ValueError(
            f"`labels` must have the shape {tuple(token_shape)} of the logits without the "
            f"vocabulary axis, got {tuple(labels.shape)}"
        )
    labels = labels.to(device=policy_logits.device, dtype=torch.long)
    ignore_index = check_ignore_index(ignore_index, allow_none=False)
    completion = labels != ignore_index
    out_of_range = completion & ((labels < 0) | (labels >= vocab))
    if bool(out_of_range.any()):
        bad = int(labels[out_of_range][0])
        raise ValueError(
            f"`labels` has {bad}, outside 0..{vocab - 1} (vocabulary) and not ignore_index="
            f"{ignore_index}"
        )
    beta = check_positive_scalar(kl_coef, "kl_coef", allow_zero=True)
    check_bool(clamp_kl, "clamp_kl")
    sequence_keep = check_mask(mask, token_shape[:-1], policy_logits.device)
    normalizer = check_reduction_options(reduction, normalizer)
    dtype = compute_dtype(policy_logits, prior_logits)
    log_policy = torch.log_softmax(policy_logits.to(dtype), dim=-1)
    safe_labels = torch.where(completion, labels, torch.zeros_like(labels))
    token_nll = -log_policy.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    # KL(π₀ ‖ π_θ) at every completion position (P-first: the prior is the target)
    token_kl = kl(
        prior_logits.to(dtype), policy_logits.to(dtype), mask=completion, reduction="none"
    )
    ce = sequence_mean(token_nll, completion)
    mean_kl = sequence_mean(token_kl, completion)
    if clamp_kl:
        mean_kl = mean_kl.clamp_min(0.0)
    per_sequence = ce + beta * mean_kl
    return finish_sequences(per_sequence, completion, reduction, normalizer, sequence_keep)
