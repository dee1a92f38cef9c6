r"""GTPO: GRPO without KL, with conflict-token protection and an entropy filter.

GTPO (Simoni et al. 2025) keeps GRPO's group-normalised advantages but drops the KL term and
the reference model (β = 0), and instead controls two failure modes of GRPO:

**Conflict tokens** (:func:`conflict_token_weights`). In a group, token :math:`o_{i,t}`
*conflicts* when the same (position, token id) appears in at least one positive-advantage and
at least one negative-advantage completion, so GRPO pushes it up and down at once (typically
shared formatting tokens). As in the official code, only the run of conflicts from the start
(a shared prefix, positions aligned at the start) and, separately, the run from the end
(positions aligned at each completion's last token) count. Weights:

.. math::

    \delta_{i,t} = \delta^{\rightarrow}_{i,t}\,\delta^{\leftarrow}_{i,t},\qquad
    \delta^{\cdot}_{i,t} = \begin{cases} 0 & \text{conflict},\ A_i < 0\ \text{(skip the
    negative update)}\\ W & \text{conflict},\ A_i > 0\ \text{(amplify; } W = 2)\\
    1 & \text{otherwise.}\end{cases}

(A token in both runs of a positive completion gets :math:`W^2`, as in the code.)

**Entropy filter** (:func:`gtpo_entropy_shaping`). With the completion's mean token entropy
:math:`\bar H_i`, completions with :math:`\bar H_i > \tau` (τ = 0.7 ≈ ln 2) get advantage 0;
the others :math:`A_i \leftarrow A_i - \lambda \bar H_i` (λ = 0.1).

**Loss** (:func:`gtpo_loss`), on-policy (ratio 1 with gradient),

.. math::

    \ell_i = -\frac{1}{|o_i|}\sum_t \delta_{i,t}\,\tilde A_i\,
    \frac{\pi_\theta(o_{i,t})}{\mathrm{sg}[\pi_\theta(o_{i,t})]},

optionally divided by the number of conflict tokens of the completion (``divide_by_conflicts``;
the official code does this; the paper's normalisation is unverified).

References:
    M. Simoni, A. Fontana, G. Rossolini, A. Saracino, "GTPO: Trajectory-Based Policy
    Optimization in Large Language Models" (v5: "GTPO: Stabilizing Group Relative Policy
    Optimization via Gradient and Entropy Control"), arXiv 2508.03772 (2025); code
    github.com/winstonsmith1897/GTPO (``gtpo_training.py``: ``build_conflict_mask``,
    ``gtpo_compute_loss``; ENT_THRESHOLD 0.7, ENT_SCALE 0.1, W 2).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from divergent._validation import (
    check_bool,
    check_float_tensor,
    check_positive_scalar,
    compute_dtype,
)
from divergent.objectives._sequence_rows import (
    check_group_tensor,
    check_reduction_options,
    check_token_log_probs,
    check_token_mask,
    finish_sequences,
    sequence_mean,
    zero_padding,
)

__all__ = [
    "CONFLICT_WEIGHT",
    "ENTROPY_SCALE",
    "ENTROPY_THRESHOLD",
    "ConflictTokens",
    "conflict_token_weights",
    "gtpo_entropy_shaping",
    "gtpo_loss",
    "token_entropy",
]

ENTROPY_THRESHOLD = 0.7  # official ENT_THRESHOLD (≈ ln 2)
ENTROPY_SCALE = 0.1  # official ENT_SCALE
CONFLICT_WEIGHT = 2.0  # official W_RAW


class ConflictTokens(NamedTuple):
    """The result of :func:`conflict_token_weights`.

    Attributes:
        weights: δ, float ``(..., group, tokens)`` (0 on padding).
        conflicts: bool, the tokens in the prefix or suffix conflict run.
        n_conflicts: int64 ``(..., group)``, conflict tokens per completion.
    """

    weights: Tensor
    conflicts: Tensor
    n_conflicts: Tensor


def _check_token_ids(token_ids: Any) -> Tensor:
    if (
        not isinstance(token_ids, Tensor)
        or token_ids.dtype == torch.bool
        or token_ids.is_floating_point()
        or token_ids.is_complex()
    ):
        got = token_ids.dtype if isinstance(token_ids, Tensor) else type(token_ids).__name__
        raise ValueError(f"`token_ids` must be an integer tensor (..., group, tokens), got {got}")
    if token_ids.dim() < 2:
        raise ValueError(
            f"`token_ids` must have a group and a token axis, got shape {tuple(token_ids.shape)}"
        )
    return token_ids


def _check_right_padded(mask: Tensor) -> None:
    # True after False along the token axis would make "aligned at the end" ambiguous
    if mask.shape[-1] > 1 and bool((mask[..., 1:] & ~mask[..., :-1]).any()):
        raise ValueError(
            "`mask` must be right-padded (each completion's tokens first, then padding): a True "
            "follows a False on the token axis"
        )


def _conflict_run(ids: Tensor, valid: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """The run from t = 0 of tokens shared (same position, same id) by + and − completions."""
    same = ids.unsqueeze(-2) == ids.unsqueeze(-3)  # (..., i, j, T)
    pos_j = (pos.unsqueeze(-1) & valid).unsqueeze(-3)  # (..., 1, j, T)
    neg_j = (neg.unsqueeze(-1) & valid).unsqueeze(-3)
    raw = (same & pos_j).any(-2) & (same & neg_j).any(-2) & valid
    return torch.cumprod(raw.to(torch.int8), dim=-1).bool()


def conflict_token_weights(
    token_ids: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    conflict_weight: float = CONFLICT_WEIGHT,
) -> ConflictTokens:
    r"""GTPO's conflict-token weights δ for each group of completions.

    See the module docstring for the rule. Completions with :math:`A_i = 0` neither create nor
    receive conflicts (δ = 1 on their tokens).

    Args:
        token_ids: int ``(..., group, tokens)``, the completions' token ids.
        advantages: ``(..., group)``.
        mask: None or bool of ``token_ids``' shape, right-padded (True = a completion token).
        conflict_weight: W > 0 for conflict tokens of positive completions (2).

    Returns:
        :class:`ConflictTokens` (weights in the advantages' float dtype, float32 for
        bf16/fp16).

    Example:
        >>> import torch
        >>> ids = torch.tensor([[[1, 2, 3], [1, 2, 4], [5, 2, 3]]])
        >>> conflict_token_weights(ids, torch.tensor([[1.0, -1.0, -1.0]])).weights
        tensor([[[4., 4., 4.],
                 [0., 0., 1.],
                 [1., 0., 0.]]])
    """
    token_ids = _check_token_ids(token_ids)
    advantages = check_group_tensor(advantages, "advantages", token_ids.shape[:-1])
    tmask = check_token_mask(mask, token_ids.shape, token_ids.device)
    w = check_positive_scalar(conflict_weight, "conflict_weight")
    valid = torch.ones_like(token_ids, dtype=torch.bool) if tmask is None else tmask
    _check_right_padded(valid)
    dtype = compute_dtype(advantages)
    pos, neg = advantages > 0, advantages < 0
    active = (pos | neg).unsqueeze(-1)
    forward = _conflict_run(token_ids, valid, pos, neg) & active
    # aligned at each completion's end: s = L_i − 1 − t (an involution on 0..L_i − 1)
    n_tokens = token_ids.shape[-1]
    lengths = valid.sum(-1, keepdim=True)
    steps = torch.arange(n_tokens, device=token_ids.device)
    mirror = (lengths - 1 - steps).clamp_min(0)
    rev_ids = token_ids.gather(-1, mirror)
    backward_rev = _conflict_run(rev_ids, valid, pos, neg) & active
    backward = backward_rev.gather(-1, mirror) & valid
    posw = torch.where(pos, w, 0.0).to(dtype).unsqueeze(-1)
    one = torch.ones((), dtype=dtype, device=token_ids.device)
    delta = torch.where(forward, posw, one) * torch.where(backward, posw, one)
    delta = delta * valid.to(dtype)
    conflicts = forward | backward
    return ConflictTokens(delta, conflicts, conflicts.sum(-1))


def gtpo_entropy_shaping(
    advantages: Tensor,
    entropies: Tensor,
    *,
    threshold: float = ENTROPY_THRESHOLD,
    scale: float = ENTROPY_SCALE,
) -> Tensor:
    r"""GTPO's entropy filter: :math:`\tilde A_i = A_i - \lambda\bar H_i` if
    :math:`\bar H_i \le \tau`, else 0.

    Args:
        advantages: ``(..., group)``.
        entropies: :math:`\bar H_i`, the completions' mean token entropies (nats), same shape.
        threshold: τ >= 0 (0.7).
        scale: λ >= 0 (0.1).

    Returns:
        The shaped advantages, same shape (float32, or float64 if an input is float64).

    Example:
        >>> import torch
        >>> gtpo_entropy_shaping(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.9]))
        tensor([0.9500, 0.0000])
    """
    advantages = check_float_tensor(advantages, "advantages")
    entropies = check_group_tensor(entropies, "entropies", advantages.shape)
    tau = check_positive_scalar(threshold, "threshold", allow_zero=True)
    lam = check_positive_scalar(scale, "scale", allow_zero=True)
    dtype = compute_dtype(advantages, entropies)
    a, h = advantages.to(dtype), entropies.to(dtype)
    # NaN entropy → NaN advantage (the comparison alone would silently filter it)
    return torch.where(h > tau, torch.zeros_like(a) + 0.0 * h, a - lam * h)


def token_entropy(logits: Tensor) -> Tensor:
    r"""Per-position entropy :math:`H = -\sum_v p_v\log p_v` of softmax(logits) (nats).

    Args:
        logits: ``(..., vocab)``.

    Returns:
        ``(...)``, float32 (float64 for float64 input).
    """
    logits = check_float_tensor(logits, "logits", min_dim=1)
    logp = torch.log_softmax(logits.to(compute_dtype(logits)), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def gtpo_loss(
    logps: Tensor,
    token_ids: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    token_entropies: Tensor | None = None,
    conflict_weight: float = CONFLICT_WEIGHT,
    entropy_threshold: float = ENTROPY_THRESHOLD,
    entropy_scale: float = ENTROPY_SCALE,
    divide_by_conflicts: bool = False,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""GTPO's policy loss: conflict-weighted, entropy-filtered GRPO, no KL.

    .. math::

        \ell_i = -\frac{1}{|o_i|}\sum_t \delta_{i,t}\,\tilde A_i\,
        \frac{\pi_\theta(o_{i,t})}{\mathrm{sg}[\pi_\theta(o_{i,t})]}
        \quad\Big(/\max(1, n^\mathrm{conflict}_i)\text{ with ``divide_by_conflicts``}\Big)

    δ from :func:`conflict_token_weights` (on the signs of ``advantages``), :math:`\tilde A`
    from :func:`gtpo_entropy_shaping` when ``token_entropies`` is given (else
    :math:`\tilde A = A`). The value is :math:`-\frac1{|o_i|}\sum_t\delta_{i,t}\tilde A_i`;
    the gradient :math:`-\frac1{|o_i|}\sum_t\delta_{i,t}\tilde A_i\nabla\log\pi_\theta(o_{i,t})`.

    Args:
        logps: :math:`\log\pi_\theta(o_{i,t})`, ``(..., group, tokens)``, differentiable.
        token_ids: int, same shape.
        advantages: ``(..., group)`` (group-normalised rewards).
        mask: None or bool of ``logps``' shape, right-padded.
        token_entropies: None or the per-position entropies of :math:`\pi_\theta`, same shape
            as ``logps`` (e.g. :func:`token_entropy` of the logits; treated as constants).
        conflict_weight: W (2).
        entropy_threshold: τ (0.7).
        entropy_scale: λ (0.1).
        divide_by_conflicts: divide each completion's loss by its conflict count (min 1), as
            the official code does.
        reduction: ``"none"`` (``(..., group)``) | ``"sum"`` | ``"mean"`` (over completions with
            a kept token).
        normalizer: the mean's denominator instead of the number of kept completions.

    Returns:
        The loss, float32 (float64 if an input is float64).

    Raises:
        ValueError: mismatched shapes, a positive log-probability, a left-padded mask, bad
            options.

    References:
        Simoni et al., GTPO, arXiv 2508.03772 (2025).
    """
    tmask, (logps,) = check_token_log_probs(mask, logps=logps)
    token_ids = _check_token_ids(token_ids)
    if token_ids.shape != logps.shape:
        raise ValueError(
            f"`token_ids` must have the shape of `logps` {tuple(logps.shape)}, got "
            f"{tuple(token_ids.shape)}"
        )
    check_bool(divide_by_conflicts, "divide_by_conflicts")
    check_positive_scalar(entropy_threshold, "entropy_threshold", allow_zero=True)
    check_positive_scalar(entropy_scale, "entropy_scale", allow_zero=True)
    normalizer = check_reduction_options(reduction, normalizer)
    conflict = conflict_token_weights(token_ids, advantages, tmask, conflict_weight=conflict_weight)
    dtype = compute_dtype(logps, advantages)
    adv = advantages.to(dtype).detach()
    if token_entropies is not None:
        token_entropies = check_float_tensor(token_entropies, "token_entropies")
        if token_entropies.shape != logps.shape:
            raise ValueError(
                f"`token_entropies` must have the shape of `logps` {tuple(logps.shape)}, got "
                f"{tuple(token_entropies.shape)}"
            )
        mean_entropy = sequence_mean(token_entropies.to(dtype).detach(), tmask)
        adv = gtpo_entropy_shaping(
            adv, mean_entropy, threshold=entropy_threshold, scale=entropy_scale
        )
    (logps,) = zero_padding(tmask, logps.to(dtype))
    ratio = torch.exp(logps - logps.detach())  # 1, with the gradient of log π
    per_token = -conflict.weights.to(dtype) * adv.unsqueeze(-1) * ratio
    per_sequence = sequence_mean(per_token, tmask)
    if divide_by_conflicts:
        per_sequence = per_sequence / conflict.n_conflicts.clamp_min(1).to(dtype)
    return finish_sequences(per_sequence, tmask, reduction, normalizer)
