r"""Universal Logit Distillation: L1 between descending-sorted probabilities (cross-tokenizer).

:func:`uld_distance` shares the row options of every row-wise entry point (``temperature``,
``mask``, ``reduction``, ``normalizer``, ``inputs``: :func:`divergent._validation.row_options`
and :meth:`~divergent._validation.RowOptions.finish`) and the input contract of
:func:`divergent.divergence`, through the same checks (``input_rows``: ``check_input_rows``,
then ``explain_nan_rows``): NaN in a kept row gives NaN for that row (``check_nan=True`` raises
instead); a +inf logit, a kept row without mass or logits that overflow at the given
temperature are a ``ValueError`` naming the side and the row; ``inputs="probs"`` /
``"log_probs"`` rows must be normalised (nothing is renormalised silently).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from divergent._validation import (
    ROW_INPUT_KEYWORDS,
    RowKeywords,
    check_float_tensor,
    check_same_device,
    compute_dtype,
    input_rows,
    row_keywords,
    row_options,
    split_keywords,
    to_log_probs,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["uld_distance"]


def _sorted_probs(
    x: Tensor, inputs: str, temperature: float, dtype: torch.dtype, name: str
) -> Tensor:
    """Probabilities of each row in decreasing order (NaN rows stay NaN)."""
    probs = to_log_probs(x, inputs, temperature, dtype, name).exp()
    return torch.sort(probs, dim=-1, descending=True).values


@row_keywords(*ROW_INPUT_KEYWORDS, "check_nan")
def uld_distance(
    p: Tensor,
    q: Tensor,
    *,
    check_nan: bool = False,
    **options: Unpack[RowKeywords],
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
            logits / temperature overflowing the compute dtype; probabilities /
            log-probabilities that do not sum to 1; a temperature tensor that requires grad.

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
    check_same_device(p, "p", q, "q")
    row, _ = split_keywords(options, ROW_INPUT_KEYWORDS, function="uld_distance")
    opts = row_options(leading_shape=p.shape[:-1], device=p.device, **row)
    checked = input_rows([("p", p), ("q", q)], opts, check_nan=check_nan, stacklevel=3)
    p_rows, q_rows = checked.kept_sides()
    dtype = compute_dtype(p, q)
    pp = _sorted_probs(p_rows, opts.inputs, opts.temperature, dtype, "p")
    qq = _sorted_probs(q_rows, opts.inputs, opts.temperature, dtype, "q")
    vocab = max(pp.shape[-1], qq.shape[-1])
    pp = torch.nn.functional.pad(pp, (0, vocab - pp.shape[-1]))
    qq = torch.nn.functional.pad(qq, (0, vocab - qq.shape[-1]))
    # a NaN row not caused by a NaN input (+inf, no mass or overflow) is a ValueError
    return checked.finish((pp - qq).abs().sum(-1))
