r"""Universal Logit Distillation: L1 between descending-sorted probabilities (cross-tokenizer).

:func:`uld_distance` shares the row options of every row-wise entry point (``temperature``,
``mask``, ``reduction``, ``normalizer``, ``inputs``: :func:`divergent._validation.row_options`
and :func:`~divergent._validation.finish_rows`) and the input contract of
:func:`divergent.divergence`: NaN in a kept row gives NaN for that row (``check_nan=True``
raises instead), a +inf logit or a kept row without mass is a ``ValueError`` naming the side
and the row, and ``inputs="probs"`` / ``"log_probs"`` rows must be normalised (nothing is
renormalised silently).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    compute_dtype,
    finish_rows,
    row_options,
    to_log_probs,
)

__all__ = ["uld_distance"]

# how far a row of probabilities (or exp of log-probabilities) may sum from 1, per input dtype
_MASS_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
_MASS_TOL_HALF = 1e-2  # float16 / bfloat16


def _row_label(flat_index: int, leading: torch.Size) -> str:
    """The row's index in the caller's leading shape (``3`` or ``(1, 4)``)."""
    if len(leading) <= 1:
        return str(flat_index)
    return str(tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), leading)))


def _check_rows(x: Tensor, name: str, inputs: str, row_ids: Tensor, leading: torch.Size) -> None:
    """The input contract on the kept, NaN-free rows ``x`` (n, V) of one side.

    ``row_ids`` holds each row's flat index in the caller's tensor, for the messages.
    """
    if x.shape[0] == 0:
        return
    if inputs in ("logits", "log_probs"):
        pos_inf = torch.isposinf(x).any(-1)
        if bool(pos_inf.any()):
            row = _row_label(int(row_ids[pos_inf.nonzero()[0, 0]]), leading)
            raise ValueError(
                f"`{name}` has a +inf entry in row {row}; {inputs} must be finite or -inf "
                "(-inf = zero probability)"
            )
        empty = torch.isneginf(x).all(-1)
        if bool(empty.any()):
            row = _row_label(int(row_ids[empty.nonzero()[0, 0]]), leading)
            raise ValueError(
                f"`{name}` row {row} is all -inf: it has no probability mass; drop it with "
                "`mask` (False = skip the row)"
            )
    tol = _MASS_TOL.get(x.dtype, _MASS_TOL_HALF)
    if inputs == "log_probs":
        if bool((x > 0).any()):
            raise ValueError(
                f"`{name}` has positive entries (max {float(x.max()):g}) but inputs='log_probs' "
                "expects log-probabilities <= 0; pass logits with inputs='logits'"
            )
        mass = torch.logsumexp(x.double(), -1).exp()
    elif inputs == "probs":
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` has ±inf entries but inputs='probs' expects probabilities")
        if bool((x < 0).any()):
            raise ValueError(
                f"`{name}` has negative entries (min {float(x.min()):g}) but inputs='probs' "
                "expects probabilities >= 0; pass logits with inputs='logits'"
            )
        mass = x.double().sum(-1)
    else:
        return
    off = (mass - 1.0).abs()
    worst = int(off.argmax())
    if float(off[worst]) > tol:
        row = _row_label(int(row_ids[worst]), leading)
        raise ValueError(
            f"`{name}` row {row} sums to {float(mass[worst]):.6g} but inputs={inputs!r} expects "
            f"each row to sum to 1 (tolerance {tol:g}); normalise it (e.g. "
            f"{name} / {name}.sum(-1, keepdim=True), or log_softmax) or pass logits"
        )


def _sorted_probs(
    x: Tensor,
    name: str,
    inputs: str,
    temperature: float,
    dtype: torch.dtype,
    row_ids: Tensor,
    leading: torch.Size,
) -> tuple[Tensor, Tensor]:
    """Descending-sorted probabilities of the kept rows, and which rows hold NaN."""
    nan_rows = torch.isnan(x).any(-1)
    has_nan = bool(nan_rows.any())
    if has_nan:  # NaN rows give NaN (set by the caller); a neutral row keeps the checks quiet
        fill = {"logits": 0.0, "log_probs": -math.log(x.shape[-1]), "probs": 1.0 / x.shape[-1]}
        x = torch.where(nan_rows[:, None], torch.full_like(x, fill[inputs]), x)
    _check_rows(x, name, inputs, row_ids, leading)
    probs = to_log_probs(x, inputs, temperature, dtype, name).exp()
    return torch.sort(probs, dim=-1, descending=True).values, nan_rows


def uld_distance(
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
    r"""Universal Logit Distillation distance: L1 between descending-sorted probabilities.

    .. math::
        \mathrm{ULD}(P, Q) = \sum_{k=1}^{\max(|V_P|, |V_Q|)} \big| P_{(k)} - Q_{(k)} \big|,

    where :math:`P_{(1)} \ge P_{(2)} \ge \dots` are the probabilities of P sorted in decreasing
    order and the shorter vocabulary is padded with zeros. It needs no token correspondence, so
    teacher and student vocabularies may differ in size and content; Boizard et al. derive it as
    the closed form of a Wasserstein distance once the two supports are matched by rank. Values
    lie in [0, 2]; 0 iff the sorted probability vectors coincide. Differentiable (the gradient
    flows through the sort permutation).

    Args:
        p: teacher (target) logits, shape (…, V_P).
        q: student (model) logits, shape (…, V_Q); same leading shape, any vocabulary size.
        temperature: divides both sides' logits (T > 0).
        mask: bool tensor of the leading shape; False rows are skipped.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"`` (over unmasked rows).
        normalizer: denominator of ``"mean"`` instead of the number of unmasked rows.
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``; probabilities and
            log-probabilities must be normalised per row (a ``ValueError`` otherwise).
        check_nan: raise a ``ValueError`` naming the side and the first row with NaN, instead
            of returning NaN for that row.

    Returns:
        A scalar (``"sum"``, ``"mean"``) or values of the leading shape (``"none"``), float32
        (float64 if an input is float64). A kept row with NaN gives NaN (and so does the
        reduced loss); masked rows are ignored whatever they hold.

    Raises:
        ValueError: bad shapes or options; a +inf logit; a kept row with no mass (all -inf);
            probabilities / log-probabilities that do not sum to 1.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[0.0, 1.0, 2.0]]); q = torch.tensor([[2.0, 0.0, 1.0, -50.0]])
        >>> float(divergent.uld_distance(p, q)) < 1e-6   # same sorted probabilities
        True

    References:
        Boizard, El Haddad, Hudelot & Colombo 2024, "Towards cross-tokenizer distillation: the
        Universal Logit Distillation loss for LLMs", arXiv:2402.12030.
    """
    for name, t in (("p", p), ("q", q)):
        check_float_tensor(t, name, min_dim=1)
        if t.shape[-1] == 0:
            raise ValueError(f"`{name}` has an empty class axis (shape {tuple(t.shape)})")
    if p.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"`p` and `q` must share their leading shape (vocabulary sizes may differ), got "
            f"{tuple(p.shape)} and {tuple(q.shape)}"
        )
    if p.device != q.device:
        raise ValueError(f"`p` is on {p.device} but `q` is on {q.device}")
    opts = row_options(
        leading_shape=p.shape[:-1],
        device=p.device,
        temperature=temperature,
        mask=mask,
        reduction=reduction,
        normalizer=normalizer,
        inputs=inputs,
    )
    row_ids = torch.arange(opts.n_rows, device=p.device)
    p_rows, q_rows = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    if opts.keep is not None:
        p_rows, q_rows, row_ids = p_rows[opts.keep], q_rows[opts.keep], row_ids[opts.keep]
    if check_nan:
        for name, rows in (("p", p_rows), ("q", q_rows)):
            bad = torch.isnan(rows).any(-1)
            if bool(bad.any()):
                row = _row_label(int(row_ids[bad.nonzero()[0, 0]]), opts.leading)
                raise ValueError(f"`{name}` contains NaN values (first in row {row})")
    dtype = compute_dtype(p, q)
    pp, p_nan = _sorted_probs(
        p_rows, "p", opts.inputs, opts.temperature, dtype, row_ids, opts.leading
    )
    qq, q_nan = _sorted_probs(
        q_rows, "q", opts.inputs, opts.temperature, dtype, row_ids, opts.leading
    )
    vocab = max(pp.shape[-1], qq.shape[-1])
    pp = torch.nn.functional.pad(pp, (0, vocab - pp.shape[-1]))
    qq = torch.nn.functional.pad(qq, (0, vocab - qq.shape[-1]))
    rows = (pp - qq).abs().sum(-1)
    nan_rows = p_nan | q_nan
    if bool(nan_rows.any()):
        rows = torch.where(nan_rows, torch.full_like(rows, math.nan), rows)
    return finish_rows(
        rows,
        keep=opts.keep,
        leading=opts.leading,
        reduction=opts.reduction,
        normalizer=opts.normalizer,
    )
