r"""Divergences against a *sparse* teacher given only as its top-k ids and log-probabilities.

Teachers served by an inference engine, or cached offline (see
:mod:`divergent.teacher.cache`), usually give only the k most likely token ids of each
position and their log-probabilities under the *full* teacher distribution P, so that
:math:`\sum_{i\in S} P(i) \le 1` on the top-k set S and the missing mass
:math:`P(\bar S) = 1 - \sum_{i\in S} P(i)` is the teacher's tail, of unknown shape.
The student Q is given in full, as logits over the vocabulary.

:func:`sparse_divergence` evaluates D(P‖Q) with one of three documented estimators
(``tail="bucket" | "renormalize" | "ignore"``); see its docstring for the formulas, their
biases and the temperature convention (temperature divides the *student* logits only).

Memory: the student side needs, per row, the k gathered logits and one log-sum-exp over the
complement of S. A custom autograd function computes both in row chunks and, in backward,
writes the gradient straight into one ``(N, V)`` tensor (the gradient the caller receives),
so no other N×V tensor is kept between forward and backward, whatever the temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    ROW_KEYWORDS,
    check_choice,
    check_chunk_size,
    check_same_device,
    check_temperature,
    check_tensor,
    compute_dtype,
    mass_tolerance,
    row_keywords,
    row_label,
    row_options,
    split_keywords,
)
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.registry import DivergenceLike
from divergent.engine.chunked import first_order_backward

__all__ = ["PAD_ID", "TAILS", "sparse_divergence", "topk_logprobs", "validate_topk"]

PAD_ID = -1
"""Id that marks an unused top-k slot (a row with fewer than k teacher entries)."""

TAILS: tuple[str, ...] = ("bucket", "renormalize", "ignore")

_CHUNK_ELEMENTS = 1 << 21  # rows per chunk = this // V (8 MiB of float32 per chunk)

_NEG_INF = -math.inf
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate_topk(
    ids: Tensor,
    logprobs: Tensor,
    vocab_size: int,
    *,
    ids_name: str = "teacher_topk_ids",
    logprobs_name: str = "teacher_topk_logprobs",
    row_numbers: Tensor | None = None,
    leading: torch.Size | None = None,
) -> None:
    r"""Check the *values* of a top-k teacher; ``ValueError`` naming the first bad row.

    ``ids`` and ``logprobs`` are ``(R, k)`` (shapes are checked by the caller). Rules:

    * ids are in ``[0, vocab_size)``, or :data:`PAD_ID` (−1) for an unused slot;
    * ids are distinct within a row (padding excepted);
    * log-probs are not NaN, and :math:`\log P(i) \le \epsilon` for real entries;
    * :math:`\sum_{i\in S} P(i) \le 1 + \epsilon` per row, with ε set by the log-probs' dtype
      (1e-6 float64, 1e-4 float32, 5e-3 float16, 2e-2 bfloat16);
    * a row with at least one real entry has at least one finite log-prob (the top-k of a
      distribution carries positive mass).

    ``row_numbers`` (flat indices of the rows in the caller's tensor) and ``leading`` (the
    caller's leading shape) are used only to name the offending row in the message.
    """
    tol = mass_tolerance(logprobs.dtype)
    valid = ids >= 0
    bad_id = (ids < PAD_ID) | (ids >= vocab_size)
    sorted_ids = ids.sort(dim=-1).values
    dup = (sorted_ids[:, 1:] == sorted_ids[:, :-1]) & (sorted_ids[:, 1:] >= 0)
    lp64 = logprobs.detach().to(torch.float64)
    nan = torch.isnan(lp64) & valid
    positive = (lp64 > tol) & valid
    masked = torch.where(valid & ~torch.isnan(lp64), lp64, _NEG_INF)
    lse = torch.logsumexp(masked, dim=-1)
    too_much = lse > math.log1p(tol)
    no_mass = valid.any(-1) & (lse == _NEG_INF)
    # (bad entries or rows, the message for the first bad row r, named `at`), in check order
    checks: list[tuple[Tensor, Callable[[int, str], str]]] = [
        (
            bad_id,
            lambda r, at: (
                f"`{ids_name}` has id {int(ids[r][bad_id[r]][0])} in {at}, outside the "
                f"vocabulary [0, {vocab_size}); ids must lie in [0, {vocab_size}) or be "
                f"{PAD_ID} for an unused slot"
            ),
        ),
        (
            dup,
            lambda r, at: (
                f"`{ids_name}` repeats id {int(sorted_ids[r, 1:][dup[r]][0])} in {at}; "
                f"top-k ids must be distinct within a row (mark unused slots with {PAD_ID})"
            ),
        ),
        (nan, lambda r, at: f"`{logprobs_name}` contains NaN in {at}"),
        (
            positive,
            lambda r, at: (
                f"`{logprobs_name}` has log-probability "
                f"{float(lp64[r][positive[r]][0])!r} > 0 in {at}; log-probs of the full teacher "
                f"distribution must be <= 0 (tolerance {tol:g} for {logprobs.dtype}); pass "
                "log-probs, not logits"
            ),
        ),
        (
            too_much,
            lambda r, at: (
                f"`{logprobs_name}` sums to probability {float(lse[r].exp()):.6g} > 1 "
                f"in {at} (tolerance {tol:g} for {logprobs.dtype}); they must be log-probs of "
                "the full teacher distribution at the top-k ids (log_softmax over the whole "
                "vocabulary, then top-k)"
            ),
        ),
        (
            no_mass,
            lambda r, at: (
                f"`{logprobs_name}` is -inf at every top-k id in {at}; the top-k "
                "entries of a distribution carry positive mass (mark unused slots with id -1 "
                "instead)"
            ),
        ),
    ]
    flags = torch.stack([bad.any() for bad, _ in checks]).tolist()  # one device sync for all
    if not any(flags):
        return
    leading = leading if leading is not None else torch.Size([ids.shape[0]])
    for (bad, message), hit in zip(checks, flags):
        if hit:
            r = int((bad.any(-1) if bad.dim() > 1 else bad).nonzero()[0, 0])
            flat = int(row_numbers[r]) if row_numbers is not None else r
            raise ValueError(message(r, f"row {row_label(flat, leading)}"))


# --------------------------------------------------------------------------------------------
# the student side: gathered logits and the complement's log-sum-exp, in row chunks
# --------------------------------------------------------------------------------------------
def _chunk_rows(logits: Tensor, rows: Tensor | None, r0: int, r1: int) -> Tensor:
    if rows is None:
        return logits[r0:r1]
    return logits.index_select(0, rows[r0:r1])


def _complement(x: Tensor, ids: Tensor, valid: Tensor) -> Tensor:
    """``x`` with the real top-k entries set to −inf (padding slots leave ``x`` unchanged).

    ``scatter_reduce(amin)`` with +inf for padding slots is deterministic even when a padding
    slot's placeholder id coincides with a real id.
    """
    src = torch.where(
        valid,
        torch.full((), _NEG_INF, dtype=x.dtype, device=x.device),
        torch.full((), math.inf, dtype=x.dtype, device=x.device),
    )
    return x.scatter_reduce(-1, ids, src, reduce="amin", include_self=True)


_SECOND_ORDER_HINT = (
    "sparse_divergence is first-order only; for a gradient penalty, compute the divergence "
    "on full logits with divergent.divergence(..., engine='reference')"
)


def _check_logit_rows(
    top: Tensor,
    temperature: float,
    rows: Tensor | None,
    leading: torch.Size,
    name: str = "student_logits",
) -> Tensor:
    """The input contract on the kept rows of logits ``name``, from each row's maximum.

    Returns the rows that hold NaN (their value is NaN); raises a ``ValueError`` naming the
    row for a +inf logit, a row that is all −inf (no mass), or logits that overflow at this
    temperature. One device sync.
    """
    nan = torch.isnan(top)
    scaled = top / temperature
    overflow = torch.isinf(scaled) & torch.isfinite(top)
    bad = (torch.isposinf(top) | torch.isneginf(top) | overflow) & ~nan
    if not bool(bad.any()):
        return nan
    r = int(bad.nonzero()[0, 0])
    label = row_label(r if rows is None else int(rows[r]), leading)
    if bool(torch.isposinf(top[r])):
        raise ValueError(
            f"`{name}` has a +inf entry in row {label}; logits must be finite or -inf "
            "(-inf = zero probability)"
        )
    if bool(torch.isneginf(top[r])):
        raise ValueError(
            f"`{name}` row {label} is all -inf: it has no probability mass; drop it "
            "with `mask` (False = skip the row)"
        )
    raise ValueError(
        f"`{name}` row {label}: logits / temperature overflow {top.dtype} (largest "
        f"logit {float(top[r]):g}, temperature {temperature:g}); use a larger temperature, "
        "float64 logits, or rescale them"
    )


class _GatherAndTail(torch.autograd.Function):
    r"""``z = x_S / T`` (the gathered student logits) and ``t = logsumexp_{j∉S} x_j / T``.

    Forward and backward run in row chunks of ``chunk`` rows; backward writes
    ``∂L/∂x_j = (g_t · softmax_{∁S}(x/T)_j + Σ_{i: S_i = j} g_{z,i}) / T`` straight into the
    gradient tensor, so extra memory is O(chunk × V).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: Tensor,
        rows: Tensor | None,
        ids: Tensor,
        valid: Tensor,
        temperature: float,
        chunk: int,
        need_tail: bool,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_rows, k = ids.shape
        z = torch.empty((n_rows, k), dtype=dtype, device=logits.device)
        tail = torch.full((n_rows,), _NEG_INF, dtype=dtype, device=logits.device)
        top = torch.empty((n_rows,), dtype=dtype, device=logits.device)
        for r0 in range(0, n_rows, chunk):
            r1 = min(r0 + chunk, n_rows)
            x = _chunk_rows(logits, rows, r0, r1).to(dtype)
            top[r0:r1] = x.amax(-1)  # the input contract: NaN, +inf, all −inf rows
            if temperature != 1.0:
                x = x / temperature
            idc = ids[r0:r1]
            z[r0:r1] = x.gather(-1, idc)
            if need_tail:
                tail[r0:r1] = torch.logsumexp(_complement(x, idc, valid[r0:r1]), dim=-1)
        ctx.save_for_backward(logits, ids, valid, tail, *(() if rows is None else (rows,)))
        ctx.has_rows = rows is not None
        ctx.temperature, ctx.chunk, ctx.need_tail, ctx.dtype = temperature, chunk, need_tail, dtype
        ctx.set_materialize_grads(False)
        if not need_tail:
            ctx.mark_non_differentiable(tail)
        ctx.mark_non_differentiable(top)
        return z, tail, top

    @staticmethod
    @first_order_backward(_SECOND_ORDER_HINT)
    def backward(
        ctx: Any, g_z: Tensor | None, g_tail: Tensor | None, _g_top: Tensor | None
    ) -> tuple[Any, ...]:
        none = (None,) * 7
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        saved = ctx.saved_tensors
        logits, ids, valid, tail = saved[:4]
        rows = saved[4] if ctx.has_rows else None
        temperature, chunk, dtype = ctx.temperature, ctx.chunk, ctx.dtype
        use_tail = ctx.need_tail and g_tail is not None
        grad = torch.zeros_like(logits)
        n_rows = ids.shape[0]
        for r0 in range(0, n_rows, chunk):
            r1 = min(r0 + chunk, n_rows)
            idc = ids[r0:r1]
            if use_tail:
                x = _chunk_rows(logits, rows, r0, r1).to(dtype)
                if temperature != 1.0:
                    x = x / temperature
                lt = tail[r0:r1]
                finite = lt > _NEG_INF
                # an empty / all −inf complement has no softmax: its rows get no tail gradient
                lt_safe = torch.where(finite, lt, 0.0)
                coef = torch.where(finite, g_tail[r0:r1].to(dtype), 0.0)
                w = torch.exp(_complement(x, idc, valid[r0:r1]) - lt_safe[:, None])
                w.mul_(coef[:, None])
            else:
                w = torch.zeros((r1 - r0, logits.shape[1]), dtype=dtype, device=logits.device)
            if g_z is not None:
                w.scatter_add_(-1, idc, g_z[r0:r1].to(dtype))
            if temperature != 1.0:
                w.div_(temperature)
            if rows is None:
                grad[r0:r1] = w
            else:
                grad.index_copy_(0, rows[r0:r1], w.to(grad.dtype))
        return (grad, *none)


# --------------------------------------------------------------------------------------------
# helpers on the small (rows, k) tensors
# --------------------------------------------------------------------------------------------
def _log1mexp(a: Tensor) -> Tensor:
    r"""log(1 − eᵃ) for a ≤ 0 (−inf at a = 0), accurate at both ends (Mächler 2012)."""
    inside = a < 0
    a_safe = torch.where(inside, a, -1.0)
    out = torch.where(
        a_safe > -_LN2, torch.log(-torch.expm1(a_safe)), torch.log1p(-torch.exp(a_safe))
    )
    return torch.where(inside, out, _NEG_INF)


def topk_logprobs(
    teacher_logits: Tensor, k: int, *, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""The top-k ids and full-distribution log-probs of a teacher given as logits.

    .. math:: S = \operatorname{top-}k_i\, x_i,\qquad
              \log P_T(i) = x_i/T - \log\sum_{j=1}^{V} e^{x_j/T},\ i \in S

    (the log-softmax over the *whole* vocabulary, restricted to S, in the input's dtype
    upcast to float32), without materialising the log-softmax. This is the input format of
    :func:`sparse_divergence` and of :class:`~divergent.teacher.cache.TeacherCacheWriter`.

    Args:
        teacher_logits: ``(..., V)`` floating-point logits.
        k: number of entries to keep, ``1 <= k <= V``.
        temperature: the teacher temperature T > 0 the log-probs are taken at.

    Returns:
        ``(ids, logprobs)``: int64 ``(..., k)`` and float ``(..., k)`` (float32, or float64 for
        float64 input), sorted by decreasing probability. No gradient flows.

    Example:
        >>> import torch, divergent
        >>> ids, lp = divergent.topk_logprobs(torch.tensor([[0.0, 2.0, 1.0]]), 2)
        >>> ids.tolist(), [round(v, 4) for v in lp[0].tolist()]
        ([[1, 2]], [-0.4076, -1.4076])
    """
    x = check_tensor(teacher_logits, "teacher_logits")
    temperature = check_temperature(temperature)
    n_classes = x.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_classes:
        raise ValueError(f"`k` must be an integer in [1, {n_classes}] (the vocabulary), got {k!r}")
    dtype = compute_dtype(x)
    with torch.no_grad():
        lead = x.shape[:-1]
        x2 = x.reshape(-1, n_classes)
        ids = torch.empty((x2.shape[0], k), dtype=torch.int64, device=x.device)
        lp = torch.empty((x2.shape[0], k), dtype=dtype, device=x.device)
        row_max = torch.empty(x2.shape[0], dtype=dtype, device=x.device)
        chunk = max(1, _CHUNK_ELEMENTS // n_classes)
        for r0 in range(0, x2.shape[0], chunk):
            xc = x2[r0 : r0 + chunk].to(dtype)
            row_max[r0 : r0 + chunk] = xc.amax(-1)
            if temperature != 1.0:
                xc = xc / temperature
            top = xc.topk(k, dim=-1)
            ids[r0 : r0 + chunk] = top.indices
            lp[r0 : r0 + chunk] = top.values - torch.logsumexp(xc, dim=-1, keepdim=True)
        _check_logit_rows(row_max, temperature, None, lead, "teacher_logits")  # NaN rows: NaN
        return ids.reshape(*lead, k), lp.reshape(*lead, k)


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------
@row_keywords("tail", *ROW_KEYWORDS, "chunk_size", "check_inputs")
def sparse_divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    student_logits: Tensor,
    *,
    tail: str = "bucket",
    chunk_size: int | None = None,
    check_inputs: bool = True,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) with the teacher P known only on its top-k set S, the student Q in full.

    Notation per row: S = the k teacher ids (``teacher_topk_ids``, padding excluded),
    :math:`p_i = P(i)` for i ∈ S (``exp(teacher_topk_logprobs)``, log-probs of the *full*
    teacher distribution, so :math:`P(S) = \sum_{i\in S} p_i \le 1`),
    :math:`q_j = \operatorname{softmax}(x/T)_j` the student over all V classes,
    :math:`\bar S` the complement of S, :math:`P(\bar S) = 1 - P(S)` and
    :math:`Q(\bar S) = \sum_{j\notin S} q_j`. If P(S) exceeds 1 within the dtype's rounding
    tolerance (see ``check_inputs``), p is rescaled to P(S) = 1 (tail 0) by "bucket" and
    "ignore". Three estimators (``tail=``):

    **"bucket"** (default): both distributions coarsened to k + 1 bins, the k ids and one bin
    for everything else,

    .. math:: \hat D_{\text{bucket}} = D\big((p_i)_{i\in S}, P(\bar S) \,\big\|\,
              (q_i)_{i\in S}, Q(\bar S)\big).

    This is the exact divergence of a coarsening (a deterministic channel applied to both),
    so by the data-processing inequality :math:`\hat D_{\text{bucket}} \le D(P\|Q)` for every
    f-divergence (and Rényi divergence); it equals D(P‖Q) when k = V, and when the tail
    distributions are proportional (:math:`P(\cdot|\bar S) = Q(\cdot|\bar S)`). Its bias is
    the divergence hidden inside the tail bin; for KL the chain rule makes it exact:
    :math:`\mathrm{KL}(P\|Q) = \hat D_{\text{bucket}} +
    P(\bar S)\,\mathrm{KL}(P(\cdot|\bar S)\|Q(\cdot|\bar S))`. The student is pushed to match
    the tail's *total* mass, not its shape. :math:`Q(\bar S)` is computed as a log-sum-exp over
    the complement (not as 1 − Σq, which loses all precision when the student is confident),
    and :math:`\log Q` over the vocabulary uses
    :math:`\log Z = \operatorname{logaddexp}(\operatorname{lse}_{\bar S}, \operatorname{lse}_S)`.
    :math:`P(\bar S) = 1 - e^{\operatorname{lse}(\log p_S)}` is computed in float64 with a
    stable log1mexp; it is known only to the precision of the given log-probs (a tail below
    ~k·ε of their dtype is rounding noise). When S covers the whole vocabulary there is no
    tail bin.

    **"renormalize"**: both distributions restricted to S and renormalised,

    .. math:: \hat D_{\text{renorm}} = D\big(P(\cdot|S)\,\|\,Q(\cdot|S)\big),\quad
              P(i|S) = p_i / P(S),\ Q(i|S) = q_i / Q(S).

    The divergence of the conditional distributions on S: neither a lower nor an upper bound
    of D(P‖Q) in general, and blind to Q(S), so it exerts no pressure on the student's mass
    outside S (the student may leak mass to the tail at no cost). Needs no pass over the
    vocabulary (only the k gathered logits); exact when k = V.

    **"ignore"**: the divergence's terms summed over S only, with no tail term and no
    renormalisation: the entry's row function evaluated on the unnormalised sub-vectors
    :math:`(p_i)_{i\in S}` and :math:`(q_i)_{i\in S}` (for an f-divergence
    :math:`\sum_{i\in S} q_i f(p_i/q_i)`; for Rényi, the log of the partial sum). For ``kl``
    it is :math:`\sum_{i\in S} p_i \log(p_i/q_i)`, whose gradient in the student logits is that
    of the top-k soft cross-entropy :math:`-\sum_{i\in S} p_i \log q_i`, the common "top-k
    KD" loss shown to be biased by Anshumann et al. (2025). Bias: it drops
    :math:`\sum_{j\notin S} q_j f(p_j/q_j)`, which can have either sign; for ``kl`` the value can
    be negative (≥ :math:`P(S)\log(P(S)/Q(S))` by the log-sum inequality). It is sensible only
    for divergences whose terms are weighted by the teacher (``kl``, ``skew_kl``,
    ``soft_cross_entropy``: a term vanishes as p → 0, so the dropped tail terms are small when
    P(S) ≈ 1). For divergences that weight their terms by the student (``reverse_kl``,
    ``neyman_chi2``, ``js``, ``tv``, ``hellinger``, ``alpha`` ...), the dropped terms carry the
    student's tail mass, which the estimate therefore does not see; ``reverse_kl``'s
    :math:`\sum_{i\in S} q_i\log(q_i/p_i)` is even minimised at :math:`q_i = p_i/e < p_i`,
    with a negative value, i.e. it rewards moving mass off S. Do not train those on it; use
    ``"bucket"``.
    Exact when k = V.

    **Temperature.** ``temperature`` divides the *student* logits only:
    :math:`q = \operatorname{softmax}(x/T)`. The teacher log-probs are used as given, so they
    must already be the teacher's distribution at the temperature you distil at (log-softmax of
    teacher logits / T, e.g. :func:`topk_logprobs` with ``temperature=T``; the teacher cache
    records it). Tempering a top-k teacher afterwards is not exact: :math:`P_T(i) =
    p_i^{1/T}/\sum_j p_j^{1/T}` needs :math:`\sum_{j\notin S} p_j^{1/T}`, which depends on how
    the tail mass is spread and is unknown. (Under ``"renormalize"`` alone the normaliser
    cancels, and ``log_softmax(teacher_topk_logprobs / T, -1)`` is exactly the tempered
    teacher conditioned on S.) With k = V and log-probs at T, every estimator equals
    ``divergent.divergence(name, teacher_logits, student_logits, temperature=T)``.

    **Duplicates and padding.** Ids must be distinct within a row (a ``ValueError``
    otherwise: a repeated id would count its mass twice). An id of :data:`PAD_ID` (−1) marks
    an unused slot (rows with fewer than k entries): its log-prob is ignored and it belongs
    to no bin. A row that is all padding has S = ∅ and the value 0.

    Args:
        name: a registered name (``"kl"``, ``"js"`` ...), a
            :class:`~divergent.categorical.registry.Divergence`, or a generator callable f(t).
        teacher_topk_ids: integer ``(..., k)``, ids in ``[0, V)`` or −1 for padding.
        teacher_topk_logprobs: floating ``(..., k)``, :math:`\log P(i)` of the full teacher
            distribution at those ids (≤ 0, summing in probability to ≤ 1). Gradients flow to
            it when it requires grad.
        student_logits: floating ``(..., V)`` student logits (the leading shape as the ids).
        tail: ``"bucket"`` | ``"renormalize"`` | ``"ignore"``.
        temperature: T > 0 dividing the student logits (see above). No T² factor.
        mask: bool, leading shape; False rows are skipped (not computed, zero gradient).
        reduction: ``"none"`` | ``"sum"`` | ``"mean"`` (over unmasked rows).
        normalizer: denominator of ``"mean"`` instead of the number of unmasked rows.
        chunk_size: rows per chunk of the vocabulary pass (default: about 2M elements).
        check_inputs: check the teacher's values on the unmasked rows (ids in ``[0, V)`` or
            −1, no duplicates, log P ≤ ε, P(S) ≤ 1 + ε with ε = 1e-6 / 1e-4 / 5e-3 / 2e-2 for
            float64 / float32 / float16 / bfloat16 log-probs; one device sync). Shapes,
            dtypes and parameters are always checked.
        **params: the divergence's parameters (``beta``, ``alpha``, ``order`` ...).

    Returns:
        A scalar (``"sum"``, ``"mean"``) or the leading shape (``"none"``, masked rows 0), in
        float32 (float64 if the student logits or teacher log-probs are float64). ``+inf`` rows
        where the estimator is infinite (e.g. ``kl`` when the student assigns −inf to a teacher
        id, or zero tail mass against a positive teacher tail).

    Raises:
        ValueError: unknown ``tail`` / divergence / parameter; mismatched shapes or devices;
            k > V; non-integer ids; and, with ``check_inputs``, ids outside ``[0, V)`` other
            than −1, duplicate ids in a row, NaN or positive log-probs, P(S) > 1 + tolerance;
            a student row with a +inf logit, all −inf, or overflowing at the temperature
            (naming the row). A student row holding NaN (or, without ``check_inputs``, a NaN
            teacher log-prob) gives NaN for that row.
        RuntimeError: on a second-order graph request (first-order only).

    Example:
        >>> import torch, divergent
        >>> teacher = torch.tensor([[3.0, 1.0, 0.0, -1.0]]); student = torch.zeros(1, 4)
        >>> ids, lp = divergent.topk_logprobs(teacher, 2)
        >>> full = divergent.kl(teacher, student)
        >>> bucket = divergent.sparse_divergence("kl", ids, lp, student)
        >>> round(float(bucket), 4), round(float(full), 4), bool(bucket <= full)
        (0.7849, 0.7912, True)

    References:
        Csiszár 1967 and Ali & Silvey 1966 (f-divergences and data processing);
        van Erven & Harremoës 2014 (Rényi divergence, data processing);
        Anshumann et al. 2025, "Sparse Logit Sampling: Accelerating Knowledge Distillation in
        LLMs", ACL 2025, arXiv:2503.16870 (bias of top-k teacher caches).
    """
    row, params = split_keywords(params, ROW_KEYWORDS)
    spec = resolve_divergence(name)
    bound = spec.bind(params)
    check_choice(tail, "tail", TAILS)
    student = check_tensor(student_logits, "student_logits")
    ids = teacher_topk_ids
    if (
        not isinstance(ids, Tensor)
        or ids.dtype == torch.bool
        or ids.is_floating_point()
        or (ids.is_complex())
    ):
        got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"`teacher_topk_ids` must be an integer tensor (int64), got {got}")
    logprobs = check_tensor(teacher_topk_logprobs, "teacher_topk_logprobs")
    if ids.dim() == 0:
        raise ValueError("`teacher_topk_ids` must have a top-k axis (last dimension); got 0-d")
    if ids.shape != logprobs.shape:
        raise ValueError(
            f"`teacher_topk_ids` and `teacher_topk_logprobs` must have the same shape (..., k), "
            f"got {tuple(ids.shape)} and {tuple(logprobs.shape)}"
        )
    if ids.shape[:-1] != student.shape[:-1]:
        raise ValueError(
            f"leading shapes differ: `teacher_topk_ids` {tuple(ids.shape)} and `student_logits` "
            f"{tuple(student.shape)}; expected (..., k) and (..., V) with the same leading shape"
        )
    n_classes, k = student.shape[-1], ids.shape[-1]
    if k == 0:
        raise ValueError("`teacher_topk_ids` has an empty top-k axis (k = 0); need k >= 1")
    if k > n_classes:
        raise ValueError(
            f"k = {k} teacher entries per row exceeds the vocabulary size V = {n_classes} of "
            "`student_logits`; need k <= V"
        )
    for t_name, t in (("teacher_topk_ids", ids), ("teacher_topk_logprobs", logprobs)):
        check_same_device(t, t_name, student, "student_logits")
    check_chunk_size(chunk_size)
    opts = row_options(leading_shape=student.shape[:-1], device=student.device, **row)
    leading, temperature = opts.leading, opts.temperature

    dtype = compute_dtype(student, logprobs)
    s2d = student.reshape(-1, n_classes)
    ids2d = ids.reshape(-1, k).to(torch.int64)
    lp2d = logprobs.reshape(-1, k)
    rows: Tensor | None = None
    if opts.keep is not None:
        rows = opts.keep.nonzero().squeeze(1)
        ids2d, lp2d = ids2d.index_select(0, rows), lp2d.index_select(0, rows)
    count = ids2d.shape[0]
    if check_inputs and count > 0:
        validate_topk(ids2d, lp2d, n_classes, row_numbers=rows, leading=leading)

    valid = ids2d >= 0
    safe_ids = ids2d.clamp_min(0)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // n_classes)
    need_tail = tail != "renormalize"
    z, lse_tail, top = _GatherAndTail.apply(
        s2d, rows, safe_ids, valid, temperature, chunk, need_tail, dtype
    )
    nan_rows = _check_logit_rows(top, temperature, rows, leading)
    nan_rows = nan_rows | (torch.isnan(lp2d) & valid).any(-1)  # check_inputs=False

    # rows with no real entry (all padding): computed on a harmless stand-in, then set to 0
    empty = ~valid.any(-1)
    valid_c = valid | empty[:, None]
    lq = torch.where(valid_c, torch.where(empty[:, None], 0.0, z), _NEG_INF)
    lse_q_s = torch.logsumexp(lq, dim=-1)
    lp64 = lp2d.to(torch.float64)
    lp64 = torch.where(valid_c, torch.where(empty[:, None], -math.log(k), lp64), _NEG_INF)
    lse_p_s = torch.logsumexp(lp64, dim=-1)
    if tail == "renormalize":
        log_p = (lp64 - lse_p_s[:, None]).to(dtype)
        log_q = lq - lse_q_s[:, None]
    else:
        excess = lse_p_s.clamp_min(0.0)  # P(S) > 1 within tolerance: rescale to sum to 1
        log_p_s = lp64 - excess[:, None]
        log_z = torch.logaddexp(lse_tail, lse_q_s)
        log_q_s = lq - log_z[:, None]
        if tail == "ignore":
            log_p, log_q = log_p_s.to(dtype), log_q_s
        else:
            has_tail_bin = valid.sum(-1) < n_classes
            log_p_tail = torch.where(has_tail_bin, _log1mexp(lse_p_s - excess), _NEG_INF)
            log_q_tail = lse_tail - log_z
            log_p = torch.cat([log_p_s, log_p_tail[:, None]], dim=-1).to(dtype)
            log_q = torch.cat([log_q_s, log_q_tail[:, None]], dim=-1)
    values = spec.row_fn(log_p, log_q, **bound)
    values = torch.where(empty, torch.zeros((), dtype=values.dtype, device=values.device), values)
    values = torch.where(nan_rows, math.nan, values)

    return opts.finish(values, leading=leading)
