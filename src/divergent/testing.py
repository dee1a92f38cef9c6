r"""The contract battery of a registered divergence: ``check_divergence(entry_or_name)``.

In the spirit of scikit-learn's ``check_estimator``: one call runs every check that the
library's own divergences pass, driven by the entry itself (its row function, parameters,
generator, declared symmetry and bound, kernel), so that a user who registers a divergence
can hold it to the same contract::

    >>> from divergent.testing import check_divergence
    >>> report = check_divergence("hellinger")
    >>> report.name, len(report.cases) >= 1
    ('hellinger', True)

The checks, for each parameter case of :func:`parameter_cases` (first failure raises an
``AssertionError`` naming the entry, the parameters, the check and the numbers):

``reference``
    float64 values of the entry's own row function on small exact cases (probability vectors
    with zeros, disjoint supports, equal rows) and on random logits; for f-divergences they
    must equal the generator sum :math:`\sum_x q\,f(p/q)` evaluated directly in float64 (with
    :math:`q f(0^+)` and :math:`p \lim_{t\to\infty} f(t)/t` for atoms outside one support).
``axioms`` (entries with ``is_divergence``)
    :math:`D \ge 0`, :math:`D(P\|P) = 0`, :math:`D(P\|Q) > 0` for :math:`P \ne Q` (at interior
    parameter values: an inclusive end of a parameter's range may be a degenerate limit, such
    as Rényi order 0, which is 0 whenever the supports agree); the value is unchanged by a
    common permutation of the classes and by adding constants to the logits.
``symmetry``
    :math:`D(P\|Q) = D(Q\|P)` where ``entry.symmetric(**params)`` says so.
``bound``
    every value (disjoint supports included) is at most ``entry.upper_bound(**params)``.
``gradcheck``
    ``torch.autograd.gradcheck`` in float64 on the reference path with respect to both
    arguments, with a mask and a temperature.
``engine``
    ``engine="chunked"`` (several chunks, eager kernel or the autograd fallback) equals the
    reference path in value and in gradients to both sides, for every reduction, with a mask,
    a temperature and a normalizer: tightly in float64, and in float32 against float64
    (values: relative 1e-4 or absolute 1e-6; gradients: 1e-3 of the largest entry, since
    the softmax projection cancels in float32 where p/q is far from 1).
``options``
    masked rows are 0 and are left out of ``"sum"``/``"mean"``, ``normalizer`` divides the
    sum, a fully masked batch is 0 with zero gradient, a temperature T equals dividing the
    logits by T, and ``inputs="log_probs"``/``"probs"`` equal logits.
``bf16``
    bfloat16 inputs are computed in float32 (result float32, equal to the float32 call on the
    same values) on both paths.
``extreme``
    logits of ±1e4, −inf entries (same support on both sides), one-hot and near-one-hot rows
    in float32 on both paths: never NaN, finite wherever the float64 value is representable
    in float32, with finite gradients there.
``properties``
    the axiom, symmetry and bound checks again over a seeded random sweep of logits mixing
    scales from 0.1 to 30, ±1e4 entries, shared −inf entries and near-one-hot rows.

The property sweep uses a seeded ``torch.Generator`` rather than hypothesis: it needs no test
dependency, is reproducible and fast enough to run on every entry (hypothesis-driven sweeps of
the built-in entries live in the test suite).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.registry import (
    Divergence,
    Parameter,
    register_divergence,
    unregister_divergence,
)
from divergent.functional import chunked_divergence, divergence

__all__ = ["CheckReport", "check_divergence", "parameter_cases", "registered"]

PROBE_VALUES: tuple[float, ...] = (
    -2.0,
    -1.0,
    -0.5,
    0.0,
    0.1,
    0.2,
    0.3,
    0.5,
    0.7,
    0.9,
    1.0,
    2.0,
    3.5,
    7.0,
)
"""Parameter values :func:`parameter_cases` draws from (those inside a parameter's range)."""

CHECKS: tuple[str, ...] = (
    "reference",
    "axioms",
    "symmetry",
    "bound",
    "gradcheck",
    "engine",
    "options",
    "bf16",
    "extreme",
    "properties",
)
"""The checks :func:`check_divergence` runs, in order."""

_F32_RTOL, _F32_ATOL = 1e-4, 1e-6  # float32 values against float64
# float32 gradients against float64, relative to the largest gradient entry: the projection
# A_j − p_j Σ_x A_x cancels where p/q is far from 1 (χ², α > 1), in every float32 path
_F32_GRAD = 1e-3
_F64_RTOL, _F64_ATOL = 1e-8, 1e-11  # float64 engine against float64 reference


# --------------------------------------------------------------------------------------------
# parameter cases
# --------------------------------------------------------------------------------------------
def _allowed(param: Parameter, value: float) -> bool:
    try:
        param.validate(value, "probe")
    except ValueError:
        return False
    return True


def _plan_key(entry: Divergence, params: Mapping[str, float]) -> str | None:
    plan = entry.kernel_plan(dict(params))
    if plan is None:
        return None
    kernel = getattr(plan, "kernel", plan)
    inner = getattr(kernel, "inner", None)  # a swapped kernel: D(P‖Q) = E(Q‖P)
    return type(kernel).__name__ + ("" if inner is None else f"[{type(inner).__name__}]")


def parameter_cases(entry: Divergence | str) -> list[dict[str, float]]:
    """The parameter values a divergence is checked at, derived from its registry entry.

    For each parameter (the others at their defaults): the default; the ends of its range
    that are allowed (``[0, ∞]`` gives 0 and ∞); every value of :data:`PROBE_VALUES` at which
    the entry's kernel factory picks a different kernel than at the default (α = 1 is the KL
    kernel); and, from the allowed probe values, the integers (the textbook special cases:
    α = 2 is ½ Pearson χ², α = −1 ½ Neyman χ², Rényi order 2 the collision divergence), the
    smallest, the largest and the nearest on each side of the default. An entry without
    parameters has the single case ``{}``.

    Args:
        entry: a :class:`~divergent.categorical.registry.Divergence` or a registered name.

    Returns:
        A list of keyword dictionaries, the defaults first, without duplicates.

    Example:
        >>> parameter_cases("kl")
        [{}]
        >>> [c["beta"] for c in parameter_cases("js")]
        [0.5, 0.1, 0.9, 0.3, 0.7]
    """
    spec = resolve_divergence(entry)
    defaults = {p.name: float(p.default) for p in spec.parameters}
    if not spec.parameters:
        return [{}]
    cases: list[dict[str, float]] = [dict(defaults)]

    def add(name: str, value: float) -> None:
        case = {**defaults, name: float(value)}
        if case not in cases:
            cases.append(case)

    for param in spec.parameters:
        default = float(param.default)
        if param.low_inclusive and _allowed(param, param.low):
            add(param.name, param.low)
        if param.high_inclusive and _allowed(param, param.high):
            add(param.name, param.high)
        probes = [v for v in PROBE_VALUES if _allowed(param, v)]
        base_key = _plan_key(spec, defaults)
        for v in probes:
            if base_key is not None and _plan_key(spec, {**defaults, param.name: v}) != base_key:
                add(param.name, v)
        for v in probes:  # integer orders are the textbook cases (α = 2: ½χ², α = −1 ...)
            if float(v).is_integer():
                add(param.name, v)
        if probes:
            add(param.name, probes[0])
            add(param.name, probes[-1])
            below = [v for v in probes if v < default]
            above = [v for v in probes if v > default]
            if below:
                add(param.name, below[-1])
            if above:
                add(param.name, above[0])
    return cases


def _at_range_end(spec: Divergence, params: Mapping[str, float]) -> bool:
    """Whether a parameter sits at an (allowed) end of its range: a possibly degenerate limit."""
    for p in spec.parameters:
        v = params.get(p.name, p.default)
        if (p.low_inclusive and v == p.low) or (p.high_inclusive and v == p.high):
            return True
    return False


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
class _Failure(AssertionError):
    pass


def _fail(ctx: str, what: str) -> None:
    raise _Failure(f"{ctx}: {what}")


def _fmt(x: Tensor) -> str:
    return str([float(v) for v in x.detach().reshape(-1)[:6].double()])


def _close(actual: Tensor, expected: Tensor, rtol: float, atol: float, ctx: str, what: str) -> int:
    """Elementwise |a − e| ≤ atol + rtol·|e| with the same ±inf pattern; NaN never allowed."""
    a, e = actual.detach().double(), expected.detach().double()
    if a.shape != e.shape:
        _fail(ctx, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    if bool(torch.isnan(a).any()):
        _fail(ctx, f"{what}: NaN in {_fmt(a)} (expected {_fmt(e)})")
    if not torch.equal(torch.isinf(a), torch.isinf(e)) or not torch.equal(
        a[torch.isinf(a)], e[torch.isinf(e)]
    ):
        _fail(ctx, f"{what}: infinite entries differ: got {_fmt(a)}, expected {_fmt(e)}")
    fin = torch.isfinite(e)
    err = (a[fin] - e[fin]).abs()
    allowed = atol + rtol * e[fin].abs()
    if bool((err > allowed).any()):
        i = int(torch.argmax(err - allowed))
        _fail(
            ctx,
            f"{what}: got {float(a[fin][i]):.17g}, expected {float(e[fin][i]):.17g} "
            f"(|error| {float(err[i]):.3g} > {float(allowed[i]):.3g}; rtol {rtol:g}, "
            f"atol {atol:g})",
        )
    return int(a.numel())


def _log(probs: Sequence[Sequence[float]]) -> Tensor:
    x = torch.tensor(probs, dtype=torch.float64)
    return torch.where(x > 0, torch.log(torch.where(x > 0, x, 1.0)), -math.inf)


# small exact cases as probability rows (zeros allowed): (P, Q) pairs
_EXACT_P = [
    [0.5, 0.25, 0.25, 0.0],
    [0.1, 0.2, 0.3, 0.4],
    [0.25, 0.25, 0.25, 0.25],
    [0.5, 0.5, 0.0, 0.0],
    [0.0, 0.5, 0.5, 0.0],
    [1.0, 0.0, 0.0, 0.0],
    [0.7, 0.1, 0.1, 0.1],
]
_EXACT_Q = [
    [0.25, 0.25, 0.25, 0.25],
    [0.4, 0.3, 0.2, 0.1],
    [0.25, 0.25, 0.25, 0.25],
    [0.0, 0.0, 0.25, 0.75],  # disjoint supports
    [0.25, 0.25, 0.25, 0.25],  # supp P ⊂ supp Q
    [1.0, 0.0, 0.0, 0.0],  # equal one-hot rows
    [0.1, 0.3, 0.3, 0.3],
]


def _generator_rows(
    spec: Divergence, params: Mapping[str, float], lp: Tensor, lq: Tensor
) -> Tensor:
    """Σ q f(p/q) in float64 straight from the generator, atoms outside a support by limits."""
    gen = spec.f_generator(**params)
    p, q = lp.exp(), lq.exp()
    both, p_only, q_only = (p > 0) & (q > 0), (p > 0) & (q == 0), (p == 0) & (q > 0)
    t = torch.where(both, p / torch.where(both, q, 1.0), 1.0)
    with torch.no_grad():
        ft = gen.f(t)
    total = torch.where(both, q * ft, 0.0).sum(-1)
    f0, slope = gen.f_at_zero, gen.slope_at_infinity
    inf_rows = torch.zeros_like(total, dtype=torch.bool)
    if math.isinf(f0):
        inf_rows |= q_only.any(-1)
    else:
        total = total + torch.where(q_only, q * f0, 0.0).sum(-1)
    if math.isinf(slope):
        inf_rows |= p_only.any(-1)
    else:
        total = total + torch.where(p_only, p * slope, 0.0).sum(-1)
    return torch.where(inf_rows, math.inf, total)


def _rows64(spec: Divergence, params: Mapping[str, float], p: Tensor, q: Tensor) -> Tensor:
    """float64 row values of the entry's own row function on logits."""
    with torch.no_grad():
        lp = torch.log_softmax(p.double(), -1)
        lq = torch.log_softmax(q.double(), -1)
        return spec.row_fn(lp, lq, **params)


def _call(
    spec: Divergence, params: Mapping[str, float], p: Tensor, q: Tensor, path: str, **opts: Any
) -> Tensor:
    if path == "chunked":  # 4 rows a chunk: the test tensors give full and partial chunks
        return chunked_divergence(spec, p, q, chunk_size=4, compile=False, **opts, **params)
    return divergence(spec, p, q, engine="reference", **opts, **params)


def _value_and_grads(
    spec: Divergence,
    params: Mapping[str, float],
    p: Tensor,
    q: Tensor,
    path: str,
    weights: Tensor | None = None,
    **opts: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    a = p.detach().clone().requires_grad_(True)
    b = q.detach().clone().requires_grad_(True)
    out = _call(spec, params, a, b, path, **opts)
    loss = out if out.dim() == 0 else (out * weights).sum()
    ga, gb = torch.autograd.grad(loss, [a, b], allow_unused=True)
    ga = torch.zeros_like(a) if ga is None else ga
    gb = torch.zeros_like(b) if gb is None else gb
    return out.detach(), ga, gb


def _random_logits(seed: int | torch.Generator, rows: int, classes: int) -> tuple[Tensor, Tensor]:
    """Float64 logits of P and Q, rows scaled by 0.3, 1 and 3 in turn (a seed or a generator)."""
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64).repeat(rows)[:rows, None]
    p = torch.randn(rows, classes, generator=gen, dtype=torch.float64) * scale
    q = torch.randn(rows, classes, generator=gen, dtype=torch.float64) * scale
    return p, q


# --------------------------------------------------------------------------------------------
# the checks (each returns the number of compared values)
# --------------------------------------------------------------------------------------------
def _check_reference(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    lp, lq = _log(_EXACT_P), _log(_EXACT_Q)
    n = 0
    with torch.no_grad():
        rows = spec.row_fn(lp, lq, **params)
        if rows.shape != lp.shape[:-1] or rows.dtype != torch.float64:
            _fail(
                ctx,
                f"reference: row_fn returned shape {tuple(rows.shape)} dtype "
                f"{rows.dtype}; expected {tuple(lp.shape[:-1])} float64",
            )
        if bool(torch.isnan(rows).any()):
            _fail(ctx, f"reference: row_fn gives NaN on exact cases: {_fmt(rows)}")
        p, q = _random_logits(1234, 6, 7)
        rand = _rows64(spec, params, p, q)
        if spec.is_f_divergence:
            n += _close(
                rows,
                _generator_rows(spec, params, lp, lq),
                1e-9,
                1e-12,
                ctx,
                "reference: row_fn vs Σ q f(p/q) on exact cases",
            )
            n += _close(
                rand,
                _generator_rows(spec, params, torch.log_softmax(p, -1), torch.log_softmax(q, -1)),
                1e-9,
                1e-12,
                ctx,
                "reference: row_fn vs Σ q f(p/q) on random logits",
            )
        # the public reference path is the row function
        via_api = divergence(
            spec, lp, lq, inputs="log_probs", reduction="none", engine="reference", **params
        )
        n += _close(via_api, rows, 0.0, 0.0, ctx, "reference: divergence() vs row_fn")
    return n


def _check_axioms(
    spec: Divergence, params: dict[str, float], p: Tensor, q: Tensor, ctx: str, what: str
) -> int:
    with torch.no_grad():
        values = _rows64(spec, params, p, q)
        if bool(torch.isnan(values).any()):
            _fail(ctx, f"axioms ({what}): NaN values {_fmt(values)}")
        if not spec.is_divergence:
            return int(values.numel())
        if bool((values < -1e-10).any()):
            _fail(ctx, f"axioms ({what}): negative value {float(values.min()):.3g}")
        same = _rows64(spec, params, p, p.clone())
        if bool((same.abs() > 1e-10).any()):
            _fail(ctx, f"axioms ({what}): D(P‖P) = {float(same.abs().max()):.3g}, not 0")
        if not _at_range_end(spec, params):
            tv = 0.5 * (torch.softmax(p, -1) - torch.softmax(q, -1)).abs().sum(-1)
            different = tv > 1e-3
            if bool((values[different] <= 0).any()):
                _fail(
                    ctx,
                    f"axioms ({what}): D(P‖Q) = 0 although P ≠ Q (TV ≥ 1e-3): "
                    f"{_fmt(values[different])}",
                )
        perm = torch.randperm(p.shape[-1], generator=torch.Generator().manual_seed(5))
        n = _close(
            _rows64(spec, params, p[:, perm], q[:, perm]),
            values,
            1e-9,
            1e-12,
            ctx,
            f"axioms ({what}): permuting the classes changes the value",
        )
        n += _close(
            _rows64(spec, params, p + 3.25, q - 1.5),
            values,
            1e-9,
            1e-9,
            ctx,
            f"axioms ({what}): adding a constant to the logits changes the value",
        )
    return n


def _check_symmetry(
    spec: Divergence, params: dict[str, float], p: Tensor, q: Tensor, ctx: str, what: str
) -> int:
    if not spec.symmetric(**params):
        return 0
    return _close(
        _rows64(spec, params, q, p),
        _rows64(spec, params, p, q),
        1e-9,
        1e-12,
        ctx,
        f"symmetry ({what}): declared symmetric but D(Q‖P) ≠ D(P‖Q)",
    )


def _check_bound(
    spec: Divergence, params: dict[str, float], p: Tensor, q: Tensor, ctx: str, what: str
) -> int:
    bound = float(spec.upper_bound(**params))
    if math.isinf(bound):
        return 0
    values = _rows64(spec, params, p, q)
    worst = float(values.max())
    if not worst <= bound * (1 + 1e-9) + 1e-12:
        _fail(ctx, f"bound ({what}): value {worst:.17g} above the declared bound {bound:.17g}")
    return int(values.numel())


def _check_gradcheck(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    gen = torch.Generator().manual_seed(77)
    p = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    q = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    mask = torch.tensor([True, False, True])

    def fn(a: Tensor, b: Tensor) -> Tensor:
        return divergence(
            spec, a, b, engine="reference", mask=mask, temperature=1.3, reduction="sum", **params
        )

    try:
        torch.autograd.gradcheck(fn, (p, q), eps=1e-6, atol=1e-5, rtol=1e-4)
    except Exception as err:  # gradcheck raises GradcheckError with the Jacobians
        _fail(ctx, f"gradcheck (reference path, float64, both sides): {err}")
    return 24


def _check_engine(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    gen = torch.Generator().manual_seed(4321)
    p, q = _random_logits(gen, 6, 7)
    p[1, 3] = q[1, 3] = -math.inf  # an atom outside both supports
    mask = torch.tensor([True, False, True, True, True, True])  # 5 kept rows: chunks 4 + 1
    weights = torch.rand(6, generator=gen, dtype=torch.float64) + 0.5
    option_sets: list[dict[str, Any]] = [
        {"reduction": "none"},
        {"reduction": "sum", "temperature": 1.7},
        {"reduction": "mean", "mask": mask},
        {"reduction": "mean", "mask": mask, "normalizer": 10.0, "temperature": 0.6},
        {"reduction": "none", "mask": mask},
    ]
    n = 0
    for opts in option_sets:
        label = ", ".join(f"{k}={v if k != 'mask' else 'mask'}" for k, v in opts.items())
        ref = _value_and_grads(spec, params, p, q, "reference", weights, **opts)
        got = _value_and_grads(spec, params, p, q, "chunked", weights, **opts)
        for name, a, b in zip(("value", "grad p", "grad q"), got, ref):
            n += _close(
                a,
                b,
                _F64_RTOL,
                _F64_ATOL * max(1.0, float(b.abs().max())),
                ctx,
                f"engine (float64, {label}): chunked {name} vs reference",
            )
        for path in ("chunked", "reference"):
            got32 = _value_and_grads(
                spec, params, p.float(), q.float(), path, weights.float(), **opts
            )
            if got32[0].dtype != torch.float32:
                _fail(ctx, f"engine ({path}, float32): result dtype {got32[0].dtype}")
            n += _close(
                got32[0],
                ref[0],
                _F32_RTOL,
                _F32_ATOL,
                ctx,
                f"engine (float32 {path}, {label}): value vs float64 reference",
            )
            for name, a, b in zip(("grad p", "grad q"), got32[1:], ref[1:]):
                scale = float(b.abs().max())
                n += _close(
                    a,
                    b,
                    0.0,
                    _F32_GRAD * scale + _F32_ATOL,
                    ctx,
                    f"engine (float32 {path}, {label}): {name} vs float64 reference",
                )
    return n


def _check_options(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    p, q = _random_logits(99, 5, 6)
    mask = torch.tensor([True, False, True, False, True])
    n = 0
    for path in ("reference", "chunked"):
        rows = _call(spec, params, p, q, path, reduction="none")
        kept = rows[mask]
        masked = _call(spec, params, p, q, path, reduction="none", mask=mask)
        n += _close(masked[mask], kept, 1e-12, 1e-14, ctx, f"options ({path}): kept rows")
        if bool((masked[~mask] != 0).any()):
            _fail(ctx, f"options ({path}): masked rows are not 0: {_fmt(masked)}")
        for options, want, what in (
            ({"reduction": "sum"}, kept.sum(), "sum over kept rows"),
            ({"reduction": "mean"}, kept.mean(), "mean over kept rows"),
            ({"reduction": "mean", "normalizer": 7.0}, kept.sum() / 7.0, "mean with normalizer"),
        ):
            got = _call(spec, params, p, q, path, mask=mask, **options)
            n += _close(got, want, 1e-12, 1e-14, ctx, f"options ({path}): {what}")
        none = torch.zeros(5, dtype=torch.bool)
        value, ga, gb = _value_and_grads(spec, params, p, q, path, None, mask=none)
        if float(value) != 0.0 or bool(ga.any()) or bool(gb.any()):
            _fail(
                ctx,
                f"options ({path}): a fully masked batch gives {float(value)} or a "
                "non-zero gradient, not 0",
            )
        t = 2.5
        n += _close(
            _call(spec, params, p, q, path, reduction="none", temperature=t),
            _call(spec, params, p / t, q / t, path, reduction="none"),
            1e-10,
            1e-12,
            ctx,
            f"options ({path}): temperature T vs logits / T",
        )
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    for inputs, a, b in (("log_probs", lp, lq), ("probs", lp.exp(), lq.exp())):
        n += _close(
            divergence(spec, a, b, inputs=inputs, reduction="none", engine="reference", **params),
            rows,
            1e-10,
            1e-12,
            ctx,
            f"options: inputs={inputs!r} vs logits",
        )
    return n


def _check_bf16(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    p, q = _random_logits(3, 4, 9)
    pb, qb = p.bfloat16(), q.bfloat16()
    n = 0
    for path in ("reference", "chunked"):
        got = _value_and_grads(spec, params, pb, qb, path, None)
        want = _value_and_grads(spec, params, pb.float(), qb.float(), path, None)
        if got[0].dtype != torch.float32:
            _fail(ctx, f"bf16 ({path}): result dtype {got[0].dtype}, expected float32")
        n += _close(
            got[0], want[0], 1e-6, 1e-7, ctx, f"bf16 ({path}): value vs float32 on the same values"
        )
        for name, g, x in (("grad p", got[1], pb), ("grad q", got[2], qb)):
            if g.dtype != x.dtype or not bool(torch.isfinite(g).all()):
                _fail(ctx, f"bf16 ({path}): {name} has dtype {g.dtype} or is not finite")
    return n


def _extreme_logits() -> tuple[Tensor, Tensor]:
    ninf = -math.inf
    p = torch.tensor(
        [
            [1e4, 0.0, -1e4, 3.0, -2.0],
            [0.0, 1e4, 2.0, ninf, -1.0],
            [5.0, ninf, ninf, ninf, ninf],  # one-hot
            [60.0, 0.0, 0.0, 0.0, 0.0],  # near one-hot
            [-1e4, 1e4, 0.0, ninf, 1e4],
            [0.5, -0.5, 1.0, -1.0, 0.0],
        ],
        dtype=torch.float64,
    )
    q = torch.tensor(
        [
            [-1e4, 1e4, 0.0, 1.0, 2.0],
            [1e4, 0.0, -3.0, ninf, 1.0],
            [-7.0, ninf, ninf, ninf, ninf],  # the same one-hot
            [0.0, 60.0, 0.0, 0.0, 0.0],
            [1e4, -1e4, 1e4, ninf, 0.0],
            [60.0, 0.0, 0.0, 0.0, -60.0],
        ],
        dtype=torch.float64,
    )
    return p, q


def _check_extreme(spec: Divergence, params: dict[str, float], ctx: str) -> int:
    p, q = _extreme_logits()
    ref = _rows64(spec, params, p, q)
    if bool(torch.isnan(ref).any()):
        _fail(ctx, f"extreme (float64 row function): NaN in {_fmt(ref)}")
    representable = ref.abs() < 1e36
    n = 0
    for path in ("reference", "chunked"):
        value, ga, gb = _value_and_grads(
            spec, params, p.float(), q.float(), path, torch.ones(6), reduction="none"
        )
        if bool(torch.isnan(value).any()):
            _fail(ctx, f"extreme ({path}, float32): NaN value {_fmt(value)}")
        if not bool(torch.isfinite(value[representable]).all()):
            _fail(
                ctx,
                f"extreme ({path}, float32): infinite value {_fmt(value)} where the "
                f"float64 value is finite {_fmt(ref)}",
            )
        for name, g in (("grad p", ga), ("grad q", gb)):
            if not bool(torch.isfinite(g[representable]).all()):
                _fail(
                    ctx,
                    f"extreme ({path}, float32): {name} not finite on rows with a "
                    f"finite value: {_fmt(g[representable])}",
                )
        n += int(value.numel())
    return n


def _sweep_logits(seed: int, n_examples: int) -> tuple[Tensor, Tensor]:
    """Random (rows, 5) float64 logit pairs: mixed scales, ±1e4 entries, shared −inf entries
    (never a whole row), near-one-hot rows."""
    gen = torch.Generator().manual_seed(seed)
    rows, classes = 3 * n_examples, 5
    scales = torch.tensor([0.1, 1.0, 10.0, 30.0], dtype=torch.float64)
    pick = torch.randint(0, 4, (rows, 1), generator=gen)
    p = torch.randn(rows, classes, generator=gen, dtype=torch.float64) * scales[pick]
    q = torch.randn(rows, classes, generator=gen, dtype=torch.float64) * scales[pick]
    big = torch.rand(rows, classes, generator=gen) < 0.08
    sign = torch.where(torch.rand(rows, classes, generator=gen) < 0.5, -1.0, 1.0).double()
    p = torch.where(big, 1e4 * sign, p)
    big_q = torch.rand(rows, classes, generator=gen) < 0.08
    q = torch.where(big_q, -1e4 * sign, q)
    zero = torch.rand(rows, classes, generator=gen) < 0.2
    zero[:, 0] = False
    p = p.masked_fill(zero, -math.inf)
    q = q.masked_fill(zero, -math.inf)
    one_hot = torch.rand(rows, generator=gen) < 0.15
    p[one_hot, 0] = 60.0
    return p, q


def _check_properties(
    spec: Divergence, params: dict[str, float], ctx: str, seed: int, n_examples: int
) -> int:
    p, q = _sweep_logits(seed, n_examples)
    ctx = f"{ctx} [properties]"
    n = _check_axioms(spec, params, p, q, ctx, "property sweep")
    n += _check_symmetry(spec, params, p, q, ctx, "property sweep")
    n += _check_bound(spec, params, p, q, ctx, "property sweep")
    return n


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_divergence` verified (it raises on the first failure instead).

    Attributes:
        name: the entry's name.
        cases: the parameter cases checked.
        checks: the checks run at every case (see :data:`CHECKS`).
        comparisons: number of compared values.
    """

    name: str
    cases: tuple[dict[str, float], ...]
    checks: tuple[str, ...]
    comparisons: int

    def __str__(self) -> str:
        return (
            f"{self.name}: {len(self.checks)} checks × {len(self.cases)} parameter cases "
            f"passed ({self.comparisons} compared values)"
        )


def check_divergence(
    entry_or_name: Divergence | str,
    *,
    cases: Sequence[Mapping[str, float]] | None = None,
    checks: Sequence[str] = CHECKS,
    seed: int = 0,
    n_examples: int = 40,
) -> CheckReport:
    """Run the contract battery on a divergence (see the module docstring for each check).

    Args:
        entry_or_name: a :class:`~divergent.categorical.registry.Divergence` (registered or
            not) or a registered name or alias.
        cases: parameter dictionaries to check (default :func:`parameter_cases`).
        checks: a subset of :data:`CHECKS` to run (default: all).
        seed: seed of the random property sweep.
        n_examples: logit pairs (of 3 rows) in the property sweep.

    Returns:
        A :class:`CheckReport`.

    Raises:
        AssertionError: the first failing check, naming the entry, the parameters, the check
            and the numbers.
        ValueError: an unknown name, check or parameter.

    Example:
        >>> check_divergence("tv", checks=("reference", "axioms")).checks
        ('reference', 'axioms')
    """
    spec = resolve_divergence(entry_or_name)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"`checks` has unknown entries {unknown}; allowed: {CHECKS}")
    chosen = [c for c in CHECKS if c in checks]
    bound_cases = [spec.bind(c) for c in (parameter_cases(spec) if cases is None else cases)]
    p_rand, q_rand = _random_logits(seed + 11, 6, 7)
    p_ex, q_ex = _log(_EXACT_P), _log(_EXACT_Q)
    n = 0
    for params in bound_cases:
        ctx = f"check_divergence({spec.name!r}, {params})"
        for check in chosen:
            if check == "reference":
                n += _check_reference(spec, params, ctx)
            elif check == "axioms":
                n += _check_axioms(spec, params, p_rand, q_rand, ctx, "random logits")
            elif check == "symmetry":
                n += _check_symmetry(spec, params, p_rand, q_rand, ctx, "random logits")
                n += _check_symmetry(spec, params, p_ex, q_ex, ctx, "exact cases")
            elif check == "bound":
                n += _check_bound(spec, params, p_rand, q_rand, ctx, "random logits")
                n += _check_bound(spec, params, p_ex, q_ex, ctx, "exact cases")
            elif check == "gradcheck":
                n += _check_gradcheck(spec, params, ctx)
            elif check == "engine":
                n += _check_engine(spec, params, ctx)
            elif check == "options":
                n += _check_options(spec, params, ctx)
            elif check == "bf16":
                n += _check_bf16(spec, params, ctx)
            elif check == "extreme":
                n += _check_extreme(spec, params, ctx)
            elif check == "properties":
                n += _check_properties(spec, params, ctx, seed, n_examples)
    return CheckReport(spec.name, tuple(bound_cases), tuple(chosen), n)


@contextlib.contextmanager
def registered(entry: Divergence, *, overwrite: bool = False) -> Iterator[Divergence]:
    """Register ``entry`` for the duration of a ``with`` block, then remove it.

    With ``overwrite=True`` an entry of the same name is replaced and restored afterwards.

    Example:
        >>> import torch
        >>> from divergent.categorical import Divergence, get_divergence
        >>> half_tv = Divergence(name="half_tv", title="½ TV", formula="TV/2",
        ...     formula_text="¼ Σ |p − q|",
        ...     row_fn=lambda lp, lq: 0.25 * (lp.exp() - lq.exp()).abs().sum(-1))
        >>> with registered(half_tv):
        ...     get_divergence("half_tv").title
        '½ TV'
    """
    previous: Divergence | None = None
    if overwrite:
        with contextlib.suppress(ValueError):
            previous = unregister_divergence(entry.name)
    register_divergence(entry)
    try:
        yield entry
    finally:
        unregister_divergence(entry.name)
        if previous is not None:
            register_divergence(previous)
