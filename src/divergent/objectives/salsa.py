r"""SALSA: a weight-averaged "soup" reference for KL-regularised RLHF.

SALSA (Chegini et al. 2024) trains two (or more) SFT models :math:`\theta_1, \dots, \theta_k`
independently from the same pre-trained model, averages them in weight space,

.. math:: \theta_\mathrm{soup} = \sum_i w_i\,\theta_i, \qquad w_i \ge 0,\ \sum_i w_i = 1

(uniform :math:`w_i = 1/k` in the paper), and runs the usual KL-regularised RL against the
soup instead of a single SFT model:

.. math::

    \max_\theta\ \mathbb E_{y\sim\pi_\theta}[r(y)]
    - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\theta_\mathrm{soup}}).

* :func:`weight_soup` averages state dicts; :func:`model_soup` builds the soup model.
* :func:`salsa_loss` is the sampled policy-gradient loss of that objective on sequences
  (REINFORCE with the KL placed in the reward, as PPO-RLHF does, or in the loss).

The soup only changes which reference the KL is taken against; everything else is standard
KL-regularised RL, so :func:`salsa_loss` works with any reference (pass a single SFT model's
log-probabilities to get the PPO-RLHF baseline the paper compares with).

References:
    A. Chegini, H. Kazemi, I. Mirzadeh, D. Yin, M. Horton, M. Nabi, M. Farajtabar,
    K. Alizadeh, "SALSA: Soup-based Alignment Learning for Stronger Adaptation in RLHF",
    arXiv 2411.01798 (2024).
    M. Wortsman et al., "Model soups", ICML 2022, arXiv 2203.05482.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from divergent._validation import check_choice, check_positive_scalar, compute_dtype
from divergent.objectives._sequence_rows import (
    check_group_tensor,
    check_reduction_options,
    check_token_log_probs,
    finish_sequences,
    sequence_sum,
    zero_padding,
)
from divergent.rl.policy_kl import policy_kl

__all__ = ["BASELINES", "KL_PLACEMENTS", "model_soup", "salsa_loss", "weight_soup"]

KL_PLACEMENTS: tuple[str, ...] = ("reward", "loss")
BASELINES: tuple[str, ...] = ("none", "leave_one_out")


def _soup_weights(weights: Any, k: int) -> list[float]:
    if weights is None:
        return [1.0 / k] * k
    if isinstance(weights, Tensor):
        weights = weights.detach().reshape(-1).tolist()
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(
            f"`weights` must be None or a sequence of {k} numbers >= 0 summing to 1, got "
            f"{weights!r}"
        ) from None
    if len(values) != k:
        raise ValueError(f"`weights` must have one entry per model ({k}), got {len(values)}")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"`weights` must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"`weights` must sum to 1 (a convex combination of the models), got sum {sum(values)!r}"
        )
    return values


def weight_soup(
    state_dicts: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | Tensor | None = None
) -> dict[str, Tensor]:
    r"""The weight-space average :math:`\theta_\mathrm{soup} = \sum_i w_i\theta_i` of state dicts.

    Floating-point entries are averaged in float64 and cast back to their dtype; other
    entries (integer buffers such as ``num_batches_tracked``) must be equal in every state dict
    and are copied.

    Args:
        state_dicts: k >= 1 mappings name -> tensor with the same names, shapes and dtypes
            (``model.state_dict()`` of models of one architecture).
        weights: None (uniform, :math:`w_i = 1/k`, the SALSA soup) or k numbers >= 0 summing
            to 1.

    Returns:
        A new dict with the same names; tensors are new (the inputs are not modified) and
        detached.

    Raises:
        ValueError: no state dict, different names / shapes / dtypes, unequal non-float
            entries, or weights that are not a convex combination.

    Example:
        >>> import torch
        >>> a = {"w": torch.tensor([0.0, 2.0])}; b = {"w": torch.tensor([2.0, 4.0])}
        >>> weight_soup([a, b])["w"]
        tensor([1., 3.])

    References:
        Chegini et al., SALSA, arXiv 2411.01798 (2024); Wortsman et al., Model soups,
        arXiv 2203.05482 (2022).
    """
    if isinstance(state_dicts, Mapping) or not isinstance(state_dicts, Sequence):
        raise ValueError(
            "`state_dicts` must be a sequence (list / tuple) of state dicts, got "
            f"{type(state_dicts).__name__}"
        )
    if len(state_dicts) == 0:
        raise ValueError("`state_dicts` is empty; a soup needs at least one model")
    for i, sd in enumerate(state_dicts):
        if not isinstance(sd, Mapping):
            raise ValueError(f"`state_dicts[{i}]` must be a mapping name -> tensor, got {type(sd)}")
    w = _soup_weights(weights, len(state_dicts))
    names = list(state_dicts[0].keys())
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd.keys()) != names and set(sd.keys()) != set(names):
            missing = sorted(set(names) ^ set(sd.keys()))
            raise ValueError(
                f"`state_dicts[{i}]` has different parameter names from `state_dicts[0]` "
                f"(differing: {missing[:5]})"
            )
    soup: dict[str, Tensor] = {}
    for name in names:
        tensors = [sd[name] for sd in state_dicts]
        first = tensors[0]
        if not isinstance(first, Tensor):
            raise ValueError(f"`state_dicts[0][{name!r}]` is not a tensor ({type(first)})")
        for i, t in enumerate(tensors[1:], start=1):
            if not isinstance(t, Tensor) or t.shape != first.shape or t.dtype != first.dtype:
                got = (tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t)
                raise ValueError(
                    f"`state_dicts[{i}][{name!r}]` must match `state_dicts[0][{name!r}]` "
                    f"(shape {tuple(first.shape)}, dtype {first.dtype}), got {got}"
                )
        if torch.is_floating_point(first) or torch.is_complex(first):
            acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
            for wi, t in zip(w, tensors):
                acc = acc + wi * t.detach().to(device=first.device, dtype=torch.float64)
            soup[name] = acc.to(first.dtype)
        else:
            for i, t in enumerate(tensors[1:], start=1):
                if not torch.equal(t.to(first.device), first):
                    raise ValueError(
                        f"non-float entry {name!r} differs between `state_dicts[0]` and "
                        f"`state_dicts[{i}]`; integer buffers cannot be averaged"
                    )
            soup[name] = first.detach().clone()
    return soup


def model_soup(
    models: Sequence[nn.Module], weights: Sequence[float] | Tensor | None = None
) -> nn.Module:
    r"""A new model whose weights are :func:`weight_soup` of ``models``' state dicts.

    The result is a deep copy of ``models[0]`` (same architecture, training mode and device)
    with the averaged state loaded; the inputs are not modified.

    Args:
        models: k >= 1 modules of one architecture.
        weights: None (uniform) or k numbers >= 0 summing to 1.

    Returns:
        The soup module :math:`\theta_\mathrm{soup} = \sum_i w_i\theta_i`.

    References:
        Chegini et al., SALSA, arXiv 2411.01798 (2024).
    """
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or len(models) == 0:
        raise ValueError("`models` must be a non-empty sequence of torch.nn.Module")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise ValueError(f"`models[{i}]` must be a torch.nn.Module, got {type(m).__name__}")
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(weight_soup([m.state_dict() for m in models], weights))
    return soup


def salsa_loss(
    logps: Tensor,
    soup_logps: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
    *,
    beta: float = 0.05,
    kl_estimator: str = "k1",
    kl_in: str = "reward",
    baseline: str = "leave_one_out",
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""Policy-gradient loss of :math:`\mathbb E_\pi[r] - \beta\mathrm{KL}(\pi\|\pi_\mathrm{soup})`.

    Sequences :math:`y_i \sim \pi_\theta` with tokens :math:`a_{i,t}`; per-token estimates
    :math:`k_{i,t}` (Schulman's ``kl_estimator`` of :math:`\log\pi_\theta(a_{i,t}) -
    \log\pi_\mathrm{soup}(a_{i,t})`, :func:`divergent.rl.policy_kl.policy_kl`) and
    :math:`K_i = \sum_t m_{i,t} k_{i,t}`; :math:`S_i = \sum_t m_{i,t}\log\pi_\theta(a_{i,t})`.

    * ``kl_in="reward"`` (PPO-RLHF placement): :math:`\tilde r_i = r_i - \beta\,\mathrm{sg}[K_i]`,
      :math:`\ell_i = -(\tilde r_i - b_i)\,S_i`.
    * ``kl_in="loss"`` (GRPO placement): :math:`\ell_i = -(r_i - b_i)\,S_i + \beta K_i`.

    The baseline :math:`b_i` is 0 (``"none"``) or the leave-one-out mean of the other kept
    sequences' (shaped) rewards (``"leave_one_out"``, RLOO; unbiased). With ``kl_in="reward"``
    and ``kl_estimator="k1"``, :math:`\mathbb E[\nabla\ell_i] = -\nabla J_\beta(\pi_\theta)`
    exactly (the score-function gradient of the KL-regularised objective); with
    ``kl_in="loss"`` the KL gradient is the estimator's (k2: reverse KL, k3: forward KL
    :math:`\mathrm{KL}(\pi_\mathrm{soup}\|\pi_\theta)`, k1: zero in expectation).

    Args:
        logps: :math:`\log\pi_\theta` of the sampled tokens, ``(batch, tokens)`` (any leading
            shape, token axis last), differentiable.
        soup_logps: :math:`\log\pi_\mathrm{soup}` of the same tokens, same shape (no grad).
        rewards: sequence rewards :math:`r_i`, the leading shape ``(batch,)``.
        mask: bool, ``logps``' shape; True = a completion token. None: every token.
        beta: KL coefficient β >= 0.
        kl_estimator: ``"k1"`` | ``"k2"`` | ``"k3"``.
        kl_in: ``"reward"`` | ``"loss"``.
        baseline: ``"none"`` | ``"leave_one_out"`` (over all kept sequences of the batch).
        reduction: ``"none"`` (one value per sequence) | ``"sum"`` | ``"mean"`` (over sequences
            with a kept token).
        normalizer: the mean's denominator instead of the number of kept sequences.

    Returns:
        The loss, float32 (float64 if an input is float64): a scalar, or the leading shape.

    Raises:
        ValueError: mismatched shapes, a positive / +inf log-probability on a kept token,
            an unknown option, β < 0.

    References:
        Chegini et al., SALSA, arXiv 2411.01798 (2024); Ziegler et al., arXiv 1909.08593;
        Ahmadian et al. (RLOO), arXiv 2402.14740.
    """
    tmask, (logps, soup_logps) = check_token_log_probs(
        mask, min_dim=1, logps=logps, soup_logps=soup_logps, allow_neg_inf=("soup_logps",)
    )
    rewards = check_group_tensor(rewards, "rewards", logps.shape[:-1])
    beta = check_positive_scalar(beta, "beta", allow_zero=True)
    check_choice(kl_in, "kl_in", KL_PLACEMENTS)
    check_choice(baseline, "baseline", BASELINES)
    normalizer = check_reduction_options(reduction, normalizer)
    dtype = compute_dtype(logps, soup_logps, rewards)
    logps, soup_logps, rewards = logps.to(dtype), soup_logps.to(dtype), rewards.to(dtype)
    # masked tokens: a harmless 0 − 0 so the estimator stays finite there
    logps_k, soup_k = zero_padding(tmask, logps, soup_logps)
    per_token_kl = policy_kl(logps_k, soup_k, kind=kl_estimator, reduction="none")
    kl_sum = sequence_sum(per_token_kl, tmask)
    score = sequence_sum(logps, tmask)
    shaped = rewards - beta * kl_sum.detach() if kl_in == "reward" else rewards
    advantage = shaped.detach() - _leave_one_out(shaped.detach(), tmask, baseline)
    per_sequence = -advantage * score
    if kl_in == "loss":
        per_sequence = per_sequence + beta * kl_sum
    return finish_sequences(per_sequence, tmask, reduction, normalizer)


def _leave_one_out(values: Tensor, mask: Tensor | None, baseline: str) -> Tensor:
    """The mean of the other kept sequences' values (0 for ``"none"`` or a single sequence)."""
    if baseline == "none":
        return torch.zeros_like(values)
    flat = values.reshape(-1)
    kept = torch.ones_like(flat) if mask is None else mask.any(-1).reshape(-1).to(flat.dtype)
    safe = torch.where(kept > 0, flat, torch.zeros_like(flat))
    total, count = safe.sum(), kept.sum()
    others = (count - kept).clamp_min(1.0)
    return ((total - safe) / others).reshape(values.shape)
