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

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from divergent._validation import (
    ROW_KEYWORDS,
    RowOptions,
    check_chunk_size,
    check_pair,
    row_keywords,
    row_label,
    row_options,
    split_keywords,
)
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.kernels import LSE, MAX, SUM, generator_kernel, kernel_for
from divergent.categorical.registry import DivergenceLike
from divergent.engine.chunked import (
    CHUNK_ELEMENTS,
    EngineJob,
    ForwardGradsFunction,
    save_forward_grads,
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


def _check_codes(top: Tensor, idx: Tensor | None, job: EngineJob) -> Tensor | None:
    """Rows to set to NaN (None: none), or a ``ValueError`` on every rank alike.

    ``top`` holds, after the MAX all-reduce, each side's global row maximum of z/T (rows
    0-1) and its worst input code over the shards (rows 2-3, see the caller).
    """
    codes = top[2:]
    no_mass = (top[:2] == -math.inf) & (codes == 0)
    flags = torch.stack([(codes == 3).any(), (codes > 0).any() | no_mass.any()]).tolist()
    if not any(flags):
        return None
    nan_rows = (codes == 3).any(0)
    invalid = ((codes == 1) | (codes == 2) | no_mass) & ~nan_rows
    if flags[1] and bool(invalid.any()):
        side, row = (int(v) for v in invalid.nonzero()[0])
        where = "a shard of `p`" if side == 0 else "a shard of `q`"
        flat = row if idx is None else int(idx[row])
        label = row_label(flat, job.opts.leading)
        code = int(codes[side, row])
        if code == 2:
            raise ValueError(
                f"{where} has a +inf entry in row {label}; logits must be finite or -inf "
                "(-inf = zero probability)"
            )
        if code == 1:
            raise ValueError(
                f"{where} row {label}: logits / temperature overflow the compute dtype "
                f"(temperature {job.temperature:g}); use a larger temperature, float64 "
                "inputs, or rescale the logits"
            )
        raise ValueError(
            f"{where.replace('a shard of ', '')} row {label} is all -inf on every rank: it has "
            "no probability mass; drop it with `mask` (False = skip the row)"
        )
    return nan_rows


def _agree_across_ranks(
    spec_key: str,
    opts: RowOptions,
    n_rows: int,
    nan_row: int,
    device: torch.device,
    group: Any,
) -> None:
    """One small all-gather: every rank must pass the same rows and options.

    A different temperature, name, parameter, mask, normalizer or reduction on one rank
    would silently give wrong values, and different row counts would make the collectives
    abort; each rank compares the table and raises the same ``ValueError``. ``nan_row`` (the
    first row holding NaN on this rank's shards, −1 for none) serves ``check_nan=True``.
    """
    keep = opts.keep
    kept = torch.arange(1, n_rows + 1, dtype=torch.float64, device=device)
    if keep is not None:
        kept = kept[keep.to(device)]
    if isinstance(opts.normalizer, Tensor):
        norm = float(opts.normalizer)
    else:
        norm = -1.0 if opts.normalizer is None else float(opts.normalizer)
    fields = {
        "number of rows": float(n_rows),
        "leading shape": float(zlib.crc32(repr(tuple(opts.leading)).encode())),
        "divergence and parameters": float(zlib.crc32(spec_key.encode())),
        "temperature": opts.temperature,
        "reduction": float(("none", "sum", "mean").index(opts.reduction)),
        "normalizer": norm,
        "mask (kept rows)": float(kept.numel()),
        "mask (which rows)": float(kept.sum()),
        "mask (which rows, squares)": float((kept * kept).sum()),
        "check_nan": float(nan_row),
    }
    mine = torch.tensor(list(fields.values()), dtype=torch.float64, device=device)
    table = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(table, mine, group=group)
    rows = torch.stack(table).cpu()
    for j, key in enumerate(fields):
        column = rows[:, j]
        if key == "check_nan":
            bad = [(r, int(v)) for r, v in enumerate(column.tolist()) if v >= 0]
            if bad:
                rank, row = bad[0]
                raise ValueError(
                    f"a shard contains NaN in row {row_label(row, opts.leading)} (on rank "
                    f"{rank}; check_nan=True)"
                )
            continue
        if not bool((column == column[0]).all()):
            values = column.tolist() if "mask" not in key and "divergence" not in key else None
            per_rank = f": {values} by rank" if values is not None else ""
            raise ValueError(
                f"vocab_parallel_divergence: the {key} differs across ranks{per_rank}; every "
                "rank must pass the same rows (its own vocabulary slice of them), name, "
                "parameters, temperature, mask, reduction and normalizer"
            )


class _VocabParallelFunction(ForwardGradsFunction):
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
        # rows 2-3 carry each side's input code (0 fine, 1 overflow at this temperature,
        # 2 a +inf entry, 3 NaN) in the same MAX all-reduce, so every rank sees every shard's
        # bad rows and all of them raise (or propagate NaN) together
        top = torch.empty(4, count, dtype=dtype, device=device)
        for sl in chunks:
            for side, x in enumerate((a2, b2)):
                raw = rows_of(x, sl).amax(-1).to(dtype)  # max(x)/T = max(x/T): T > 0
                scaled = raw / temperature
                nan = torch.isnan(raw)
                code = torch.where(torch.isinf(scaled) & torch.isfinite(raw), 1.0, 0.0)
                code = torch.where(torch.isposinf(raw), 2.0, code)
                top[side, sl] = torch.where(nan, -math.inf, scaled)
                top[2 + side, sl] = torch.where(nan, 3.0, code)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=job.group)
        nan_rows = _check_codes(top, idx, job)
        top = top[:2]
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
        if nan_rows is not None:
            values = torch.where(nan_rows, math.nan, values)
        save_forward_grads(ctx, a2, (ga, gb))
        return job.finish(values)


@row_keywords("group", *ROW_KEYWORDS, "check_nan", "chunk_size")
def vocab_parallel_divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    group: Any = None,
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
            shardable kernel, or an input is invalid; on every rank alike when the ranks
            disagree on the rows, name, parameters, temperature, mask, reduction or normalizer
            (checked with one small all-gather), when a shard holds a +inf logit, a row is
            all −inf on every shard, or (``check_nan=True``) a shard holds NaN. Without
            ``check_nan`` a NaN in any shard makes that row NaN on every rank.
        RuntimeError: on a second-order graph request (first-order only).
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "vocab_parallel_divergence needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); for unsharded logits use "
            "divergent.divergence"
        )
    row, params = split_keywords(params, ROW_KEYWORDS)
    spec = resolve_divergence(name)
    bound = spec.bind(params)
    p, q = check_pair(p, q)
    opts = row_options(leading_shape=p.shape[:-1], device=p.device, **row)
    check_chunk_size(chunk_size)
    n_local = p.shape[-1]
    a2, b2 = p.reshape(-1, n_local), q.reshape(-1, n_local)
    nan_row = -1
    if check_nan:
        bad = torch.isnan(a2).any(-1) | torch.isnan(b2).any(-1)
        if opts.keep is not None:
            bad = bad & opts.keep
        if bool(bad.any()):
            nan_row = int(bad.nonzero()[0, 0])
    spec_key = repr((spec.name, sorted(bound.items())))
    _agree_across_ranks(spec_key, opts, a2.shape[0], nan_row, p.device, group)
    plan = kernel_for(spec, bound)
    if plan is None and spec.generator is not None:
        plan = generator_kernel(spec.f_generator(**bound))
    if plan is None:
        raise ValueError(
            f"divergence `{spec.name}` has no chunk kernel, which vocabulary sharding needs "
            "(its row function needs whole rows). Registered divergences and f-divergences "
            "(generators) are supported; or gather the logits and use divergent.divergence"
        )
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
    return _VocabParallelFunction.apply(a2, b2, job)
