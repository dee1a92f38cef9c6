r"""The functional API: ``divergent.divergence(name, p, q, ...)`` and one shortcut per name.

Conventions (the public contract):

* ``p`` is the target / teacher / reference P, ``q`` the model / student Q; every function
  returns D(P‖Q). ``kl(p, q)`` is KL(P‖Q), ``reverse_kl(p, q)`` is KL(Q‖P).
* Inputs are logits by default (``inputs="logits"``), or ``"log_probs"`` / ``"probs"``;
  the class axis is last, any leading shape. ``temperature`` divides both sides.
* ``mask`` (bool, leading shape, True = keep) selects rows; ``reduction`` is ``"none"``
  (one value per row, masked rows 0), ``"sum"`` or ``"mean"`` (over unmasked rows);
  ``normalizer`` overrides the mean's denominator (e.g. a token count across gradient
  accumulation steps). A fully masked batch gives 0 with zero gradient.
* bf16 / fp16 inputs are computed in fp32 and the result is fp32; float64 stays float64.
* Both arguments are differentiable.
* Rows are ``+inf`` exactly where the divergence is infinite (see each entry's
  ``infinite_when``); the gradient there is not defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from divergent.core._inputs import (
    check_inputs_kind,
    check_no_nan,
    check_pair,
    check_row_options,
    compute_dtype,
    reduce_rows,
    to_log_probs,
)
from divergent.core.registry import Divergence, DivergenceLike, resolve_divergence

__all__ = [
    "alpha",
    "divergence",
    "hellinger",
    "jeffreys",
    "js",
    "kl",
    "neyman_chi2",
    "pearson_chi2",
    "renyi",
    "reverse_kl",
    "row_values",
    "skew_kl",
    "skew_reverse_kl",
    "soft_cross_entropy",
    "tv",
]


def row_values(
    spec: Divergence,
    params: dict[str, float],
    p_rows: Tensor,
    q_rows: Tensor,
    *,
    inputs: str = "logits",
    temperature: float = 1.0,
) -> Tensor:
    """Divergence of each row of two validated ``(rows, classes)`` tensors (reference path).

    Converts both sides to normalised log-probabilities in the compute dtype and evaluates the
    entry's row function with autograd.
    """
    dtype = compute_dtype(p_rows, q_rows)
    lp = to_log_probs(p_rows, inputs, temperature, dtype, "p")
    lq = to_log_probs(q_rows, inputs, temperature, dtype, "q")
    return spec.row_fn(lp, lq, **params)


def divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
    engine: str | None = None,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) between the categorical distributions given by ``p`` (target) and ``q`` (model).

    Args:
        name: a registered name (``"kl"``, ``"js"`` ... see ``divergent list``), a
            :class:`~divergent.core.registry.Divergence`, or a generator callable f(t) for
            D_f(P‖Q) = Σ q f(p/q).
        p: target / teacher, shape ``(..., C)``.
        q: model / student, same shape.
        temperature: divides both sides' logits (T > 0). No T² factor is applied here;
            distillation objectives apply it.
        mask: bool tensor of shape ``(...)``; False rows are skipped.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: denominator of ``"mean"`` instead of the number of unmasked rows.
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``.
        check_nan: raise a ``ValueError`` if an input contains NaN (one extra pass).
        engine: ``"auto"`` (default, see :func:`divergent.set_engine`: the row-chunked engine
            of :mod:`divergent.core.chunked` for large inputs, O(chunk × V) memory and
            gradients computed in the same pass), ``"chunked"`` or ``"reference"`` (plain
            autograd through the entry's row function; needed for double backward).
        **params: the divergence's parameters (``beta`` for ``js``, ``alpha``, ``order`` ...).

    Returns:
        A scalar (``"sum"``, ``"mean"``) or a tensor of the leading shape (``"none"``), in
        float32 (float64 if an input is float64).

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.divergence("kl", p, q)
        tensor(1.1504)
        >>> divergent.divergence("js", p, q, beta=0.5) <= torch.log(torch.tensor(2.0))
        tensor(True)
    """
    spec = resolve_divergence(name)
    bound = spec.bind(params)
    p, q = check_pair(p, q)
    check_inputs_kind(inputs)
    leading = p.shape[:-1]
    temperature, norm, keep = check_row_options(
        reduction=reduction,
        temperature=temperature,
        normalizer=normalizer,
        mask=mask,
        leading_shape=leading,
        device=p.device,
    )
    if check_nan:
        check_no_nan(p, "p")
        check_no_nan(q, "q")
    from divergent.core.chunked import engine_divergence, use_engine

    if use_engine(engine, p, q, inputs):
        return engine_divergence(spec, bound, p, q, keep=keep, reduction=reduction,
                                 normalizer=norm, inputs=inputs, temperature=temperature)
    n_classes = p.shape[-1]
    p_rows, q_rows = p.reshape(-1, n_classes), q.reshape(-1, n_classes)
    if keep is not None:  # flattened, so that a 0-d leading shape (one row) works too
        keep = keep.reshape(-1)
        p_rows, q_rows = p_rows[keep], q_rows[keep]
    count: int | Tensor = p_rows.shape[0]
    rows = row_values(spec, bound, p_rows, q_rows, inputs=inputs, temperature=temperature)
    if reduction == "none":
        if keep is None:
            return rows.reshape(leading)
        full = torch.zeros(keep.shape, dtype=rows.dtype, device=rows.device)
        return full.index_put((keep,), rows).reshape(leading)
    return reduce_rows(rows, reduction, count=count, normalizer=norm)


# --------------------------------------------------------------------------------------------
# one shortcut per registered name
# --------------------------------------------------------------------------------------------
def kl(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Forward KL, :math:`\mathrm{KL}(P\|Q) = \sum_x P(x)\log\frac{P(x)}{Q(x)}` (true KL).

    Includes the teacher entropy (unlike a soft cross-entropy); +∞ where P has mass and Q
    has none.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.kl(p, q)
        tensor(1.1504)
    """
    return divergence("kl", p, q, temperature=temperature, mask=mask, reduction=reduction,
                      normalizer=normalizer, inputs=inputs, check_nan=check_nan)


def reverse_kl(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Reverse KL, :math:`\mathrm{KL}(Q\|P) = \sum_x Q(x)\log\frac{Q(x)}{P(x)}`.

    Mode-seeking when minimised over the model Q.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.reverse_kl(p, q) == divergent.kl(q, p)
        tensor(True)
    """
    return divergence("reverse_kl", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def js(
    p: Tensor,
    q: Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Generalised Jensen–Shannon divergence (GKD, Agarwal et al. 2024, Eq. 1).

    .. math:: \mathrm{JSD}_\beta(P\|Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),
              \quad M = \beta P + (1-\beta) Q,\ \beta\in(0,1).

    Bounded by the binary entropy h(β) (log 2 at β = ½). β = 0 or 1 is a ``ValueError``
    (the value tends to 0 there): use :func:`kl` or :func:`reverse_kl`.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.js(p, q)
        tensor(0.2476)
    """
    return divergence("js", p, q, beta=beta, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def skew_kl(
    p: Tensor,
    q: Tensor,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Skew KL, :math:`\mathrm{KL}(P\,\|\,\alpha P + (1-\alpha)Q)`, α ∈ [0, 1) (DistiLLM).

    α = 0 is :func:`kl`; finite and at most log(1/α) for α > 0.
    """
    return divergence("skew_kl", p, q, alpha=alpha, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def skew_reverse_kl(
    p: Tensor,
    q: Tensor,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Skew reverse KL, :math:`\mathrm{KL}(Q\,\|\,\alpha Q + (1-\alpha)P)`, α ∈ [0, 1).

    α = 0 is :func:`reverse_kl`.
    """
    return divergence("skew_reverse_kl", p, q, alpha=alpha, temperature=temperature,
                      mask=mask, reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def jeffreys(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Jeffreys divergence :math:`\mathrm{KL}(P\|Q)+\mathrm{KL}(Q\|P)=\sum(P-Q)\log(P/Q)`."""
    return divergence("jeffreys", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def tv(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Total variation :math:`\tfrac12\sum_x|P(x)-Q(x)|` ∈ [0, 1] (a metric)."""
    return divergence("tv", p, q, temperature=temperature, mask=mask, reduction=reduction,
                      normalizer=normalizer, inputs=inputs, check_nan=check_nan)


def hellinger(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""*Squared* Hellinger distance :math:`\tfrac12\sum_x(\sqrt{P(x)}-\sqrt{Q(x)})^2` ∈ [0, 1].

    Its square root is the Hellinger distance, a metric.
    """
    return divergence("hellinger", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def pearson_chi2(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Pearson :math:`\chi^2(P\|Q)=\sum_x (P(x)-Q(x))^2/Q(x)`."""
    return divergence("pearson_chi2", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def neyman_chi2(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Neyman :math:`\chi^2(Q\|P)=\sum_x (P(x)-Q(x))^2/P(x)`."""
    return divergence("neyman_chi2", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def alpha(
    p: Tensor,
    q: Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""α-divergence, Cichocki–Amari convention.

    .. math:: D_\alpha(P\|Q) = \frac{1}{\alpha(\alpha-1)}\Big(\sum_x P^\alpha Q^{1-\alpha}-1\Big)

    Continuous in α ∈ ℝ: α = 1 gives KL(P‖Q) and α = 0 gives KL(Q‖P) (evaluated as the limits,
    accurate near P = Q); α = ½ is 4·hellinger, α = 2 is ½·pearson_chi2, α = −1 is
    ½·neyman_chi2. Infinite when α ≥ 1 and P has mass where Q has none, or α ≤ 0 and Q has mass
    where P has none; for α > 1 or α < 0 a value beyond the float range overflows to +∞.
    """
    return divergence("alpha", p, q, alpha=alpha, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def renyi(
    p: Tensor,
    q: Tensor,
    *,
    order: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Rényi divergence :math:`D_a(P\|Q)=\frac{1}{a-1}\log\sum_x P^a Q^{1-a}`, a ∈ [0, ∞].

    a = 1 is KL(P‖Q), a = 0 is −log Q(supp P), a = ∞ is log max P/Q; non-decreasing in a.
    """
    return divergence("renyi", p, q, order=order, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)


def soft_cross_entropy(
    p: Tensor,
    q: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    inputs: str = "logits",
    check_nan: bool = False,
) -> Tensor:
    r"""Soft cross-entropy :math:`H(P,Q)=-\sum_x P(x)\log Q(x) = \mathrm{KL}(P\|Q)+H(P)`.

    Not a divergence (it is H(P), not 0, at Q = P); same gradient in Q as :func:`kl`.
    """
    return divergence("soft_cross_entropy", p, q, temperature=temperature, mask=mask,
                      reduction=reduction, normalizer=normalizer, inputs=inputs,
                      check_nan=check_nan)

