r"""Row-chunked engine: divergences over large vocabularies with one-pass gradients.

:func:`divergent.divergence` routes large inputs here (see :func:`set_engine`). Rows are
processed in chunks of about ``2**19`` elements; for each chunk one kernel
(:mod:`divergent.categorical.kernels`) computes the row values and, when an input requires grad, the
logit gradients

.. math::
    \frac{\partial D}{\partial a_j} = \frac{w}{T}\Big(A_j - p_j \sum_x A_x\Big),\qquad
    \frac{\partial D}{\partial b_j} = \frac{w}{T}\Big(B_j - q_j \sum_x B_x\Big)

(``w`` the row's weight in the reduction), written straight into the N×V gradient buffers the
caller receives. No autograd graph over N×V intermediates is kept: the extra memory is
O(chunk × V). The backward pass only rescales the stored gradients by the incoming gradient
(and skips even that when it is 1, the usual ``loss.backward()``).

Contract (beyond :func:`divergent.divergence`'s):

* masked rows are skipped: they are never read, their value is 0 and their gradient 0;
* a row whose value is ``+inf`` (see each entry's ``infinite_when``; also a finite value
  beyond the float range, e.g. χ² with p²/q > 3e38) gets gradient 0: the gradient is undefined
  there, and 0 is what the reference path returns for structurally infinite rows of the named
  divergences. A reduced loss containing such a row is ``+inf``;
* a kept row holding NaN is NaN (read from the first column of its log-softmax, which a NaN,
  a +inf entry or an all −inf row turns NaN; the last two, and logits that overflow at the
  temperature, are then reported as a ``ValueError`` naming the side and the row);
* the result is first-order differentiable only: a request for a higher-order graph
  (``create_graph=True``: double backward, Hessian-vector products, gradient penalties,
  ``gradgradcheck``) raises a ``RuntimeError`` instead of returning a gradient that autograd
  cannot differentiate; use ``engine="reference"`` for it (and for ``gradcheck``). Backward
  twice through the same graph works with unit incoming gradients (``retain_graph=True``) and
  raises otherwise (the stored gradient is rescaled in place, to avoid a second N×V buffer);
* ``inputs="probs"`` always uses the reference path; ``inputs="log_probs"`` at T = 1 (used
  as given, not renormalised) and divergences without a kernel (a user-registered entry, a
  user generator) are differentiated chunk by chunk with autograd (still O(chunk × V)).

The per-chunk kernel is compiled with ``torch.compile`` (dynamic shapes: compiled once per
process, kernel and dtype, not per shape) for large calls when compilation works; set
``DIVERGENT_COMPILE=0`` or call ``set_compile(False)`` to stay eager.

References:
    Liger-Kernel's chunked losses (Hsu et al. 2024, arXiv:2410.10989) compute gradients in the
    forward pass chunk by chunk in the same way; Milakov & Gimelshein 2018 (online softmax,
    arXiv:1805.02867) for the log-sum-exp statistics.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergent._validation import (
    ENGINES,
    RowOptions,
    check_choice,
    explain_nan_rows,
    nan_rows_of,
)
from divergent.categorical.kernels import ChunkKernel, ElementwiseKernel, KernelPlan, kernel_for
from divergent.categorical.registry import Divergence

__all__ = [
    "compile_mode",
    "engine_mode",
    "set_compile",
    "set_engine",
]

COMPILE_MODES = ("auto", "on", "off")

AUTO_MIN_ELEMENTS = 1 << 16
"""``engine="auto"``: calls with at least this many elements (rows × classes) use the engine."""

COMPILE_MIN_ELEMENTS = 1 << 23
"""``compile="auto"``: calls with at least this many elements compile the chunk kernel."""

CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 24}
"""Default elements per chunk of the eager kernel by device type (rows = elements // classes).

Eager kernels keep ~20 chunk-sized temporaries alive (2**19 fp32 elements = 2 MiB each)."""

COMPILED_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}
"""Default elements per chunk of the compiled kernel (its temporaries are fused away; fewer,
larger chunks mean fewer parallel regions, which matters on a loaded CPU)."""


def _env_mode(var: str, default: str, allowed: Sequence[str]) -> str:
    raw = os.environ.get(var, default).strip().lower()
    aliases = {"0": "off", "false": "off", "no": "off", "1": "on", "true": "on", "yes": "on"}
    if var == "DIVERGENT_COMPILE":
        raw = aliases.get(raw, raw)
    if raw not in allowed:
        warnings.warn(
            f"{var}={raw!r} is not one of {tuple(allowed)}; using {default!r}", stacklevel=2
        )
        return default
    return raw


_STATE: dict[str, str] = {
    "engine": _env_mode("DIVERGENT_ENGINE", "auto", ENGINES),
    "compile": _env_mode("DIVERGENT_COMPILE", "auto", COMPILE_MODES),
}


def set_engine(mode: str) -> None:
    """Choose how :func:`divergent.divergence` evaluates (process-wide default).

    Args:
        mode: ``"auto"`` (the chunked engine for calls with at least
            :data:`AUTO_MIN_ELEMENTS` rows × classes, the reference path below),
            ``"chunked"`` (always the engine) or ``"reference"`` (always the autograd
            reference path, e.g. for double backward). The environment variable
            ``DIVERGENT_ENGINE`` sets the initial value. A per-call ``engine=`` overrides it.
    """
    _STATE["engine"] = check_choice(mode, "engine", ENGINES)


def engine_mode() -> str:
    """The process-wide default engine (see :func:`set_engine`)."""
    return _STATE["engine"]


def set_compile(mode: bool | str) -> None:
    """Turn ``torch.compile`` of the chunk kernel on, off, or automatic.

    Args:
        mode: ``True``/``"on"`` (compile every kernel call that can be compiled),
            ``False``/``"off"`` (always eager) or ``"auto"`` (compile calls with at least
            :data:`COMPILE_MIN_ELEMENTS` elements). ``DIVERGENT_COMPILE=0|1|auto`` sets the
            initial value. A kernel whose compilation fails falls back to eager with one
            warning.
    """
    if mode is True:
        mode = "on"
    elif mode is False:
        mode = "off"
    if mode not in COMPILE_MODES:
        raise ValueError(f"`compile` must be True, False or one of {COMPILE_MODES}, got {mode!r}")
    _STATE["compile"] = mode


def compile_mode() -> str:
    """The current compile mode: ``"auto"``, ``"on"`` or ``"off"``."""
    return _STATE["compile"]


@contextlib.contextmanager
def _settings(engine: str | None = None, compile: bool | str | None = None) -> Iterator[None]:
    """Temporarily change the engine / compile defaults (tests and benchmarks)."""
    old = dict(_STATE)
    try:
        if engine is not None:
            set_engine(engine)
        if compile is not None:
            set_compile(compile)
        yield
    finally:
        _STATE.update(old)


# --------------------------------------------------------------------------------------------
# the per-chunk function (eager or compiled)
# --------------------------------------------------------------------------------------------
def _log_probs(x: Tensor, temperature: Tensor, dtype: torch.dtype) -> Tensor:
    """log_softmax(x / T) as ``(z − max) − log Σ exp(z − max)`` (as ``torch.log_softmax``).

    Subtracting the maximum first keeps ``z − max`` exact, so logits of magnitude 1e4 lose
    nothing (forming ``max + log Σ`` first would round to the logits' ulp, ~1e-3).
    """
    # torch.log_softmax computes exactly this form, in one fused pass in eager mode
    return torch.log_softmax(x.to(dtype) / temperature, dim=-1)


def run_stats(
    kernel: ChunkKernel,
    lp: Tensor,
    lq: Tensor,
    consts: Sequence[Tensor],
    cache: dict[str, Any],
    need_a: bool,
    need_b: bool,
    combine: Callable[[list[tuple[Tensor, str]]], list[Tensor]] | None = None,
) -> list[Tensor]:
    """All statistic rounds of ``kernel``; ``combine`` all-reduces each round (vocab-parallel)."""
    stats: list[Tensor] = []
    for rnd in range(kernel.rounds):
        out = kernel.stats(rnd, lp, lq, stats, consts, cache, need_a, need_b)
        stats.extend(combine(out) if combine is not None else [t for t, _ in out])
    return stats


def write_grads(
    lp: Tensor,
    lq: Tensor,
    finished: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None, Tensor],
    ga: Tensor | None,
    gb: Tensor | None,
    weight: Tensor,
) -> None:
    """``ga ← w (A − p ΣA)``, ``gb ← w (B − q ΣB)`` (``weight`` = scale/T).

    Rows whose value is +inf (infinite divergence, or a finite one beyond the float range)
    get gradient 0.
    """
    value, infinite, a, sum_a, b, sum_b = finished
    bad = (infinite | torch.isinf(value)).unsqueeze(-1)
    if ga is not None and a is not None:
        g = (a - lp.exp() * sum_a.unsqueeze(-1)) * weight
        ga.copy_(torch.where(bad, 0.0, g))
    if gb is not None and b is not None:
        g = (b - lq.exp() * sum_b.unsqueeze(-1)) * weight
        gb.copy_(torch.where(bad, 0.0, g))


def fused_chunk(
    kernel: ChunkKernel,
    consts: Sequence[Tensor],
    a: Tensor,
    b: Tensor,
    ga: Tensor | None,
    gb: Tensor | None,
    temperature: Tensor,
    scale: Tensor,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Row values of a chunk of logits ``a`` (P) and ``b`` (Q); gradients into ``ga``/``gb``.

    ``ga``/``gb`` (same shape as ``a``; any float dtype) receive ``scale`` × the gradient of
    each row's value with respect to the logits; pass None to skip a side. Returns the values
    and a mask of rows whose value is +inf: their gradient rows must be zeroed by the caller
    when the kernel wrote them in the single-pass form (below); otherwise they are already 0.

    Single pass: when every requested side's gradient sum is a constant on normalised rows
    (``ElementwiseKernel.sum_a``/``sum_b``: KL's student side, reverse KL's teacher side, soft
    cross-entropy), the gradient depends on no row statistic but the log-normalisers, so it
    is written in the same loop that sums the value (one pass fewer, no stored p / q).
    """
    need_a, need_b = ga is not None, gb is not None
    lp = _log_probs(a, temperature, dtype)
    lq = _log_probs(b, temperature, dtype)
    weight = scale / temperature
    if (
        isinstance(kernel, ElementwiseKernel)
        and (need_a or need_b)
        and (not need_a or kernel.sum_a is not None)
        and (not need_b or kernel.sum_b is not None)
    ):
        term, inf_e, ea, eb = kernel.elem(lp, lq, consts, need_a, need_b)
        total = term.sum(-1)
        if inf_e is None:
            infinite = torch.zeros_like(total, dtype=torch.bool)
        else:
            infinite = inf_e.sum(-1, dtype=total.dtype) > 0
        value = torch.where(infinite, math.inf, total)
        if ga is not None and ea is not None:
            ga.copy_((ea - lp.exp() * kernel.sum_a) * weight)
        if gb is not None and eb is not None:
            gb.copy_((eb - lq.exp() * kernel.sum_b) * weight)
        return _mark_nan_rows(value, infinite | torch.isinf(value), lp, lq)
    cache: dict[str, Any] = {}
    stats = run_stats(kernel, lp, lq, consts, cache, need_a, need_b)
    finished = kernel.finish(lp, lq, stats, consts, cache, need_a, need_b)
    if need_a or need_b:
        write_grads(lp, lq, finished, ga, gb, weight)
    return _mark_nan_rows(finished[0], finished[1] | torch.isinf(finished[0]), lp, lq)


def _mark_nan_rows(
    value: Tensor, infinite: Tensor, lp: Tensor, lq: Tensor
) -> tuple[Tensor, Tensor]:
    """NaN for rows whose log-softmax is NaN (read from column 0 only: nearly free).

    ``log_softmax`` spreads a NaN entry, a +inf entry and an all −inf row over the whole row
    (through the row maximum), so the first column tells; the engine then keeps NaN rows NaN
    and reports the other two (:func:`divergent._validation.explain_nan_rows`).
    """
    bad = torch.isnan(lp[:, 0]) | torch.isnan(lq[:, 0])
    return torch.where(bad, math.nan, value), infinite & ~bad


def _entry_template(a, b, ga, gb, temperature, scale, consts, _kernel=None, _dtype=None):  # type: ignore[no-untyped-def]
    return fused_chunk(_kernel, consts, a, b, ga, gb, temperature, scale, _dtype)


_COMPILED: dict[tuple[Any, ...], Callable[..., Tensor]] = {}
_COMPILE_FAILED: set[tuple[Any, ...]] = set()


def _compiled_entry(
    kernel: ChunkKernel, dtype: torch.dtype, flags: tuple[bool, bool]
) -> Callable[..., Tensor]:
    """A ``torch.compile``'d chunk function, one per (kernel, dtype, sides).

    Each gets its own code object (so each has its own dynamo cache and the per-code-object
    recompile limit is never shared between kernels); shapes are dynamic, so the chunk's row
    count and the vocabulary size never trigger a recompile.
    """
    key = (id(kernel), dtype, flags)
    fn = _COMPILED.get(key)
    if fn is None:
        tag = f"_divergent_chunk_{type(kernel).__name__}_{len(_COMPILED)}"
        code = _entry_template.__code__.replace(co_name=tag)
        raw = types.FunctionType(code, _entry_template.__globals__, tag, (kernel, dtype))
        fn = torch.compile(raw, dynamic=True)
        _COMPILED[key] = fn
    return fn


def _eager_entry(kernel: ChunkKernel, dtype: torch.dtype) -> Callable[..., Tensor]:
    def run(a, b, ga, gb, temperature, scale, consts):  # type: ignore[no-untyped-def]
        return fused_chunk(kernel, consts, a, b, ga, gb, temperature, scale, dtype)

    return run


def _should_compile(kernel: ChunkKernel, numel: int, compile: bool | str | None) -> bool:
    mode = compile_mode() if compile is None else compile
    if mode in (True, "on"):
        wanted = True
    elif mode in (False, "off"):
        wanted = False
    elif mode == "auto":
        wanted = numel >= COMPILE_MIN_ELEMENTS
    else:
        raise ValueError(f"`compile` must be True, False or one of {COMPILE_MODES}, got {mode!r}")
    return wanted and kernel.compilable and not torch.compiler.is_compiling()


class _ChunkRunner:
    """Calls the compiled entry, falling back to eager (once, with a warning) if it fails."""

    def __init__(
        self, kernel: ChunkKernel, dtype: torch.dtype, flags: tuple[bool, bool], compiled: bool
    ) -> None:
        self.eager = _eager_entry(kernel, dtype)
        self.key = (id(kernel), dtype, flags)
        self.compiled = _compiled_entry(kernel, dtype, flags) if compiled else None
        if self.key in _COMPILE_FAILED:
            self.compiled = None

    def __call__(self, *args: Any) -> Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # inductor / compiler missing or failing: stay correct
                _COMPILE_FAILED.add(self.key)
                self.compiled = None
                warnings.warn(
                    f"divergent: torch.compile of the chunk kernel failed ({type(err).__name__}: "
                    f"{str(err)[:200]}); using the eager kernel. Set DIVERGENT_COMPILE=0 to "
                    "silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.eager(*args)


# --------------------------------------------------------------------------------------------
# autograd-per-chunk fallback (entries without a kernel, log-probs used as given)
# --------------------------------------------------------------------------------------------
def _autograd_chunk(
    spec: Divergence,
    params: dict[str, float],
    normalize: bool,
    dtype: torch.dtype,
) -> Callable[..., Tensor]:
    def run(a, b, ga, gb, temperature, scale, consts):  # type: ignore[no-untyped-def]
        need_a, need_b = ga is not None, gb is not None
        with torch.enable_grad():
            xa = a.detach().to(dtype).requires_grad_(need_a)
            xb = b.detach().to(dtype).requires_grad_(need_b)
            lp = _log_probs(xa, temperature, dtype) if normalize else xa
            lq = _log_probs(xb, temperature, dtype) if normalize else xb
            rows = spec.row_fn(lp, lq, **params)
            rows = torch.where(nan_rows_of(lp, lq), math.nan, rows)
            infinite = torch.isinf(rows) & (rows > 0)
            if not (need_a or need_b):
                return rows.detach(), infinite
            weights = torch.where(infinite, 0.0, scale.to(rows.dtype).reshape(-1).expand_as(rows))
            wanted = [x for x, need in ((xa, need_a), (xb, need_b)) if need]
            grads = list(torch.autograd.grad(rows, wanted, weights, allow_unused=True))
        bad = infinite.unsqueeze(-1)
        for out in (ga, gb):
            if out is not None:
                g = grads.pop(0)
                out.copy_(torch.zeros_like(out) if g is None else torch.where(bad, 0.0, g))
        return rows.detach(), infinite

    return run


# --------------------------------------------------------------------------------------------
# the autograd function
# --------------------------------------------------------------------------------------------
@dataclass
class EngineJob:
    """One call of an engine (chunked, fused linear, vocabulary parallel), besides its tensors.

    The one job type of the three engines: the divergence, its kernel plan and the validated
    row options (:class:`~divergent._validation.RowOptions`: temperature, kept rows,
    reduction, normalizer), plus the few settings one engine alone reads (the fused head's
    ``softcap`` / ``logit_scale`` / ``vocab``, the vocabulary-parallel process ``group``).
    """

    spec: Divergence
    params: dict[str, float]
    plan: KernelPlan | None
    opts: RowOptions
    normalize: bool = True  # False: log-probs used as given (inputs="log_probs" at T = 1)
    chunk_rows: int | None = None  # None: by device and kernel mode (default_chunk_rows)
    compile: bool | str | None = None
    grad: bool = True  # torch.is_grad_enabled() at the call (needs_input_grad ignores it)
    softcap: float | None = None  # fused linear: c in c·tanh(z/c)
    logit_scale: float | None = None  # fused linear: λ multiplying the logits
    vocab: int = 0  # fused linear: classes used of each head
    group: Any = None  # vocabulary parallel: the process group

    @property
    def temperature(self) -> float:
        return self.opts.temperature

    @property
    def keep(self) -> Tensor | None:
        return self.opts.keep

    @property
    def reduction(self) -> str:
        return self.opts.reduction

    def scale(self, count: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The weight of each kept row's value in the reduced loss (see reduction_scale)."""
        return reduction_scale(self.opts.reduction, self.opts.normalizer, count, dtype, device)

    def finish(self, values: Tensor) -> Tensor:
        """The caller's result from the kept rows' values (the shared ``finish_rows``)."""
        return self.opts.finish(values)


def default_chunk_rows(n_classes: int, device: torch.device, mode: str = "eager") -> int:
    """Rows per chunk for ``mode`` ``"compiled"``, ``"eager"`` or ``"autograd"`` (at least 1).

    About :data:`COMPILED_CHUNK_ELEMENTS` / :data:`CHUNK_ELEMENTS` elements per chunk; the
    autograd fallback keeps its whole graph per chunk alive, so it takes a quarter of eager's.
    """
    table = COMPILED_CHUNK_ELEMENTS if mode == "compiled" else CHUNK_ELEMENTS
    elements = table.get(device.type, table["cuda"])
    if mode == "autograd":
        elements //= 4
    return max(1, elements // max(1, n_classes))


def _compute_dtype(a: Tensor, b: Tensor, plan: KernelPlan | None) -> torch.dtype:
    if plan is not None and plan.kernel.dtype is not None:
        return plan.kernel.dtype
    if torch.float64 in (a.dtype, b.dtype):
        return torch.float64
    return torch.float32


def reduction_scale(
    reduction: str,
    normalizer: float | Tensor | None,
    count: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """The weight of each kept row's value in the reduced loss, as a 0-d tensor.

    ``1/count`` for ``"mean"`` (``1/normalizer`` when given; a fully masked batch divides by
    1), and 1 for ``"sum"`` / ``"none"``.
    """
    if reduction == "mean":
        if normalizer is None:
            value: float | Tensor = 1.0 / max(count, 1)
        elif isinstance(normalizer, Tensor):
            value = 1.0 / normalizer.detach().to(device=device, dtype=dtype)
        else:
            value = 1.0 / normalizer
    else:
        value = 1.0
    return torch.as_tensor(value, dtype=dtype, device=device).reshape(())


def _run_rows(
    job: EngineJob, a2: Tensor, b2: Tensor, need_a: bool, need_b: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Row values (over kept rows) and the scaled gradient buffers."""
    n_rows, n_classes = a2.shape
    device = a2.device
    dtype = _compute_dtype(a2, b2, job.plan)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    idx = None if job.keep is None else job.keep.nonzero().squeeze(1)
    count = n_rows if idx is None else int(idx.numel())
    scale = job.scale(count, dtype, device)
    temperature = torch.tensor(job.temperature, dtype=dtype, device=device)
    ga = (torch.zeros_like(a2) if idx is not None else torch.empty_like(a2)) if need_a else None
    gb = (torch.zeros_like(b2) if idx is not None else torch.empty_like(b2)) if need_b else None
    values = torch.empty(count, dtype=out_dtype, device=device)
    bad = torch.zeros(count, dtype=torch.bool, device=device)
    if count == 0:
        return values, ga, gb

    if job.plan is not None:
        consts = job.plan.tensors(dtype, device)
        compiled = _should_compile(job.plan.kernel, count * n_classes, job.compile)
        flags = (need_a, need_b)
        run: Callable[..., Tensor] = _ChunkRunner(job.plan.kernel, dtype, flags, compiled)
        mode = "compiled" if compiled else "eager"
    else:
        consts = ()
        run = _autograd_chunk(job.spec, job.params, job.normalize, dtype)
        mode = "autograd"

    rows = job.chunk_rows or default_chunk_rows(n_classes, device, mode)
    buf_a = buf_b = None
    if idx is not None:
        width = min(rows, count)
        buf_a = torch.empty(width, n_classes, dtype=a2.dtype, device=device) if need_a else None
        buf_b = torch.empty(width, n_classes, dtype=b2.dtype, device=device) if need_b else None
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        if idx is None:
            a, b = a2[start:stop], b2[start:stop]
            ca = ga[start:stop] if ga is not None else None
            cb = gb[start:stop] if gb is not None else None
        else:
            sel = idx[start:stop]
            a, b = a2.index_select(0, sel), b2.index_select(0, sel)
            ca = buf_a[: stop - start] if buf_a is not None else None
            cb = buf_b[: stop - start] if buf_b is not None else None
        values[start:stop], bad[start:stop] = run(a, b, ca, cb, temperature, scale, consts)
        if idx is not None:
            if ga is not None and ca is not None:
                ga.index_copy_(0, sel, ca)
            if gb is not None and cb is not None:
                gb.index_copy_(0, sel, cb)
    explain_nan_rows(
        values,
        [("p", a2), ("q", b2)],
        rows=idx,
        leading=job.opts.leading,
        inputs=job.opts.inputs,
        temperature=job.temperature,
    )
    if ga is not None or gb is not None:
        zero_rows(bad, idx, ga, gb)
    return values, ga, gb


def zero_rows(bad: Tensor, idx: Tensor | None, *grads: Tensor | None) -> None:
    """Zero the gradient rows of rows with value +inf (one host sync, then only those rows)."""
    rows = bad.nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    if idx is not None:
        rows = idx[rows]
    for g in grads:
        if g is not None:
            g.index_fill_(0, rows, 0.0)


SECOND_ORDER_HINT = (
    "use engine='reference' (divergent.divergence(..., engine='reference'), or "
    "divergent.set_engine('reference')), whose plain autograd graph can be differentiated again"
)


def first_order_backward(hint: str = SECOND_ORDER_HINT) -> Callable[[Callable], Callable]:
    """``once_differentiable`` that also refuses a higher-order graph request at once.

    The engines compute their gradients in closed form (in the forward pass), so the gradient
    they hand back is a constant to autograd: with ``create_graph=True`` (a gradient penalty,
    double backward, ``gradgradcheck``) plain ``once_differentiable`` would let a penalty on
    that gradient contribute nothing, silently. Autograd runs backward with grad mode on
    exactly when a graph of the gradient is requested, so this raises a ``RuntimeError``
    pointing to ``hint`` instead.
    """

    def decorate(backward: Callable) -> Callable:
        inner = once_differentiable(backward)

        @functools.wraps(backward)
        def wrapper(ctx: Any, *grads: Any) -> Any:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    "divergent: this divergence's gradient comes from a first-order engine "
                    "(computed in closed form, not as an autograd graph), so it cannot be "
                    "differentiated again (create_graph=True, double backward, gradient "
                    f"penalties, gradgradcheck); {hint}"
                )
            return inner(ctx, *grads)

        return wrapper

    return decorate


def check_backward_once(ctx: Any) -> None:
    """Raise on a second backward through a node whose saved gradient was rescaled in place."""
    if getattr(ctx, "_scaled", False):
        raise RuntimeError(
            "divergent: the gradient of this chunked divergence was computed in the forward "
            "pass and rescaled in place by the first backward; a second backward through the "
            "same graph (retain_graph=True, torch.autograd.gradcheck) is only supported when "
            "every incoming gradient is 1. Use engine='reference' "
            "(divergent.divergence(..., engine='reference')) to differentiate it several times."
        )


def scale_saved_grads(
    ctx: Any, grads: Sequence[Tensor | None], grad_out: Tensor
) -> list[Tensor | None]:
    """Rescale gradients computed in the forward pass by the incoming gradient, in place.

    A scalar incoming gradient equal to 1 (``loss.backward()``) returns the buffers untouched
    (no pass over them), which may be repeated; otherwise they are scaled in place (no extra
    N×V buffer, the common ``weight * loss`` case), after which a second backward through the
    same graph raises instead of returning rescaled buffers.
    """
    present = [g if g is not None and g.numel() > 0 else None for g in grads]
    if grad_out.dim() == 0 and bool(grad_out == 1) and not getattr(ctx, "_scaled", False):
        return present  # untouched: safe to hand out again (retain_graph with unit gradients)
    check_backward_once(ctx)
    ctx._scaled = True
    factor = grad_out if grad_out.dim() == 0 else grad_out.reshape(-1, 1)
    return [None if g is None else g.mul_(factor.to(g.dtype)) for g in present]


def save_forward_grads(ctx: Any, like: Tensor, grads: Sequence[Tensor | None]) -> None:
    """Save the gradients an engine computed in its forward pass (an empty tensor for None)."""
    empty = like.new_empty(0)
    ctx.save_for_backward(*[empty if g is None else g for g in grads])


def saved_grads_backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    """The backward of an engine Function whose last ``forward`` input is its job: the saved
    forward-pass gradients scaled by ``grad_out`` (:func:`scale_saved_grads`), then None."""
    check_backward_once(ctx)  # before autograd's own (less clear) version check
    return (*scale_saved_grads(ctx, ctx.saved_tensors, grad_out), None)


class ForwardGradsFunction(torch.autograd.Function):
    """Base of the engine Functions that compute their gradients in the forward pass and save
    them with :func:`save_forward_grads`; the backward is :func:`saved_grads_backward`."""

    @staticmethod
    @first_order_backward()
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return saved_grads_backward(ctx, grad_out)


class _ChunkedFunction(ForwardGradsFunction):
    @staticmethod
    def forward(ctx: Any, a2: Tensor, b2: Tensor, job: EngineJob) -> Tensor:  # type: ignore[override]
        # needs_input_grad ignores no_grad(): the grad mode is read before apply (job.grad)
        need_a = ctx.needs_input_grad[0] and job.grad
        need_b = ctx.needs_input_grad[1] and job.grad
        values, ga, gb = _run_rows(job, a2, b2, need_a, need_b)
        save_forward_grads(ctx, a2, (ga, gb))
        return job.finish(values)


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
def _is_functorch_tensor(x: Tensor) -> bool:
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except Exception:  # private API moved: assume a plain tensor
        return False


def use_engine(engine: str | None, p: Tensor, q: Tensor, inputs: str) -> bool:
    """Whether :func:`divergent.divergence` should use the chunked engine for this call
    (``engine`` already checked by :func:`divergent._validation.row_options`)."""
    mode = engine_mode() if engine is None else engine
    if mode == "reference" or inputs == "probs":
        return False
    if torch.compiler.is_compiling() or _is_functorch_tensor(p) or _is_functorch_tensor(q):
        return False  # inside a user's torch.compile / vmap / grad: let them trace the reference
    if mode == "chunked":
        return True
    return p.numel() >= AUTO_MIN_ELEMENTS


def engine_divergence(
    spec: Divergence,
    params: dict[str, float],
    p: Tensor,
    q: Tensor,
    opts: RowOptions,
    *,
    chunk_size: int | None = None,
    compile: bool | str | None = None,
) -> Tensor:
    """The engine behind :func:`divergent.divergence` (inputs and ``opts`` already validated)."""
    n_classes = p.shape[-1]
    a2, b2 = p.reshape(-1, n_classes), q.reshape(-1, n_classes)
    normalize = not (opts.inputs == "log_probs" and opts.temperature == 1.0)
    job = EngineJob(
        spec=spec,
        params=params,
        plan=kernel_for(spec, params) if normalize else None,
        opts=opts,
        normalize=normalize,
        chunk_rows=chunk_size,
        compile=compile,
        grad=torch.is_grad_enabled(),
    )
    return _ChunkedFunction.apply(a2, b2, job)
