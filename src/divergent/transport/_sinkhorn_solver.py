r"""The balanced Sinkhorn solver behind :mod:`divergent.transport.sinkhorn` (not public).

* :func:`solve` — dual potentials (f, g) of a (B, n, m) batch: stabilised scaling iterations
  with absorption (Schmitzer 2019), ε-scaling warm starts, per-problem convergence, CPU
  chunking; :func:`run_symmetric` is the averaged update for the self terms OT_ε(α, α).
* :class:`SinkhornFunction` — the autograd function: forward runs the solver without autograd;
  backward is the envelope theorem for the entropic objective and implicit differentiation of
  the fixed point (:func:`transport_adjoint`, dense Schur complement or :func:`cg_schur`) for
  the transport cost ⟨T_ε, C⟩.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergent.transport._common import CHECK_EVERY, f_update, g_update, log_plan

__all__ = [
    "Problems",
    "Schedule",
    "SinkhornFunction",
    "solve",
    "symmetric_gauge",
    "transport_adjoint",
]

# absorption threshold |log u| for the scaling-form inner iterations, per dtype
_TAU = {torch.float32: 20.0, torch.float64: 50.0}
# largest side solved densely in the backward of the transport cost; CG above it
_DENSE_ADJOINT_MAX = 2048
# CPU: solve the batch in chunks of about this many kernel bytes (memory-bound iterations)
_CPU_CHUNK_BYTES = 2 << 20
# default ε-scaling starts at the cost range only when that range exceeds this many ε
_AUTO_ANNEAL_RATIO = 100.0
# Sinkhorn updates per ε-annealing stage
_STAGE_ITERS = 3


def vecmat(x: Tensor, mat: Tensor) -> Tensor:
    """(B, n) × (B, n, m) → (B, m)."""
    return torch.matmul(x[:, None, :], mat)[:, 0, :]


def matvec(mat: Tensor, y: Tensor) -> Tensor:
    """(B, n, m) × (B, m) → (B, n)."""
    return torch.matmul(mat, y[:, :, None])[:, :, 0]


def _finished(
    it: int, max_iter: int, err: Tensor | None, tol: float, n_active: int, device: torch.device
) -> Tensor | None:
    """Which active problems stop at this check: all at ``max_iter``, else those within ``tol``
    (None when the errors are not measured, e.g. in the ε-annealing stages)."""
    if it >= max_iter:
        return torch.ones(n_active, dtype=torch.bool, device=device)
    return None if err is None else err <= tol


def _retire(
    done: Tensor, active: Tensor, it: int, err: Tensor | None, n_iter: Tensor, errors: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Record the iteration count (and error) of the problems that are ``done``.

    Returns their indices into the batch, the mask of the problems kept running, and the
    indices of those (the new ``active``).
    """
    idx = active[done]
    n_iter[idx] = it
    if err is not None:
        errors[idx] = err[done]
    keep = ~done
    return idx, keep, active[keep]


@dataclass
class Problems:
    cost: Tensor
    a: Tensor
    b: Tensor
    log_a: Tensor
    log_b: Tensor
    pos_a: Tensor
    pos_b: Tensor


def run_blocks(
    pb: Problems,
    f: Tensor,
    g: Tensor,
    eps: float,
    *,
    tol: float,
    max_iter: int,
    check: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sinkhorn at a fixed ε until every problem converges or hits ``max_iter`` updates.

    Each block builds the stabilised kernel K̃ = exp((f ⊕ g − C)/ε) from the current potentials
    (one pass of exponentials) and iterates u ← 1/(K̃ (b⊙v)), v ← 1/(K̃ᵀ(a⊙u)) with matrix–vector
    products. Every ``CHECK_EVERY`` updates it measures the marginal error (problems that
    reached ``tol`` leave the batch) and the scalings: beyond e^{±τ} they are absorbed into
    (f, g) and the kernel rebuilt; if one under- or overflowed, the block rolls back to the last
    check and the next block opens with an exact log-sum-exp update. Returns
    (f, g, n_iter, marginal_error); with ``check=False`` (annealing stages) it runs ``max_iter``
    updates without convergence tests.
    """
    batch = f.shape[0]
    dev = f.device
    tau = _TAU[f.dtype]
    n_iter = torch.zeros(batch, dtype=torch.long, device=dev)
    errors = torch.full((batch,), math.inf, dtype=f.dtype, device=dev)
    f, g = f.clone(), g.clone()
    active = torch.arange(batch, device=dev)
    one = torch.ones((), dtype=f.dtype, device=dev)
    full_a, full_b = bool(pb.pos_a.all()), bool(pb.pos_b.all())
    need_log = False
    it = 0  # the active problems always share their update count
    while active.numel() > 0:
        everyone = active.numel() == batch

        def take(t: Tensor, idx: Tensor = active, whole: bool = everyone) -> Tensor:
            return t if whole else t.index_select(0, idx)

        cost, a, b = take(pb.cost), take(pb.a), take(pb.b)
        pos_a, pos_b = take(pb.pos_a), take(pb.pos_b)
        fa, ga = take(f), take(g)
        if need_log:  # exact log-domain update (re-centres the potentials)
            ga = g_update(fa, cost, take(pb.log_a), eps)
            fa = f_update(ga, cost, take(pb.log_b), eps)
            it += 1
            need_log = False
        kern = torch.exp((fa[:, :, None] + ga[:, None, :] - cost) / eps)
        kern_t = kern.transpose(1, 2).contiguous()  # batched vector-matrix products are fastest
        v = torch.ones_like(ga)
        u = 1.0 / vecmat(b, kern_t)  # rows exact from here on
        if not full_a:
            u = torch.where(pos_a, u, one)
        if not bool(u.log().abs().amax() <= tau) and it < max_iter:
            need_log = True
            continue
        while True:
            # check point: the state is right after a u-update (rows exact)
            w = vecmat(a * u, kern)  # w_j = Σ_i K̃_ij a_i u_i; column sums are b v w
            err = (b * v * w - b).abs().sum(-1) if check else None
            done = _finished(it, max_iter, err, tol, active.numel(), dev)
            if done is not None and bool(done.any()):
                idx, keep, active = _retire(done, active, it, err, n_iter, errors)
                f[idx] = fa[done] + eps * torch.log(u[done])
                g[idx] = ga[done] + eps * torch.log(v[done])
                if active.numel() == 0:
                    break
                kern, kern_t, u, v, w, fa, ga = (t[keep] for t in (kern, kern_t, u, v, w, fa, ga))
                a, b, pos_a, pos_b = a[keep], b[keep], pos_a[keep], pos_b[keep]
            steps = min(CHECK_EVERY, max_iter - it) if check else max_iter - it
            u_last, v_last = u, v
            for s in range(steps):
                # zero-mass entries keep their potentials inside a block (they carry no mass)
                v = 1.0 / w
                if not full_b:
                    v = torch.where(pos_b, v, one)
                u = 1.0 / vecmat(b * v, kern_t)
                if not full_a:
                    u = torch.where(pos_a, u, one)
                if s < steps - 1:
                    w = vecmat(a * u, kern)
            it += steps
            worst = torch.maximum(u.log().abs().amax(), v.log().abs().amax())
            if not bool(worst <= tau):
                if not bool(torch.isfinite(worst)):
                    u, v = u_last, v_last  # roll back to the last check
                    it -= steps
                    need_log = True
                break  # absorb and rebuild the kernel
        if active.numel() == 0:
            break
        # absorb the scalings into the potentials of the problems still running
        f[active] = fa + eps * torch.log(u)
        g[active] = ga + eps * torch.log(v)
    return f, g, n_iter, errors


@dataclass(frozen=True)
class Schedule:
    """How a batch of balanced problems is solved: the target ε, its annealing, when to stop.

    Attributes:
        eps: the target regularisation ε > 0.
        max_iter: updates per problem at ``eps``.
        tol: a problem stops when its L1 marginal error is <= ``tol``.
        scaling: ε-annealing factor in (0, 1): ε runs from ``eps_start`` down to ``eps``.
        eps_start: the first ε of the annealing (None: chosen by :func:`solve`).
        symmetric: the self problems OT_ε(α, α) (``b`` is ``a``, one potential f = g).
    """

    eps: float
    max_iter: int
    tol: float
    scaling: float
    eps_start: float | None = None
    symmetric: bool = False


def solve(
    cost: Tensor, a: Tensor, b: Tensor, schedule: Schedule
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Potentials (f, g), iteration counts and marginal errors for a (B, n, m) batch.

    On CPU the batch is solved in chunks whose kernels fit in cache (the iterations are
    memory-bound); on GPU in one piece.
    """
    if schedule.eps_start is None:
        # ε-scaling pays off only at small ε (measured: ~10 % fewer updates at ε = range/1000,
        # none at range/40), so by default it runs only when the cost range exceeds 100 ε
        span = float(cost.amax() - cost.amin())
        eps = schedule.eps
        schedule = replace(schedule, eps_start=span if span > _AUTO_ANNEAL_RATIO * eps else eps)
    batch, n, m = cost.shape
    if cost.device.type == "cpu":
        chunk = max(1, _CPU_CHUNK_BYTES // (n * m * cost.element_size()))
    else:
        chunk = batch
    chunks = (slice(s, s + chunk) for s in range(0, batch, chunk))
    outs = [solve_chunk(cost[c], a[c], b[c], schedule) for c in chunks]
    return tuple(torch.cat(parts) for parts in zip(*outs))  # type: ignore[return-value]


def solve_chunk(
    cost: Tensor, a: Tensor, b: Tensor, schedule: Schedule
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Potentials, iteration counts and marginal errors of one chunk: ε-scaling stages of a
    few updates each (from ``schedule.eps_start``, set, down to ``eps``), then the run at
    ``eps``.

    ``symmetric``: the self problem OT_ε(α, α) (``b`` is ``a``), with one potential f = g
    updated by :func:`run_symmetric`; otherwise alternating updates (:func:`run_blocks`).
    """
    eps, tol, symmetric = schedule.eps, schedule.tol, schedule.symmetric
    assert schedule.eps_start is not None, "solve() sets the first ε"
    if symmetric:
        b = a
    log_a, log_b = torch.log(a), torch.log(b)
    pb = Problems(cost, a, b, log_a, log_b, a > 0, b > 0)
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)

    def run(e: float, iters: int, check: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if symmetric:
            f_new, n_iter, err = run_symmetric(pb, f, e, tol=tol, max_iter=iters, check=check)
            return f_new, f_new, n_iter, err
        return run_blocks(pb, f, g, e, tol=tol, max_iter=iters, check=check)

    e = schedule.eps_start
    while e > eps * 1.0001:  # ε-scaling: a few updates per stage
        f, g, _, _ = run(e, _STAGE_ITERS, False)
        e *= schedule.scaling
    f, g, n_iter, err = run(eps, schedule.max_iter, True)
    # zero-mass entries: potentials consistent with the final opposite side (these define the
    # one-sided derivatives of the value w.r.t. a zero weight)
    if symmetric:
        if not bool(pb.pos_a.all()):
            f = torch.where(pb.pos_a, f, g_update(f, cost, log_a, eps))
        return f, f.clone(), n_iter, err
    if not bool(pb.pos_b.all()):
        g = torch.where(pb.pos_b, g, g_update(f, cost, log_a, eps))
    if not bool(pb.pos_a.all()):
        f = torch.where(pb.pos_a, f, f_update(g, cost, log_b, eps))
    return f, g, n_iter, err


def run_symmetric(
    pb: Problems, f: Tensor, eps: float, *, tol: float, max_iter: int, check: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetric problems OT_ε(α, α) (C = Cᵀ, a = b): averaged updates f ← ½(f + S(f)).

    S(f)_i = −ε log Σ_j a_j exp((f_j − C_ij)/ε) is the Sinkhorn map with f = g; plain
    alternating updates oscillate on symmetric problems, the averaged ones converge fast
    (Feydy et al. 2019, §3.1). Same stabilised scaling form and checks as
    :func:`run_blocks`, with u ← sqrt(u / (K̃ (a⊙u))); the error is the L1 marginal violation
    Σ_i |a_i u_i (K̃ a u)_i − a_i|.
    """
    batch = f.shape[0]
    dev = f.device
    tau = _TAU[f.dtype]
    n_iter = torch.zeros(batch, dtype=torch.long, device=dev)
    errors = torch.full((batch,), math.inf, dtype=f.dtype, device=dev)
    f = f.clone()
    active = torch.arange(batch, device=dev)
    one = torch.ones((), dtype=f.dtype, device=dev)
    full_a = bool(pb.pos_a.all())
    need_log = False
    it = 0
    while active.numel() > 0:
        everyone = active.numel() == batch

        def take(t: Tensor, idx: Tensor = active, whole: bool = everyone) -> Tensor:
            return t if whole else t.index_select(0, idx)

        cost, a, pos_a = take(pb.cost), take(pb.a), take(pb.pos_a)
        fa = take(f)
        if need_log:
            fa = 0.5 * (fa + g_update(fa, cost, take(pb.log_a), eps))
            it += 1
            need_log = False
        kern = torch.exp((fa[:, :, None] + fa[:, None, :] - cost) / eps)
        u = torch.ones_like(fa)
        while True:
            z = vecmat(a * u, kern)  # (K̃ a u)_i (K̃ symmetric)
            err = (a * u * z - a).abs().sum(-1) if check else None
            done = _finished(it, max_iter, err, tol, active.numel(), dev)
            if done is not None and bool(done.any()):
                idx, keep, active = _retire(done, active, it, err, n_iter, errors)
                f[idx] = fa[done] + eps * torch.log(u[done])
                if active.numel() == 0:
                    break
                kern, u, z, fa = (t[keep] for t in (kern, u, z, fa))
                a, pos_a = a[keep], pos_a[keep]
            steps = min(CHECK_EVERY, max_iter - it) if check else max_iter - it
            u_last = u
            for s in range(steps):
                u = torch.sqrt(u / z)
                if not full_a:
                    u = torch.where(pos_a, u, one)
                if s < steps - 1:
                    z = vecmat(a * u, kern)
            it += steps
            worst = u.log().abs().amax()
            if not bool(worst <= tau):
                if not bool(torch.isfinite(worst)):
                    u = u_last
                    it -= steps
                    need_log = True
                break
        if active.numel() == 0:
            break
        f[active] = fa + eps * torch.log(u)
    return f, n_iter, errors


def symmetric_gauge(x: Tensor, y: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Shift (x, y) → (x − c, y + c) so that ⟨a, x⟩ = ⟨b, y⟩ (the pair is defined up to c)."""
    c = 0.5 * ((a * x).sum(-1) - (b * y).sum(-1))
    return x - c[:, None], y + c[:, None]


def transport_adjoint(
    cost: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Exact gradient of L = ⟨T_ε, C⟩ at the fixed point, by implicit differentiation.

    With r = (T⊙C)1 and s = (T⊙C)ᵀ1, solve [[diag a, T], [Tᵀ, diag b]] (μ, ν) = (r, s); then
    ∂L/∂C = T ⊙ (1 + (μ ⊕ ν − C)/ε), ∂L/∂a = μ, ∂L/∂b = ν. The system is reduced to the
    Schur complement of the smaller side and solved in float64.
    """
    transpose = b.shape[-1] > a.shape[-1]
    if transpose:  # solve for the potentials of the smaller side
        cost, a, b, f, g = cost.transpose(1, 2), b, a, g, f
    dt = torch.float64
    cost64, a64, b64, f64, g64 = (t.to(dt) for t in (cost, a, b, f, g))
    log_a, log_b = torch.log(a64), torch.log(b64)
    z = (f64[:, :, None] + g64[:, None, :] - cost64) / eps
    plan = torch.exp(log_a[:, :, None] + log_b[:, None, :] + z)
    row_cond = torch.exp(log_b[:, None, :] + z)  # T / a (finite where a = 0)
    c_bar = (row_cond * cost64).sum(-1)  # conditional mean cost of each row
    tc = plan * cost64
    s = tc.sum(1)
    rhs = s - vecmat(c_bar, plan)
    pos_b = b64 > 0
    m = b64.shape[-1]
    if m <= _DENSE_ADJOINT_MAX:
        schur = torch.diag_embed(b64) - torch.matmul(plan.transpose(1, 2), row_cond)
        schur = schur + b64[:, :, None] * b64[:, None, :]  # gauge: ⟨b, ν⟩ = 0
        schur = schur + torch.diag_embed((~pos_b).to(dt))  # zero-mass rows: ν_j = 0 (fixed below)
        nu = torch.linalg.solve(schur, rhs)
    else:
        nu = cg_schur(plan, row_cond, b64, pos_b, rhs)
    mu = c_bar - matvec(row_cond, nu)
    if not bool(pos_b.all()):
        col_cond = torch.exp(log_a[:, :, None] + z)  # T / b
        nu_zero = (col_cond * (cost64 - mu[:, :, None])).sum(1)
        nu = torch.where(pos_b, nu, nu_zero)
    mu, nu = symmetric_gauge(mu, nu, a64, b64)
    grad_cost = plan * (1.0 + (mu[:, :, None] + nu[:, None, :] - cost64) / eps)
    if transpose:
        grad_cost, mu, nu = grad_cost.transpose(1, 2), nu, mu
    return grad_cost.to(cost.dtype), mu.to(f.dtype), nu.to(f.dtype)


def cg_schur(plan: Tensor, row_cond: Tensor, b: Tensor, pos_b: Tensor, rhs: Tensor) -> Tensor:
    """Matrix-free conjugate gradient for (diag b − Tᵀ(T/a) + b bᵀ) ν = rhs (large sides)."""

    def op(x: Tensor) -> Tensor:
        out = b * x - vecmat(matvec(row_cond, x), plan)
        out = out + b * (b * x).sum(-1, keepdim=True)
        return torch.where(pos_b, out, x)

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    stop = 1e-24 * rs.clamp_min(1e-300)
    for _ in range(10 * rhs.shape[-1]):
        ap = op(p)
        alpha = rs / (p * ap).sum(-1, keepdim=True).clamp_min(1e-300)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(-1, keepdim=True)
        if bool((rs_new <= stop).all()):
            break
        p = r + (rs_new / rs.clamp_min(1e-300)) * p
        rs = rs_new
    return x


class SinkhornFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a: Tensor,
        b: Tensor,
        cost: Tensor,
        schedule: Schedule,
        want_plan: bool,
    ) -> tuple[Tensor, ...]:
        # renormalise (the masses were checked to be 1 up to rounding)
        a_n = a / a.sum(-1, keepdim=True)
        b_n = b / b.sum(-1, keepdim=True)
        f, g, n_iter, err = solve(cost, a_n, b_n, schedule)
        f, g = symmetric_gauge(f, g, a_n, b_n)
        eps = schedule.eps
        plan = torch.exp(log_plan(cost, torch.log(a_n), torch.log(b_n), f, g, eps))
        transport = (plan * cost).sum((-2, -1))
        # primal value of the entropic objective: ⟨T, C⟩ + ε KL(T‖a⊗b) = Σ T_ij (f_i + g_j)
        entropic = (plan.sum(-1) * f).sum(-1) + (plan.sum(-2) * g).sum(-1)
        ctx.save_for_backward(a_n, b_n, cost, f, g)
        ctx.eps = eps
        ctx.mark_non_differentiable(f, g, n_iter, err, plan)
        ctx.set_materialize_grads(False)
        if not want_plan:
            plan = plan.new_empty(0)
        return transport, entropic, f, g, plan, n_iter, err

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_transport: Tensor | None,
        grad_entropic: Tensor | None,
        *_: Any,
    ) -> tuple[Tensor | None, ...]:
        a, b, cost, f, g = ctx.saved_tensors
        eps = ctx.eps
        grad_a = torch.zeros_like(a)
        grad_b = torch.zeros_like(b)
        grad_cost = torch.zeros_like(cost)
        if grad_entropic is not None:  # envelope theorem: ∂/∂C = T, ∂/∂a = f, ∂/∂b = g
            plan = torch.exp(log_plan(cost, torch.log(a), torch.log(b), f, g, eps))
            ge = grad_entropic.to(cost.dtype)
            grad_cost = grad_cost + ge[:, None, None] * plan
            grad_a = grad_a + ge[:, None] * f
            grad_b = grad_b + ge[:, None] * g
        if grad_transport is not None:  # implicit differentiation of the fixed point
            gc, mu, nu = transport_adjoint(cost, a, b, f, g, eps)
            gt = grad_transport.to(cost.dtype)
            grad_cost = grad_cost + gt[:, None, None] * gc
            grad_a = grad_a + gt[:, None] * mu
            grad_b = grad_b + gt[:, None] * nu
        need_a, need_b, need_c = ctx.needs_input_grad[:3]
        return (
            grad_a if need_a else None,
            grad_b if need_b else None,
            grad_cost if need_c else None,
            None,
            None,
        )
