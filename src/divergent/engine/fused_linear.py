r"""Fused linear head + divergence: distillation from hidden states without N×V logits.

:func:`fused_linear_divergence` takes the student's and the teacher's last hidden states and
output-embedding (head) weights, and computes D(P‖Q) between the teacher's P and the student's
Q token distributions,

.. math::
    z^{(s)} = \mathrm{cap}\big((h^{(s)} W^{(s)\top} + b^{(s)})\,\lambda\big),\quad
    Q = \mathrm{softmax}(z^{(s)}/T),\qquad \text{likewise } P \text{ from } h^{(t)}, W^{(t)},

with :math:`\mathrm{cap}(x) = c\tanh(x/c)` (Gemma-style soft-capping, ``softcap=c``) and
:math:`\lambda` the ``logit_scale`` (Cohere-style), both applied to both sides. Rows are
processed in chunks: a chunk's logits are formed, the divergence kernel of
:mod:`divergent.categorical.kernels` gives the value and :math:`\partial D/\partial z` in one pass,
and the chain rule through the head is applied at once,

.. math::
    \frac{\partial D}{\partial h} = G W,\qquad \frac{\partial D}{\partial W} \mathrel{+}= G^\top h,
    \qquad \frac{\partial D}{\partial b} \mathrel{+}= \textstyle\sum_{\text{rows}} G,

so only O(chunk × V) logits ever exist (the approach of Liger-Kernel's fused linear losses,
Hsu et al. 2024, arXiv:2410.10989, here for every registered divergence).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    ROW_KEYWORDS,
    check_choice,
    check_chunk_size,
    check_float_tensor,
    check_positive_scalar,
    row_keywords,
    row_label,
    row_options,
    split_keywords,
)
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.kernels import kernel_for
from divergent.categorical.registry import DivergenceLike
from divergent.engine.chunked import (
    EngineJob,
    _autograd_chunk,
    _ChunkRunner,
    _should_compile,
    default_chunk_rows,
    first_order_backward,
    save_forward_grads,
    saved_grads_backward,
)

__all__ = ["fused_linear_divergence"]

#: ``vocab=``: "strict" needs equal student / teacher vocabularies, "truncate" compares the
#: shared prefix (the first min(V_s, V_t) tokens)
VOCAB_POLICIES = ("strict", "truncate")

MATMUL_CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 26}
"""Default logits elements per matmul chunk (rows = elements // V, at least 1)."""


def _logits(h: Tensor, w: Tensor, bias: Tensor | None, job: EngineJob, out: Tensor) -> Tensor:
    """Transformed logits of a chunk (scale, then soft-cap), in the matmul dtype, into ``out``."""
    z = torch.mm(h, w.T, out=out)
    if bias is not None:
        z += bias
    if job.logit_scale is not None:
        z *= job.logit_scale
    if job.softcap is not None:
        cap = job.softcap
        z.div_(cap).tanh_().mul_(cap)
    return z


def _chain(gz: Tensor, z: Tensor, job: EngineJob) -> None:
    """gz ← gz · d(transformed)/d(raw), reusing the transformed logits buffer ``z``."""
    if job.softcap is not None:
        cap = job.softcap
        gz.mul_(z.div_(cap).square_().neg_().add_(1.0))  # 1 − tanh²
    if job.logit_scale is not None:
        gz.mul_(job.logit_scale)


def _run(
    job: EngineJob,
    tensors: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor | None],
    need: tuple[bool, ...],
    row_weights: Tensor | None = None,
) -> tuple[Tensor, list[Tensor | None]]:
    """Row values (kept rows) and the gradients flagged in ``need``.

    Gradients are scaled by the reduction's weight, or by ``row_weights`` (one per kept row,
    the incoming gradient of ``reduction="none"``).
    """
    hs, ws, bs, ht, wt, bt = tensors
    need_s, need_t = any(need[0:3]), any(need[3:6])
    n_rows, vocab = hs.shape[0], job.vocab
    device = hs.device
    wide = torch.float64 in (hs.dtype, ws.dtype, ht.dtype, wt.dtype)
    dtype = torch.float64 if wide else torch.float32
    mm_s = torch.promote_types(hs.dtype, ws.dtype)
    mm_t = torch.promote_types(ht.dtype, wt.dtype)
    hs_m, ws_m = hs.to(mm_s), ws[:vocab].to(mm_s)
    ht_m, wt_m = ht.to(mm_t), wt[:vocab].to(mm_t)
    bs_m = None if bs is None else bs[:vocab].to(mm_s)
    bt_m = None if bt is None else bt[:vocab].to(mm_t)

    idx = None if job.keep is None else job.keep.nonzero().squeeze(1)
    count = n_rows if idx is None else int(idx.numel())
    if count == n_rows:
        idx = None  # every row kept: plain slices, no gather / scatter of the hidden states
    scale = job.scale(count, dtype, device)
    temperature = torch.tensor(job.temperature, dtype=dtype, device=device)

    def zeros_for(x: Tensor | None, flag: bool, acc: bool = False) -> Tensor | None:
        if x is None or not flag:
            return None
        if acc and x.dtype in (torch.bfloat16, torch.float16):
            return torch.zeros(x.shape, dtype=torch.float32, device=device)
        return torch.zeros_like(x)

    g_hs, g_ht = zeros_for(hs, need[0]), zeros_for(ht, need[3])
    g_ws, g_bs = zeros_for(ws, need[1], acc=True), zeros_for(bs, need[2], acc=True)
    g_wt, g_bt = zeros_for(wt, need[4], acc=True), zeros_for(bt, need[5], acc=True)
    values = torch.empty(count, dtype=dtype, device=device)

    if job.plan is not None:
        compiled = _should_compile(job.plan.kernel, count * vocab, job.compile)
        consts = job.plan.tensors(dtype, device)
        flags = (need_t, need_s)
        run: Callable[..., Tensor] = _ChunkRunner(job.plan.kernel, dtype, flags, compiled)
        mode = "compiled" if compiled else "eager"
    else:
        consts = ()
        run = _autograd_chunk(job.spec, job.params, True, dtype)
        mode = "autograd"

    step = max(1, job.chunk_rows or 1)
    sub = min(step, default_chunk_rows(vocab, device, mode))
    # one set of chunk buffers, reused: a fresh (chunk × V) allocation per chunk is returned
    # to the OS and page-faulted again on the next one, which costs more than the kernel on CPU
    buf_rows = min(step, count)

    def buffer(flag: bool, mm: torch.dtype) -> Tensor | None:
        return torch.empty(buf_rows, vocab, dtype=mm, device=device) if flag else None

    zb_s, zb_t = buffer(True, mm_s), buffer(True, mm_t)
    gzb_s, gzb_t = buffer(need_s, mm_s), buffer(need_t, mm_t)
    weights = None if row_weights is None else row_weights.to(dtype).unsqueeze(-1)
    for start in range(0, count, step):
        stop = min(start + step, count)
        if idx is None:
            h_s, h_t = hs_m[start:stop], ht_m[start:stop]
        else:
            sel = idx[start:stop]
            h_s, h_t = hs_m.index_select(0, sel), ht_m.index_select(0, sel)
        rows = stop - start
        with torch.no_grad():
            z_s = _logits(h_s, ws_m, bs_m, job, zb_s[:rows])  # type: ignore[index]
            z_t = _logits(h_t, wt_m, bt_m, job, zb_t[:rows])  # type: ignore[index]
        gz_s = None if gzb_s is None else gzb_s[:rows]
        gz_t = None if gzb_t is None else gzb_t[:rows]
        for k in range(0, rows, sub):
            kk = slice(k, min(k + sub, rows))
            w = scale if weights is None else weights[start + kk.start : start + kk.stop]
            values[start + kk.start : start + kk.stop], bad = run(
                z_t[kk],
                z_s[kk],
                None if gz_t is None else gz_t[kk],
                None if gz_s is None else gz_s[kk],
                temperature,
                w,
                consts,
            )
            if (gz_s is not None or gz_t is not None) and bool(bad.any()):
                for gz in (gz_s, gz_t):
                    if gz is not None:
                        gz[kk][bad] = 0.0  # rows with value +inf: gradient 0
        for gz, z, h, w_m, g_h, g_w, g_b in (
            (gz_s, z_s, h_s, ws_m, g_hs, g_ws, g_bs),
            (gz_t, z_t, h_t, wt_m, g_ht, g_wt, g_bt),
        ):
            if gz is None:
                continue
            _chain(gz, z, job)
            if g_h is not None:
                gh = gz @ w_m
                if idx is None:
                    g_h[start:stop] = gh
                else:
                    g_h.index_copy_(0, sel, gh.to(g_h.dtype))
            if g_w is not None:
                g_w[:vocab].addmm_(gz.T.to(g_w.dtype), h.to(g_w.dtype))
            if g_b is not None:
                g_b[:vocab] += gz.sum(0, dtype=g_b.dtype)
        del z_s, z_t, gz_s, gz_t  # views of the buffers: the del below then frees them
    del zb_s, zb_t, gzb_s, gzb_t

    grads = [g_hs, g_ws, g_bs, g_ht, g_wt, g_bt]
    originals = [hs, ws, bs, ht, wt, bt]
    return values, [None if g is None else g.to(x.dtype) for g, x in zip(grads, originals)]  # type: ignore[union-attr]


_SOURCE_NAMES = (
    "student_hidden",
    "student_weight",
    "student_bias",
    "teacher_hidden",
    "teacher_weight",
    "teacher_bias",
)


def _explain_nan_rows(
    job: EngineJob,
    values: Tensor,
    tensors: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor | None],
) -> None:
    """The input contract on rows whose value is NaN (one device sync when none is).

    NaN in a row's hidden states, or anywhere in a head's weight or bias (every row reads
    all of it), propagates: those rows stay NaN. Any other NaN row had non-finite logits from
    finite-looking inputs: an infinite entry (a ``ValueError`` naming it) or logits that
    overflow the compute dtype (a ``ValueError`` naming the row).
    """
    nan = torch.isnan(values)
    if not bool(nan.any()):
        return
    pos = nan.nonzero().squeeze(1)
    keep = job.keep
    flat = pos if keep is None else keep.nonzero().squeeze(1).index_select(0, pos)
    hs, ht = tensors[0], tensors[3]
    heads = [(n, t) for i, (n, t) in enumerate(zip(_SOURCE_NAMES, tensors)) if i not in (0, 3)]
    heads = [(n, t) for n, t in heads if t is not None]
    if any(bool(torch.isnan(t).any()) for _, t in heads):
        return  # NaN in a head reaches every row
    caused = torch.isnan(hs.index_select(0, flat)).any(-1)
    caused |= torch.isnan(ht.index_select(0, flat)).any(-1)
    if bool(caused.all()):
        return
    i = int((~caused).nonzero()[0, 0])
    label = row_label(int(flat[i]), job.opts.leading)
    for name, h in (("student_hidden", hs), ("teacher_hidden", ht)):
        if bool(torch.isinf(h[flat[i]]).any()):
            raise ValueError(
                f"`{name}` has an infinite entry in row {label}; hidden states must be finite"
            )
    for name, t in heads:
        if bool(torch.isinf(t).any()):
            raise ValueError(f"`{name}` has an infinite entry; head weights must be finite")
    raise ValueError(
        f"the logits of row {label} are not finite: hidden states × head weights "
        f"(× logit_scale) / temperature overflow {values.dtype} (temperature "
        f"{job.temperature:g}); use float64 inputs, a larger temperature or `softcap`"
    )


class _FusedLinearFunction(torch.autograd.Function):
    """Gradients in the forward pass (scalar reductions); recomputed for ``reduction="none"``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hs: Tensor,
        ws: Tensor,
        bs: Tensor | None,
        ht: Tensor,
        wt: Tensor,
        bt: Tensor | None,
        job: EngineJob,
    ) -> Tensor:
        need = tuple(bool(x) and job.grad for x in ctx.needs_input_grad[:6])
        tensors = (hs, ws, bs, ht, wt, bt)
        ctx.job, ctx.need = job, need
        if job.reduction == "none":
            # weight and bias gradients sum over rows, so the incoming per-row gradient must
            # be known: the backward pass recomputes the chunks with it (one more forward)
            values, _ = _run(job, tensors, (False,) * 6)
            _explain_nan_rows(job, values, tensors)
            ctx.save_for_backward(hs, ws, bs, ht, wt, bt)
            return job.finish(values)
        values, grads = _run(job, tensors, need)
        _explain_nan_rows(job, values, tensors)
        save_forward_grads(ctx, hs, grads)
        return job.finish(values)

    @staticmethod
    @first_order_backward()
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.job.reduction == "none":
            hs, ws, bs, ht, wt, bt = ctx.saved_tensors
            rows = grad_out.reshape(-1)
            if ctx.job.keep is not None:
                rows = rows[ctx.job.keep]
            _, grads = _run(ctx.job, (hs, ws, bs, ht, wt, bt), ctx.need, row_weights=rows)
            return (*grads, None)
        return saved_grads_backward(ctx, grad_out)


@row_keywords(
    "student_hidden",
    "student_weight",
    "teacher_hidden",
    "teacher_weight",
    "student_bias",
    "teacher_bias",
    "temperature",
    "softcap",
    "logit_scale",
    "mask",
    "reduction",
    "normalizer",
    "chunk_size",
    "vocab",
    "compile",
)
def fused_linear_divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    *,
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    softcap: float | None = None,
    logit_scale: float | None = None,
    chunk_size: int | None = None,
    vocab: str = "strict",
    compile: bool | str | None = None,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) from hidden states and head weights, never forming the N×V logits.

    The teacher gives P and the student Q (``D(teacher ‖ student)``; ``"kl"`` is the forward
    KL of Hinton-style distillation, ``"reverse_kl"`` the mode-seeking one):

    .. math::
        z = \mathrm{cap}\big((h W^\top + b)\,\lambda\big),\quad
        \mathrm{cap}(x) = c \tanh(x / c),\quad
        P = \mathrm{softmax}(z^{(t)}/T),\ Q = \mathrm{softmax}(z^{(s)}/T).

    Gradients flow to the student's hidden states, weight and bias, and to the teacher's only
    when those require grad. Memory beyond the returned gradients is O(chunk × V); for
    ``"mean"``/``"sum"`` the gradient is computed in the forward pass (as the chunked engine,
    first-order only), for ``"none"`` the backward pass recomputes the chunks with the incoming
    per-row gradient (weight and bias gradients sum over rows), about twice the time.

    Args:
        name: a registered divergence name, a :class:`~divergent.Divergence` or a generator f.
        student_hidden: ``(..., H_s)`` last hidden states of the student.
        student_weight: ``(V_s, H_s)`` student output embedding (``lm_head.weight``).
        teacher_hidden: ``(..., H_t)`` with the same leading shape; hidden sizes may differ.
        teacher_weight: ``(V_t, H_t)``.
        student_bias, teacher_bias: optional ``(V_s,)`` / ``(V_t,)`` biases.
        temperature: T > 0, divides both sides' (capped) logits.
        softcap: c > 0 for Gemma-style ``c·tanh(z/c)`` capping of both sides, or None.
        logit_scale: λ > 0 multiplying both sides' logits before capping (Cohere), or None.
        mask: bool of the leading shape, False rows skipped (value 0, gradient 0).
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``; ``normalizer`` overrides the mean's
            denominator (a constant).
        chunk_size: rows per matmul chunk (default: about 2**23 logits elements on CPU).
        vocab: ``"strict"`` (V_s must equal V_t) or ``"truncate"`` (both heads cut to the
            first min(V_s, V_t) rows, for heads padded with extra embedding rows; the padded
            rows get zero gradient).
        compile: compile the divergence kernel (``True``/``False``/``"auto"``; default the
            process-wide :func:`divergent.set_compile` mode).
        **params: the divergence's parameters (``beta``, ``alpha``, ``order`` ...).

    Returns:
        The loss (scalar for ``"mean"``/``"sum"``, the leading shape for ``"none"``), fp32
        (fp64 if an input is fp64).

    Raises:
        ValueError: naming the argument on wrong shapes, dtypes, devices, mismatched
            vocabularies (unless ``vocab="truncate"``) or invalid options; naming the tensor
            and the row for an infinite hidden state or head weight, or logits that overflow.
            NaN in a row's hidden states makes that row NaN (NaN in a head: every row).
        RuntimeError: on a second-order graph request (``create_graph=True``); this path is
            first-order only.

    Example:
        >>> import torch, divergent
        >>> hs, ht = torch.randn(4, 8), torch.randn(4, 6)
        >>> ws, wt = torch.randn(11, 8, requires_grad=True), torch.randn(11, 6)
        >>> loss = divergent.fused_linear_divergence("kl", student_hidden=hs, student_weight=ws,
        ...                                          teacher_hidden=ht, teacher_weight=wt)
        >>> loss.backward(); ws.grad.shape
        torch.Size([11, 8])

    References:
        Hinton, Vinyals & Dean 2015 (distillation with temperature); Gemma 2 (Gemma Team 2024)
        for logit soft-capping; Hsu et al. 2024, Liger-Kernel (arXiv:2410.10989) for fused
        linear losses.
    """
    row, params = split_keywords(params, ROW_KEYWORDS)
    spec = resolve_divergence(name)
    bound = spec.bind(params)
    hs = check_float_tensor(student_hidden, "student_hidden", min_dim=1)
    ht = check_float_tensor(teacher_hidden, "teacher_hidden", min_dim=1)
    ws = check_float_tensor(student_weight, "student_weight", dims=2)
    wt = check_float_tensor(teacher_weight, "teacher_weight", dims=2)
    if hs.shape[:-1] != ht.shape[:-1]:
        raise ValueError(
            f"`student_hidden` {tuple(hs.shape)} and `teacher_hidden` {tuple(ht.shape)} must share "
            "the leading (token) shape; only the hidden size (last axis) may differ"
        )
    if ws.shape[1] != hs.shape[-1]:
        raise ValueError(
            f"`student_weight` has shape {tuple(ws.shape)}; expected (V, {hs.shape[-1]}) to match "
            f"`student_hidden`'s hidden size {hs.shape[-1]}"
        )
    if wt.shape[1] != ht.shape[-1]:
        raise ValueError(
            f"`teacher_weight` has shape {tuple(wt.shape)}; expected (V, {ht.shape[-1]}) to match "
            f"`teacher_hidden`'s hidden size {ht.shape[-1]}"
        )
    for bias, w, bname in ((student_bias, ws, "student_bias"), (teacher_bias, wt, "teacher_bias")):
        if bias is not None:
            check_float_tensor(bias, bname, dims=1)
            if bias.shape[0] != w.shape[0]:
                raise ValueError(
                    f"`{bname}` has {bias.shape[0]} entries but its weight has {w.shape[0]} rows"
                )
    devices = {t.device for t in (hs, ws, ht, wt, student_bias, teacher_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    check_choice(vocab, "vocab", VOCAB_POLICIES)
    v_s, v_t = ws.shape[0], wt.shape[0]
    if v_s != v_t and vocab == "strict":
        raise ValueError(
            f"vocabulary sizes differ: `student_weight` has {v_s} rows, `teacher_weight` has "
            f"{v_t}. "
            "If one head is padded with extra embedding rows (same tokenizer), pass "
            "vocab='truncate' to use the first min(V_s, V_t) rows of both"
        )
    if min(v_s, v_t) == 0:
        raise ValueError("the heads have an empty vocabulary (0 rows)")
    opts = row_options(leading_shape=hs.shape[:-1], device=hs.device, **row)
    cap = check_positive_scalar(
        softcap, "softcap", allow_none=True, what="the tanh cap c in c·tanh(z/c)"
    )
    lam = check_positive_scalar(
        logit_scale, "logit_scale", allow_none=True, what="a multiplier of the logits"
    )
    chunk_size = check_chunk_size(chunk_size)
    n_vocab = min(v_s, v_t)
    device_type = hs.device.type
    mm_rows = chunk_size or max(1, MATMUL_CHUNK_ELEMENTS.get(device_type, 1 << 26) // n_vocab)
    job = EngineJob(
        spec=spec,
        params=bound,
        plan=kernel_for(spec, bound),
        opts=opts,
        chunk_rows=mm_rows,
        compile=compile,
        grad=torch.is_grad_enabled(),
        softcap=cap,
        logit_scale=lam,
        vocab=n_vocab,
    )
    return _FusedLinearFunction.apply(
        hs.reshape(-1, hs.shape[-1]),
        ws,
        student_bias,
        ht.reshape(-1, ht.shape[-1]),
        wt,
        teacher_bias,
        job,
    )
