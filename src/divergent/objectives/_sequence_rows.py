r"""Validation and reduction shared by the sequence-level alignment objectives (private).

The alignment objectives of :mod:`~divergent.objectives.salsa`,
:mod:`~divergent.objectives.superhf`, :mod:`~divergent.objectives.apo` and
:mod:`~divergent.objectives.gtpo` take per-token log-probabilities of sampled tokens with a
leading *sequence* shape (``(batch,)`` or ``(prompts, group)``) and a trailing token axis,
plus a bool token ``mask`` (True = a completion token, False = padding). A sequence is a
*row*: ``reduction="none"`` returns one value per sequence, ``"sum"`` / ``"mean"`` reduce over
the kept sequences (a sequence with no kept token is not counted), ``normalizer`` overrides the
mean's denominator, as everywhere in the library (:func:`divergent._validation.finish_rows`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    check_mask,
    check_normalizer,
    check_reduction,
    check_same_device,
    finish_rows,
    is_traced,
    mass_tolerance,
    row_label,
)

__all__ = [
    "check_group_tensor",
    "check_log_probs",
    "check_reduction_options",
    "check_same_shape",
    "check_token_log_probs",
    "check_token_mask",
    "finish_sequences",
    "sequence_mean",
    "sequence_sum",
    "zero_padding",
]


def check_same_shape(reference: Tensor, reference_name: str, **others: Any) -> list[Tensor]:
    """Each of ``others`` as a float tensor of ``reference``'s shape and device."""
    out = []
    for name, x in others.items():
        x = check_float_tensor(x, name)
        if x.shape != reference.shape:
            raise ValueError(
                f"`{name}` must have the shape of `{reference_name}` {tuple(reference.shape)}, "
                f"got {tuple(x.shape)}"
            )
        check_same_device(x, name, reference, reference_name)
        out.append(x)
    return out


def check_log_probs(
    x: Any, name: str, *, min_dim: int = 2, keep: Tensor | None = None, allow_neg_inf: bool = False
) -> Tensor:
    """A float tensor of log-probabilities (``<= 0`` up to rounding, no +inf) on kept entries.

    NaN passes through (it propagates to the sequence's value). A positive or +inf entry is a
    ``ValueError`` naming the argument and the entry.
    """
    x = check_float_tensor(x, name, min_dim=min_dim)
    if is_traced(x):
        return x
    tol = mass_tolerance(x.dtype)
    bad = (x > tol) | torch.isposinf(x)
    if not allow_neg_inf:
        bad = bad | torch.isneginf(x)
    if keep is not None:
        bad = bad & keep
    if bool(bad.any()):
        idx = int(bad.reshape(-1).nonzero()[0, 0])
        value = float(x.reshape(-1)[idx])
        allowed = "finite and <= 0" if not allow_neg_inf else "<= 0 (−inf allowed)"
        raise ValueError(
            f"`{name}` holds log-probabilities, which must be {allowed}; got {value!r} at entry "
            f"{row_label(idx, x.shape)} (mask padding entries with `mask`)"
        )
    return x


#: ``mask``: None (every token kept) or a bool tensor of the token shape, moved to the device
#: (:func:`divergent._validation.check_mask` with the token mask's wording)
check_token_mask = functools.partial(
    check_mask,
    shape_name="token shape",
    meaning="True = a completion token, False = padding",
    of="the log-probabilities",
    say_none=True,
)


def check_token_log_probs(
    mask: Any, *, min_dim: int = 2, allow_neg_inf: tuple[str, ...] = (), **log_probs: Any
) -> tuple[Tensor | None, list[Tensor]]:
    """The token ``mask`` and the per-token log-probability tensors of a sequence objective.

    The first of ``log_probs`` (by keyword order) sets the shape and device: it is a float
    tensor with at least ``min_dim`` axes, the others must match it
    (:func:`check_same_shape`), ``mask`` is checked against that token shape
    (:func:`check_token_mask`) and every tensor against the log-probability contract on the
    kept tokens (:func:`check_log_probs`; −inf is allowed for the names in ``allow_neg_inf``,
    e.g. a reference policy that may give a sampled token no mass).

    Returns:
        ``(mask, [tensors in keyword order])``.
    """
    (first_name, first), *others = log_probs.items()
    first = check_float_tensor(first, first_name, min_dim=min_dim)
    tensors = [first, *check_same_shape(first, first_name, **dict(others))]
    tmask = check_token_mask(mask, first.shape, first.device)
    for name, x in zip(log_probs, tensors):
        check_log_probs(x, name, min_dim=min_dim, keep=tmask, allow_neg_inf=name in allow_neg_inf)
    return tmask, tensors


def zero_padding(mask: Tensor | None, *tensors: Tensor) -> list[Tensor]:
    """``tensors`` with the entries where ``mask`` is False replaced by 0.

    Padding may hold anything (NaN, −inf); a harmless 0 there keeps ratios and KL estimators
    finite before the masked sums drop those entries. ``mask=None`` returns the tensors as given.
    """
    if mask is None:
        return list(tensors)
    return [torch.where(mask, x, torch.zeros_like(x)) for x in tensors]


def check_group_tensor(x: Any, name: str, shape: torch.Size, *, dtype: str = "float") -> Tensor:
    """A per-sequence tensor of the leading (sequence) ``shape``: float, or bool."""
    if dtype == "bool":
        if not isinstance(x, Tensor) or x.dtype != torch.bool:
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"`{name}` must be a bool tensor of shape {tuple(shape)}, got {got}")
    else:
        x = check_float_tensor(x, name)
    if x.shape != shape:
        raise ValueError(
            f"`{name}` must have the sequence shape {tuple(shape)} (the log-probabilities' shape "
            f"without the token axis), got {tuple(x.shape)}"
        )
    return x


def _float_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like)
    return mask.to(like.dtype)


def sequence_sum(values: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\sum_t m_t v_t` over the last (token) axis; masked entries (even NaN) give 0."""
    if mask is None:
        return values.sum(-1)
    return torch.where(mask, values, torch.zeros_like(values)).sum(-1)


def sequence_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\sum_t m_t v_t / \max(1, \sum_t m_t)` over the last (token) axis."""
    count = _float_mask(mask, values).sum(-1).clamp_min(1.0)
    return sequence_sum(values, mask) / count


def finish_sequences(
    per_sequence: Tensor,
    mask: Tensor | None,
    reduction: str,
    normalizer: Any,
    sequence_keep: Tensor | None = None,
) -> Tensor:
    """Reduce one value per sequence: kept = has a kept token (and ``sequence_keep``)."""
    leading = per_sequence.shape
    keep = None if mask is None else mask.any(-1)
    if sequence_keep is not None:
        keep = sequence_keep if keep is None else keep & sequence_keep
    flat_keep = None if keep is None else keep.reshape(-1)
    rows = per_sequence.reshape(-1)
    if flat_keep is not None:
        rows = rows[flat_keep]
    return finish_rows(
        rows, keep=flat_keep, leading=leading, reduction=reduction, normalizer=normalizer
    )


def check_reduction_options(reduction: Any, normalizer: Any) -> Any:
    """Validate ``reduction`` and ``normalizer``; return the checked normalizer."""
    check_reduction(reduction)
    return check_normalizer(normalizer, reduction)
