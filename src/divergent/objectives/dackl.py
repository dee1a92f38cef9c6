r"""DAC-KL: dynamic adaptive clipping of the teacher distribution, span-level loss, SCRG.

Liu et al. (2024), "Multi-Granularity Semantic Revision for Large Language Model
Distillation" (arXiv 2407.10068), distil with :math:`\mathcal L = \mathcal L_\mathrm{SFT} +
\mathcal L_\mathrm{DAC\text{-}KL} + \mathcal L_\mathrm{span}` on sequences revised by
*sequence correction and re-generation* (SCRG):

* **DAC-KL** (token level): bounds :math:`(l, u)` — quantile levels, predicted per token by a
  small learnable network in the paper — select the teacher's "high-density" region; the
  clipped, renormalised teacher is the target of a KL (:func:`clip_teacher_log_probs`,
  :func:`dackl_loss`).
* **Span loss** (span level): inside a span (the paper's chunker), the element-wise
  (Hadamard) product of adjacent tokens' probability vectors is aligned between teacher and
  student (:func:`span_loss`).
* **SCRG** (sequence level): in a student generation, the token where the student diverges
  most from the teacher is replaced by the teacher's token and the rest is re-generated
  (:func:`most_divergent_positions` here; the generation loop is
  :func:`divergent.train.tiny_lm.correct_and_regenerate`).

No official code exists and the paper leaves the bound network's architecture and training
unspecified (reviewers' remark); the exact clipping rule and the span distance are therefore
readings, stated in each docstring. Bounds are accepted as numbers or per-row tensors, so a
learned bound network can supply them.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import (
    check_mask,
    check_normalizer,
    check_pair,
    check_reduction,
    check_temperature,
    check_tensor,
    compute_dtype,
    finish_rows,
)
from divergent.objectives._common import Objective, Rows, check_ids, check_weights, loss_keywords

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = [
    "DACKLLoss",
    "clip_teacher_log_probs",
    "dackl_loss",
    "most_divergent_positions",
    "span_loss",
]


def _check_level(value: Any, name: str) -> Tensor | float:
    if isinstance(value, Tensor):
        if not torch.is_floating_point(value):
            raise ValueError(f"`{name}` must be a float or a floating-point tensor in [0, 1]")
        if bool(((value < 0) | (value > 1) | value.isnan()).any()):
            raise ValueError(f"`{name}` must lie in [0, 1], got values outside it")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` must be a quantile level in [0, 1], got {value!r}")
    return float(value)


def _row_quantile(sorted_values: Tensor, level: Tensor) -> Tensor:
    """Per-row linear-interpolation quantile (torch.quantile's ``"linear"``) of ascending
    ``sorted_values`` ``(R, C)`` at per-row levels ``(R,)``."""
    position = level * (sorted_values.shape[-1] - 1)
    below = position.floor().long().clamp(0, sorted_values.shape[-1] - 1)
    above = (below + 1).clamp(max=sorted_values.shape[-1] - 1)
    frac = (position - below).to(sorted_values.dtype)
    lo = sorted_values.gather(-1, below[:, None])[:, 0]
    hi = sorted_values.gather(-1, above[:, None])[:, 0]
    return lo + frac * (hi - lo)


def _levels(
    value: Tensor | float, leading: torch.Size, keep: Tensor | None, like: Tensor
) -> Tensor:
    """Levels of the kept rows, ``(kept,)``, in ``like``'s dtype."""
    if isinstance(value, Tensor):
        if value.dim() > 0 and value.shape != leading:
            raise ValueError(
                f"a per-row quantile level must have the leading shape {tuple(leading)}, got "
                f"{tuple(value.shape)}"
            )
        flat = value.to(like.dtype).expand(leading).reshape(-1)
        return flat if keep is None else flat[keep]
    return torch.full((like.shape[0],), value, dtype=like.dtype, device=like.device)


def _clip_rows(log_p: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Clipped, renormalised teacher log-probabilities of rows ``(R, C)``."""
    sorted_log_p = log_p.sort(-1).values
    # quantiles of the probability values (exp is monotone: take them on probabilities)
    v_low = _row_quantile(sorted_log_p.exp(), lower).clamp_min(torch.finfo(log_p.dtype).tiny)
    v_high = _row_quantile(sorted_log_p.exp(), upper)
    clipped = torch.minimum(log_p, v_high.log()[:, None])
    # a value equal to the lower quantile is kept (so lower=0 keeps every class); the
    # row's largest value is always ≥ v_low, so a kept row never empties
    kept = log_p.exp() >= v_low[:, None]
    clipped = clipped.masked_fill(~kept, float("-inf"))
    return clipped - clipped.logsumexp(-1, keepdim=True)


def clip_teacher_log_probs(
    teacher_logits: Tensor,
    *,
    lower: float | Tensor = 0.0,
    upper: float | Tensor = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    r"""DAC-KL's clipped teacher distribution, as log-probabilities.

    With :math:`p = \mathrm{softmax}(t/T)` over the C classes of a row and :math:`v_l,
    v_u` the :math:`l`- and :math:`u`-quantiles of the values :math:`\{p_i\}` (linear
    interpolation, as ``torch.quantile``):

    .. math::

        \tilde p_i = \frac{\min(p_i, v_u)\,\mathbb 1[p_i \ge v_l]}
                          {\sum_j \min(p_j, v_u)\,\mathbb 1[p_j \ge v_l]}.

    The low tail (classes below the lower quantile) is cut and over-confident peaks are
    clamped to the upper quantile: the "high-density region" of the teacher. ``lower=0`` and
    ``upper=1`` return the teacher's own log-probabilities. (Reading of the paper: it
    describes clipping to a region between predicted quantile bounds; whether the peak is
    clamped or removed is not specified — clamping keeps the teacher's argmax.)

    Args:
        teacher_logits: ``(..., C)``.
        lower, upper: quantile levels in [0, 1], ``lower <= upper``: numbers, or tensors of the
            leading shape (per-row bounds from a bound network).
        temperature: T > 0 dividing the logits.

    Returns:
        ``(..., C)`` normalised log-probabilities (−inf on cut classes), compute dtype.

    Example:
        >>> t = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
        >>> clip_teacher_log_probs(t, lower=0.25, upper=0.9).exp().round(decimals=4)
        tensor([0.4944, 0.3371, 0.1685, 0.0000])

    References:
        Liu et al. 2024, "Multi-Granularity Semantic Revision for Large Language Model
        Distillation", arXiv:2407.10068.
    """

    t = check_tensor(teacher_logits, "teacher_logits")
    lower, upper = _check_level(lower, "lower"), _check_level(upper, "upper")
    tau = check_temperature(temperature)
    dtype = compute_dtype(t)
    leading = t.shape[:-1]
    rows = (t.to(dtype) / tau).log_softmax(-1).reshape(-1, t.shape[-1])
    lo, hi = _levels(lower, leading, None, rows), _levels(upper, leading, None, rows)
    if bool((lo > hi).any()):
        raise ValueError(f"`lower` must not exceed `upper`, got lower={lower!r}, upper={upper!r}")
    return _clip_rows(rows, lo, hi).reshape(t.shape)


@loss_keywords
def dackl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    lower: float | Tensor = 0.0,
    upper: float | Tensor = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 0.0,
    kd_weight: float = 1.0,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""DAC-KL: KL from the clipped teacher to the student, plus an optional SFT term.

    .. math::

        \ell = w_\mathrm{kd}\,T^2\,\mathrm{KL}\big(\tilde p_T \,\|\, \mathrm{softmax}(s/T)\big)
             + w_\mathrm{ce}\,\mathrm{CE}(s, y),

    with :math:`\tilde p_T` from :func:`clip_teacher_log_probs` (classes cut from the teacher
    contribute 0: :math:`0\log 0 = 0`). At ``lower=0, upper=1`` this is the plain token KL.

    Args:
        student_logits: ``(..., C)``, differentiable.
        teacher_logits: ``(..., C)`` (detach a frozen teacher yourself).
        labels: next-token ids of the leading shape; needed when ``ce_weight > 0``; rows with
            ``ignore_index`` are dropped.
        lower, upper: quantile levels of the clipping (numbers or per-row tensors).
        temperature: T > 0 dividing both sides (the KL is scaled by T²).
        ce_weight, kd_weight: weights ≥ 0.
        ignore_index, mask, reduction, normalizer: the shared row options.

    Returns:
        Scalar (``"mean"``/``"sum"``) or per-row values (``"none"``).

    Example:
        >>> s = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
        >>> t = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
        >>> dackl_loss(s, t, lower=0.3, upper=1.0)
        tensor(0.3390)

    References:
        Liu et al. 2024, "Multi-Granularity Semantic Revision for Large Language Model
        Distillation", arXiv:2407.10068.
    """
    lower, upper = _check_level(lower, "lower"), _check_level(upper, "upper")
    tau = check_temperature(temperature)
    ce_w, kd_w = check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
    r = Rows.select(student_logits, teacher_logits, labels, row_options, "dackl", ce_weight=ce_w)
    s, t = r.logits()
    log_q = (s / tau).log_softmax(-1)
    log_t = (t / tau).log_softmax(-1)
    lo = _levels(lower, r.leading, r.keep, log_t)
    hi = _levels(upper, r.leading, r.keep, log_t)
    if bool((lo > hi).any()):
        raise ValueError(f"`lower` must not exceed `upper`, got lower={lower!r}, upper={upper!r}")
    log_p = _clip_rows(log_t, lo, hi).detach()
    p = log_p.exp()
    # where p = 0 the term is 0 (0·log 0); mask before multiplying so -inf never meets 0
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    rows = kd_w * tau * tau * terms.sum(-1)
    return r.finish(rows)


def span_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    span_ids: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    r"""DAC-KL's span-level loss on adjacent tokens of one span.

    For positions :math:`t, t+1` of the same span (``span_ids[..., t] == span_ids[..., t+1]
    >= 0``) the Hadamard product of the two next-token distributions, renormalised,

    .. math::

        h_t \propto p(\cdot\mid t) \odot p(\cdot\mid t+1),

    is matched by a KL, teacher first: :math:`\ell_t = T^2\,\mathrm{KL}(h^T_t \,\|\, h^S_t)`.
    (Reading of the paper: it aligns the Hadamard products of adjacent tokens' probability
    vectors inside chunker spans; the distance used on them is not given in the reviews, and
    KL on the renormalised products is the choice here.)

    Args:
        student_logits, teacher_logits: ``(B, L, C)``.
        span_ids: int ``(B, L)``; equal adjacent ids ≥ 0 form a pair; negative ids are
            outside every span.
        temperature: T > 0 dividing both sides.
        reduction, normalizer: ``"none"`` gives ``(B, L−1)`` (0 where no pair), ``"mean"``
            averages over the pairs.

    Example:
        >>> s = torch.zeros(1, 3, 4)
        >>> t = torch.log(torch.tensor([[[0.7, 0.1, 0.1, 0.1]] * 3]))
        >>> span_loss(s, t, torch.tensor([[0, 0, -1]]))  # one pair
        tensor(1.1023)

    References:
        Liu et al. 2024, arXiv:2407.10068.
    """

    s, t = check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if s.dim() != 3:
        raise ValueError(f"`student_logits` must have shape (B, L, C), got {tuple(s.shape)}")
    check_reduction(reduction)
    normalizer = check_normalizer(normalizer, reduction)
    tau = check_temperature(temperature)
    check_ids(span_ids, "span_ids", s.shape[:2])
    dtype = compute_dtype(s, t)
    log_q = (s.to(dtype) / tau).log_softmax(-1)
    log_p = (t.to(dtype) / tau).log_softmax(-1)
    pair = (span_ids[:, :-1] == span_ids[:, 1:]) & (span_ids[:, :-1] >= 0)
    leading = pair.shape
    keep = pair.reshape(-1)
    hq = (log_q[:, :-1] + log_q[:, 1:]).reshape(-1, s.shape[-1])[keep]
    hp = (log_p[:, :-1] + log_p[:, 1:]).reshape(-1, s.shape[-1])[keep]
    hq = hq - hq.logsumexp(-1, keepdim=True)
    hp = hp - hp.logsumexp(-1, keepdim=True)
    rows = tau * tau * (hp.exp() * (hp - hq)).sum(-1)
    return finish_rows(rows, keep=keep, leading=leading, reduction=reduction, normalizer=normalizer)


def most_divergent_positions(
    student_logits: Tensor, teacher_logits: Tensor, *, mask: Tensor | None = None
) -> Tensor:
    r"""SCRG's choice: per sequence, the position where the student diverges most from the
    teacher, :math:`\arg\max_t \mathrm{KL}(p_T(\cdot\mid t)\,\|\,p_S(\cdot\mid t))` over
    the positions ``mask`` keeps (all when None).

    Args:
        student_logits, teacher_logits: ``(B, L, C)``.
        mask: bool ``(B, L)``, True where a position may be chosen (at least one per row).

    Returns:
        int64 ``(B,)`` positions.

    Example:
        >>> s = torch.zeros(1, 3, 2)
        >>> t = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]]])
        >>> most_divergent_positions(s, t).tolist()
        [1]
    """

    s, t = check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if s.dim() != 3:
        raise ValueError(f"`student_logits` must have shape (B, L, C), got {tuple(s.shape)}")
    keep = check_mask(mask, s.shape[:2], s.device)
    log_q = s.double().log_softmax(-1)
    log_p = t.double().log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    if keep is not None:
        if not bool(keep.any(-1).all()):
            raise ValueError("`mask` must keep at least one position in every sequence")
        kl = kl.masked_fill(~keep, float("-inf"))
    return kl.argmax(-1)


class DACKLLoss(Objective):
    """Module form of :func:`dackl_loss` (the token-level DAC-KL term, optionally + SFT).

    Example:
        >>> loss = DACKLLoss(lower=0.5, upper=0.99, ce_weight=1.0)
        >>> s, t = torch.zeros(4, 6, requires_grad=True), torch.randn(4, 6)
        >>> loss(s, t, torch.tensor([0, 1, 2, 3])).backward(); s.grad.shape
        torch.Size([4, 6])
    """

    function = staticmethod(dackl_loss)
