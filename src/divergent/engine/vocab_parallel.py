r"""Exact divergences for logits sharded along the vocabulary (tensor parallelism).

With a vocabulary-parallel output head (Megatron-style ``ColumnParallelLinear``), rank r of a
process group holds the logits of a slice :math:`V_r` of the vocabulary for every row.
:func:`vocab_parallel_divergence` computes the exact D(P‖Q) of the full rows without gathering
them: every statistic the chunk kernels of :mod:`divergent.categorical.kernels` need is a per-row
sum, maximum or log-sum-exp over the vocabulary, so each rank computes its partial statistic
and they are combined with all-reduces,

.. math::
    \log p_x = (z_x - M) - \log \sum_r \sum_{y\in V_r} e^{z_y - M},\quad
    M = \max_r \max_{y\in V_r} z_y,\qquad \textstyle\sum_x g_x = \sum_r \sum_{x\in V_r} g_x .

The rounds are: the two log-normalisers (one MAX all-reduce of the row maxima, then one SUM
all-reduce of the shifted exponential sums, both sides together; ``z − M`` stays exact as in
``torch.log_softmax``), then the kernel's statistics (one all-reduce per combine kind and
round: two for most divergences; a log-sum-exp statistic such as Rényi's combines as
:math:`M' + \log\sum_r e^{\ell_r - M'}`); the value of each row is then known on every rank,
and each rank writes the gradient of its own shard, :math:`\frac{w}{T}(A_j - p_j \sum_x A_x)`
with the global sums. All ranks return the same loss; the backward pass needs no
communication.

The result equals :func:`divergent.divergence` on the gathered logits (same kernels), for every
registered divergence; f-divergences without a named kernel (user generators) use the float64
generator kernel.

References:
    Shoeybi et al. 2019, Megatron-LM (arXiv:1909.08053), vocabulary-parallel cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergent._validation import check_chunk_size, check_no_nan, check_pair, row_options
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.kernels import LSE, MAX, SUM, generator_kernel, kernel_for
from divergent.categorical.registry import DivergenceLike
from divergent.engine.chunked import (
    CHUNK_ELEMENTS,
    EngineJob,
    check_backward_once,
    scale_saved_grads,
    write_grads,
)

__all__ = ["vocab_parallel_divergence"]


def _combine(stats: Sequence[tuple[Tensor, str]], group: Any) -> list[Tensor]:
    """All-reduce a round of per-row statistics, batching those of the same kind."""
    out: list[Tensor | None] = [None] * len(stats)
    for kind in (SUM, MAX):
        picks = [i for i, (_, k) in enumerate(stats) if k == kind]
        if picks:
            buf = torch.stack([stats[i][0] for i in picks])
            op = dist.ReduceOp.SUM if kind == SUM else dist.ReduceOp.MAX
            dist.all_reduce(buf, op=op, group=group)
            for j, i in enumerate(picks):
                out[i] = buf[j]
    picks = [i for i, (_, k) in enumerate(stats) if k == LSE]
    if picks:
        local = torch.stack([stats[i][0] for i in picks])
        top = local.clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        finite = torch.isfinite(top)
        safe_top = torch.where(finite, top, 0.0)
        mass = torch.where(finite, torch.exp(local - safe_top), 0.0)
        dist.all_reduce(mass, op=dist.ReduceOp.SUM, group=group)
        glob = torch.where(finite, safe_top + torch.log(mass), top)
        for j, i in enumerate(picks):
            out[i] = glob[j]
    return out  # type: ignore[return-value]


def _chunks(count: int, rows: int) -> list[slice]:
    return [slice(s, min(s + rows, count)) for s in range(0, count, rows)]


class _VocabParallelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a2: Tensor, b2: Tensor, job: EngineJob) -> Tensor:  # type: ignore[override]
        need_a = ctx.needs_input_grad[0] and job.grad  # needs_input_grad ignores no_grad()
        need_b = ctx.needs_input_grad[1] and job.grad
        plan = job.plan
        assert plan is not None  # checked by vocab_parallel_divergence
        kernel = plan.kernel
        device = a2.device
        wide = torch.float64 in (a2.dtype, b2.dtype)
        dtype = kernel.dtype or (torch.float64 if wide else torch.float32)
        out_dtype = torch.float64 if wide else torch.float32
        n_rows = a2.shape[0]
        idx = None if job.keep is None else job.keep.nonzero().squeeze(1)
        count = n_rows if idx is None else int(idx.numel())
        temperature = torch.tensor(job.temperature, dtype=dtype, device=device)
        consts = plan.tensors(dtype, device)
        scale = job.scale(count, dtype, device)
        weight = scale / temperature
        chunks = _chunks(count, max(1, job.chunk_rows or 1))

        def rows_of(x: Tensor, sl: slice) -> Tensor:
            return x[sl] if idx is None else x.index_select(0, idx[sl])

        # log-normalisers: global max, then the sum of exp(z − max) (z − max stays exact, as
        # in torch.log_softmax); every rank joins every collective, also with no kept rows
        top = torch.empty(2, count, dtype=dtype, device=device)
        for sl in chunks:
            for side, x in enumerate((a2, b2)):
                top[side, sl] = (rows_of(x, sl).to(dtype) / temperature).amax(-1)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=job.group)
        top = torch.where(torch.isfinite(top), top, 0.0)
        mass = torch.empty(2, count, dtype=dtype, device=device)
        for sl in chunks:
            for side, x in enumerate((a2, b2)):
                z = rows_of(x, sl).to(dtype) / temperature - top[side, sl].unsqueeze(-1)
                mass[side, sl] = torch.exp(z).sum(-1)
        dist.all_reduce(mass, op=dist.ReduceOp.SUM, group=job.group)
        log_mass = torch.log(mass)

        def log_probs(sl: slice) -> tuple[Tensor, Tensor]:
            out = []
            for side, x in enumerate((a2, b2)):
                z = rows_of(x, sl).to(dtype) / temperature - top[side, sl].unsqueeze(-1)
                out.append(z - log_mass[side, sl].unsqueeze(-1))
            return out[0], out[1]

        stats: list[Tensor] = []
        for rnd in range(kernel.rounds):
            partial: list[list[Tensor]] = []
            kinds: list[str] = []
            for sl in chunks:
                lp, lq = log_probs(sl)
                prev = [s[sl] for s in stats]
                out = kernel.stats(rnd, lp, lq, prev, consts, {}, need_a, need_b)
                kinds = [k for _, k in out]
                partial.append([t for t, _ in out])
            if not chunks:  # no kept rows here: still join the collectives with empty stats
                lp = lq = torch.zeros(0, a2.shape[1], dtype=dtype, device=device)
                out = kernel.stats(rnd, lp, lq, [s[:0] for s in stats], consts, {}, need_a, need_b)
                kinds = [k for _, k in out]
                partial.append([t for t, _ in out])
            merged = [torch.cat([p[i] for p in partial]) for i in range(len(kinds))]
            stats.extend(_combine(list(zip(merged, kinds)), job.group))

        values = torch.empty(count, dtype=out_dtype, device=device)
        ga = (torch.zeros_like(a2) if idx is not None else torch.empty_like(a2)) if need_a else None
        gb = (torch.zeros_like(b2) if idx is not None else torch.empty_like(b2)) if need_b else None
        for sl in chunks:
            lp, lq = log_probs(sl)
            finished = kernel.finish(lp, lq, [s[sl] for s in stats], consts, {}, need_a, need_b)
            values[sl] = finished[0]
            if need_a or need_b:
                ca = cb = None
                if ga is not None:
                    ca = ga[sl] if idx is None else torch.empty_like(lp, dtype=a2.dtype)
                if gb is not None:
                    cb = gb[sl] if idx is None else torch.empty_like(lq, dtype=b2.dtype)
                write_grads(lp, lq, finished, ca, cb, weight)
                if idx is not None:
                    if ga is not None and ca is not None:
                        ga.index_copy_(0, idx[sl], ca)
                    if gb is not None and cb is not None:
                        gb.index_copy_(0, idx[sl], cb)
        empty = a2.new_empty(0)
        ctx.save_for_backward(ga if ga is not None else empty, gb if gb is not None else empty)
        return job.finish(values)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        check_backward_once(ctx)
        ga, gb = scale_saved_grads(ctx, ctx.saved_tensors, grad_out)
        return ga, gb, None


def vocab_parallel_divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    group: Any = None,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    check_nan: bool = False,
    chunk_size: int | None = None,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) of logits sharded along the vocabulary across a ``torch.distributed`` group.

    Each rank passes its own vocabulary slice of the logits, ``p`` (target / teacher) and
    ``q`` (model / student) of shape ``(..., V_r)`` (shards may differ in size; the same rows
    on every rank). Returns the divergence of the full rows
    :math:`P = \mathrm{softmax}(\mathrm{concat}_r\, p_r / T)` (likewise Q), identical on every
    rank, with gradients for the local shards; all-reduces combine the per-row maxima, sums and
    log-sum-exps (see the module docstring), so nothing of size V is communicated.

    Args:
        name: a registered divergence name, a :class:`~divergent.Divergence` with a chunk
            kernel, or a generator f (f-divergences without a named kernel use the float64
            generator kernel).
        p, q: local logit shards (``inputs`` are always logits here).
        group: the process group of the vocabulary shards (default: the world group).
        temperature, mask, reduction, normalizer, check_nan, **params: as in
            :func:`divergent.divergence`; ``mask`` and ``normalizer`` must be the same on
            every rank.
        chunk_size: rows per chunk (default: about 2**19 local elements on CPU).

    Returns:
        A scalar (``"mean"``, ``"sum"``) or a tensor of the leading shape (``"none"``); a row
        whose value is +∞ gets gradient 0.

    Raises:
        ValueError: if ``torch.distributed`` is not initialised, the divergence has no
            shardable kernel, or an input is invalid.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "vocab_parallel_divergence needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); for unsharded logits use "
            "divergent.divergence"
        )
    spec = resolve_divergence(name)
    bound = spec.bind(params)
    p, q = check_pair(p, q)
    opts = row_options(
        leading_shape=p.shape[:-1],
        device=p.device,
        temperature=temperature,
        mask=mask,
        reduction=reduction,
        normalizer=normalizer,
    )
    if check_nan:
        check_no_nan(p, "p")
        check_no_nan(q, "q")
    check_chunk_size(chunk_size)
    plan = kernel_for(spec, bound)
    if plan is None and spec.generator is not None:
        plan = generator_kernel(spec.f_generator(**bound))
    if plan is None:
        raise ValueError(
            f"divergence `{spec.name}` has no chunk kernel, which vocabulary sharding needs "
            "(its row function needs whole rows). Registered divergences and f-divergences "
            "(generators) are supported; or gather the logits and use divergent.divergence"
        )
    n_local = p.shape[-1]
    rows = chunk_size or max(1, CHUNK_ELEMENTS.get(p.device.type, 1 << 24) // n_local)
    job = EngineJob(
        spec=spec,
        params=bound,
        plan=plan,
        opts=opts,
        chunk_rows=rows,
        grad=torch.is_grad_enabled(),
        group=group,
    )
    return _VocabParallelFunction.apply(p.reshape(-1, n_local), q.reshape(-1, n_local), job)
