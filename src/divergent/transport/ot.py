r"""Optimal transport: batched log-domain Sinkhorn, Sinkhorn divergence, exact 1-D Wasserstein.

Public functions
----------------

* :func:`sinkhorn` — entropic OT between histograms ``a`` (…, n) and ``b`` (…, m) with cost
  (…, n, m), batched over the leading dimensions; returns :math:`\langle T_\varepsilon, C\rangle`
  (the convention of POT's ``sinkhorn2``) or, with ``objective="entropic"``, the entropic
  objective :math:`\mathrm{OT}_\varepsilon`.
* :func:`sinkhorn_solve` — the same solver returning a :class:`SinkhornResult` (both values,
  dual potentials, plan, iteration counts, marginal errors, convergence flags).
* :func:`sinkhorn_divergence` — the debiased Sinkhorn divergence between point clouds
  (Feydy et al. 2019).
* :func:`sinkhorn_unbalanced` — entropic OT with KL-relaxed marginals (Chizat et al. 2018).
* :func:`wasserstein_1d` — exact :math:`W_p` between weighted samples on the line (quantile
  functions).
* :func:`uld_distance` — the sorted-probability L1 distance of Universal Logit Distillation
  (Boizard et al. 2024), for teacher and student vocabularies of different sizes.

Conventions
-----------

Entropic OT uses the KL regularisation towards the product of the marginals,

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{T \in U(a,b)} \langle T, C\rangle
        + \varepsilon\,\mathrm{KL}(T \,\|\, a\otimes b),
    \qquad U(a,b) = \{T \ge 0 : T\mathbf 1 = a,\ T^\top\mathbf 1 = b\}.

Its minimiser :math:`T_\varepsilon` is the same as with POT's regulariser
:math:`\sum T\log T` (the two objectives differ by the constant
:math:`\varepsilon(H(a)+H(b))`), so :math:`\langle T_\varepsilon, C\rangle` equals
``ot.sinkhorn2(a, b, C, eps)``. The solver iterates the dual potentials (f, g), with
:math:`T_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`, in the log domain:

.. math::
    g_j \leftarrow -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon}, \qquad
    f_i \leftarrow -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}.

Speed without losing stability: each block builds the stabilised kernel
:math:`\tilde K = e^{(f \oplus g - C)/\varepsilon}` from the current potentials (one pass of
exponentials, all entries ≤ O(nm)) and runs the *same* iteration in scaling form with
matrix–vector products instead of exponentials, absorbing the scalings into (f, g) as soon as
they leave :math:`[e^{-\tau}, e^{\tau}]`; a scaling that under- or overflows sends the solver
back to its last good state and an exact log-sum-exp update (Schmitzer 2019, "Stabilized sparse
scaling algorithms for entropy regularized transport problems"). The iterates are those of
log-domain Sinkhorn up to rounding. ε-scaling (annealing ε from the cost range down to the
target by a factor ``scaling``, a few updates per stage) gives a warm start; by default it runs
only when the cost range exceeds 100 ε, where it saves updates. Convergence is declared per
problem when the L1 violation of the column marginal :math:`\|T^\top\mathbf 1 - b\|_1` is at
most ``tol`` (the row marginal is exact after each f-update); converged problems leave the batch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergent._validation import (
    check_inputs_kind,
    check_no_nan,
    check_row_options,
    compute_dtype,
    reduce_rows,
    to_log_probs,
)

__all__ = [
    "SinkhornResult",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_solve",
    "sinkhorn_unbalanced",
    "uld_distance",
    "wasserstein_1d",
]

_OBJECTIVES = ("transport", "entropic")
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
# updates between two convergence / stability checks (each check synchronises the device)
_CHECK_EVERY = 10


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _check_float_tensor(x: Any, name: str, min_dim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"`{name}` must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )
    return x


def _check_positive_float(x: Any, name: str) -> float:
    if isinstance(x, Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {x!r}")
    return float(x)


def _check_int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise ValueError(f"`{name}` must be an integer ≥ {low}, got {x!r}")
    return x


def _check_histogram(w: Tensor, name: str, size: int, size_name: str) -> Tensor:
    if w.shape[-1] != size:
        raise ValueError(
            f"`{name}` has {w.shape[-1]} entries on its last axis but the cost has {size} "
            f"{size_name} (shape {tuple(w.shape)}); they must match"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"`{name}` must be finite and non-negative (a histogram of weights)")
    mass = w.sum(-1)
    bad = (mass - 1.0).abs() > 1e-4
    if bool(bad.any()):
        worst = float(mass[bad].flatten()[0])
        raise ValueError(
            f"`{name}` must sum to 1 along its last axis (balanced OT between probability "
            f"vectors); one sums to {worst:.6g}. Normalise it: {name} / {name}.sum(-1, "
            "keepdim=True)"
        )
    return w


# --------------------------------------------------------------------------------------------
# the solver (no autograd: gradients come from _SinkhornFunction.backward)
# --------------------------------------------------------------------------------------------
def _g_update(f: Tensor, cost: Tensor, log_a: Tensor, eps: float) -> Tensor:
    """g_j = −ε log Σ_i a_i exp((f_i − C_ij)/ε)  (exact log-sum-exp)."""
    return -eps * torch.logsumexp(log_a[:, :, None] + (f[:, :, None] - cost) / eps, dim=1)


def _f_update(g: Tensor, cost: Tensor, log_b: Tensor, eps: float) -> Tensor:
    """f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε)  (exact log-sum-exp)."""
    return -eps * torch.logsumexp(log_b[:, None, :] + (g[:, None, :] - cost) / eps, dim=2)


def _vecmat(x: Tensor, mat: Tensor) -> Tensor:
    """(B, n) × (B, n, m) → (B, m)."""
    return torch.matmul(x[:, None, :], mat)[:, 0, :]


def _matvec(mat: Tensor, y: Tensor) -> Tensor:
    """(B, n, m) × (B, m) → (B, n)."""
    return torch.matmul(mat, y[:, :, None])[:, :, 0]


@dataclass
class _Problems:
    cost: Tensor
    a: Tensor
    b: Tensor
    log_a: Tensor
    log_b: Tensor
    pos_a: Tensor
    pos_b: Tensor


def _run_blocks(
    pb: _Problems,
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
    products. Every ``_CHECK_EVERY`` updates it measures the marginal error (problems that
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
            ga = _g_update(fa, cost, take(pb.log_a), eps)
            fa = _f_update(ga, cost, take(pb.log_b), eps)
            it += 1
            need_log = False
        kern = torch.exp((fa[:, :, None] + ga[:, None, :] - cost) / eps)
        kern_t = kern.transpose(1, 2).contiguous()  # batched vector-matrix products are fastest
        v = torch.ones_like(ga)
        u = 1.0 / _vecmat(b, kern_t)  # rows exact from here on
        if not full_a:
            u = torch.where(pos_a, u, one)
        if not bool(u.log().abs().amax() <= tau) and it < max_iter:
            need_log = True
            continue
        while True:
            # check point: the state is right after a u-update (rows exact)
            w = _vecmat(a * u, kern)  # w_j = Σ_i K̃_ij a_i u_i; column sums are b v w
            err = (b * v * w - b).abs().sum(-1) if check else None
            if it >= max_iter:
                done = torch.ones(active.numel(), dtype=torch.bool, device=dev)
            elif err is not None:
                done = err <= tol
            else:
                done = None
            if done is not None and bool(done.any()):
                idx = active[done]
                f[idx] = fa[done] + eps * torch.log(u[done])
                g[idx] = ga[done] + eps * torch.log(v[done])
                n_iter[idx] = it
                if err is not None:
                    errors[idx] = err[done]
                keep = ~done
                active = active[keep]
                if active.numel() == 0:
                    break
                kern, kern_t, u, v, w, fa, ga = (t[keep] for t in (kern, kern_t, u, v, w, fa, ga))
                a, b, pos_a, pos_b = a[keep], b[keep], pos_a[keep], pos_b[keep]
            steps = min(_CHECK_EVERY, max_iter - it) if check else max_iter - it
            u_last, v_last = u, v
            for s in range(steps):
                # zero-mass entries keep their potentials inside a block (they carry no mass)
                v = 1.0 / w
                if not full_b:
                    v = torch.where(pos_b, v, one)
                u = 1.0 / _vecmat(b * v, kern_t)
                if not full_a:
                    u = torch.where(pos_a, u, one)
                if s < steps - 1:
                    w = _vecmat(a * u, kern)
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


def _solve(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    *,
    max_iter: int,
    tol: float,
    scaling: float,
    eps_start: float | None,
    symmetric: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Potentials (f, g), iteration counts and marginal errors for a (B, n, m) batch.

    On CPU the batch is solved in chunks whose kernels fit in cache (the iterations are
    memory-bound); on GPU in one piece.
    """
    if eps_start is None:
        # ε-scaling pays off only at small ε (measured: ~10 % fewer updates at ε = range/1000,
        # none at range/40), so by default it runs only when the cost range exceeds 100 ε
        span = float(cost.amax() - cost.amin())
        eps_start = span if span > _AUTO_ANNEAL_RATIO * eps else eps
    batch, n, m = cost.shape
    if cost.device.type == "cpu":
        chunk = max(1, _CPU_CHUNK_BYTES // (n * m * cost.element_size()))
    else:
        chunk = batch
    solver = _solve_symmetric_chunk if symmetric else _solve_chunk
    outs = [
        solver(cost[s : s + chunk], a[s : s + chunk], b[s : s + chunk], eps,
               max_iter=max_iter, tol=tol, scaling=scaling, eps_start=eps_start)
        for s in range(0, batch, chunk)
    ]
    return tuple(torch.cat(parts) for parts in zip(*outs))  # type: ignore[return-value]


def _solve_chunk(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    *,
    max_iter: int,
    tol: float,
    scaling: float,
    eps_start: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    log_a, log_b = torch.log(a), torch.log(b)
    pb = _Problems(cost, a, b, log_a, log_b, a > 0, b > 0)
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    e = eps_start
    while e > eps * 1.0001:  # ε-scaling: a few updates per stage
        f, g, _, _ = _run_blocks(pb, f, g, e, tol=tol, max_iter=_STAGE_ITERS, check=False)
        e *= scaling
    f, g, n_iter, err = _run_blocks(pb, f, g, eps, tol=tol, max_iter=max_iter, check=True)
    # zero-mass entries: potentials consistent with the final opposite side (these define the
    # one-sided derivatives of the value w.r.t. a zero weight)
    if not bool(pb.pos_b.all()):
        g = torch.where(pb.pos_b, g, _g_update(f, cost, log_a, eps))
    if not bool(pb.pos_a.all()):
        f = torch.where(pb.pos_a, f, _f_update(g, cost, log_b, eps))
    return f, g, n_iter, err


def _run_symmetric(
    pb: _Problems, f: Tensor, eps: float, *, tol: float, max_iter: int, check: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetric problems OT_ε(α, α) (C = Cᵀ, a = b): averaged updates f ← ½(f + S(f)).

    S(f)_i = −ε log Σ_j a_j exp((f_j − C_ij)/ε) is the Sinkhorn map with f = g; plain
    alternating updates oscillate on symmetric problems, the averaged ones converge fast
    (Feydy et al. 2019, §3.1). Same stabilised scaling form and checks as
    :func:`_run_blocks`, with u ← sqrt(u / (K̃ (a⊙u))); the error is the L1 marginal violation
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
            fa = 0.5 * (fa + _g_update(fa, cost, take(pb.log_a), eps))
            it += 1
            need_log = False
        kern = torch.exp((fa[:, :, None] + fa[:, None, :] - cost) / eps)
        u = torch.ones_like(fa)
        while True:
            z = _vecmat(a * u, kern)  # (K̃ a u)_i (K̃ symmetric)
            err = (a * u * z - a).abs().sum(-1) if check else None
            if it >= max_iter:
                done = torch.ones(active.numel(), dtype=torch.bool, device=dev)
            elif err is not None:
                done = err <= tol
            else:
                done = None
            if done is not None and bool(done.any()):
                idx = active[done]
                f[idx] = fa[done] + eps * torch.log(u[done])
                n_iter[idx] = it
                if err is not None:
                    errors[idx] = err[done]
                keep = ~done
                active = active[keep]
                if active.numel() == 0:
                    break
                kern, u, z, fa = (t[keep] for t in (kern, u, z, fa))
                a, pos_a = a[keep], pos_a[keep]
            steps = min(_CHECK_EVERY, max_iter - it) if check else max_iter - it
            u_last = u
            for s in range(steps):
                u = torch.sqrt(u / z)
                if not full_a:
                    u = torch.where(pos_a, u, one)
                if s < steps - 1:
                    z = _vecmat(a * u, kern)
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


def _solve_symmetric_chunk(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    *,
    max_iter: int,
    tol: float,
    scaling: float,
    eps_start: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    log_a = torch.log(a)
    pb = _Problems(cost, a, a, log_a, log_a, a > 0, a > 0)
    f = torch.zeros_like(a)
    e = eps_start
    while e > eps * 1.0001:
        f, _, _ = _run_symmetric(pb, f, e, tol=tol, max_iter=_STAGE_ITERS, check=False)
        e *= scaling
    f, n_iter, err = _run_symmetric(pb, f, eps, tol=tol, max_iter=max_iter, check=True)
    if not bool(pb.pos_a.all()):
        f = torch.where(pb.pos_a, f, _g_update(f, cost, log_a, eps))
    return f, f.clone(), n_iter, err


def _log_plan(
    cost: Tensor, log_a: Tensor, log_b: Tensor, f: Tensor, g: Tensor, eps: float
) -> Tensor:
    return log_a[:, :, None] + log_b[:, None, :] + (f[:, :, None] + g[:, None, :] - cost) / eps


def _symmetric_gauge(x: Tensor, y: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Shift (x, y) → (x − c, y + c) so that ⟨a, x⟩ = ⟨b, y⟩ (the pair is defined up to c)."""
    c = 0.5 * ((a * x).sum(-1) - (b * y).sum(-1))
    return x - c[:, None], y + c[:, None]


def _transport_adjoint(
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
    rhs = s - _vecmat(c_bar, plan)
    pos_b = b64 > 0
    m = b64.shape[-1]
    if m <= _DENSE_ADJOINT_MAX:
        schur = torch.diag_embed(b64) - torch.matmul(plan.transpose(1, 2), row_cond)
        schur = schur + b64[:, :, None] * b64[:, None, :]  # gauge: ⟨b, ν⟩ = 0
        schur = schur + torch.diag_embed((~pos_b).to(dt))  # zero-mass rows: ν_j = 0 (fixed below)
        nu = torch.linalg.solve(schur, rhs)
    else:
        nu = _cg_schur(plan, row_cond, b64, pos_b, rhs)
    mu = c_bar - _matvec(row_cond, nu)
    if not bool(pos_b.all()):
        col_cond = torch.exp(log_a[:, :, None] + z)  # T / b
        nu_zero = (col_cond * (cost64 - mu[:, :, None])).sum(1)
        nu = torch.where(pos_b, nu, nu_zero)
    mu, nu = _symmetric_gauge(mu, nu, a64, b64)
    grad_cost = plan * (1.0 + (mu[:, :, None] + nu[:, None, :] - cost64) / eps)
    if transpose:
        grad_cost, mu, nu = grad_cost.transpose(1, 2), nu, mu
    return grad_cost.to(cost.dtype), mu.to(f.dtype), nu.to(f.dtype)


def _cg_schur(plan: Tensor, row_cond: Tensor, b: Tensor, pos_b: Tensor, rhs: Tensor) -> Tensor:
    """Matrix-free conjugate gradient for (diag b − Tᵀ(T/a) + b bᵀ) ν = rhs (large sides)."""

    def op(x: Tensor) -> Tensor:
        out = b * x - _vecmat(_matvec(row_cond, x), plan)
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


class _SinkhornFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a: Tensor,
        b: Tensor,
        cost: Tensor,
        eps: float,
        max_iter: int,
        tol: float,
        scaling: float,
        eps_start: float | None,
        want_plan: bool,
        symmetric: bool,
    ) -> tuple[Tensor, ...]:
        # renormalise (the masses were checked to be 1 up to rounding)
        a_n = a / a.sum(-1, keepdim=True)
        b_n = b / b.sum(-1, keepdim=True)
        f, g, n_iter, err = _solve(
            cost, a_n, b_n, eps, max_iter=max_iter, tol=tol, scaling=scaling,
            eps_start=eps_start, symmetric=symmetric,
        )
        f, g = _symmetric_gauge(f, g, a_n, b_n)
        plan = torch.exp(_log_plan(cost, torch.log(a_n), torch.log(b_n), f, g, eps))
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
            plan = torch.exp(_log_plan(cost, torch.log(a), torch.log(b), f, g, eps))
            ge = grad_entropic.to(cost.dtype)
            grad_cost = grad_cost + ge[:, None, None] * plan
            grad_a = grad_a + ge[:, None] * f
            grad_b = grad_b + ge[:, None] * g
        if grad_transport is not None:  # implicit differentiation of the fixed point
            gc, mu, nu = _transport_adjoint(cost, a, b, f, g, eps)
            gt = grad_transport.to(cost.dtype)
            grad_cost = grad_cost + gt[:, None, None] * gc
            grad_a = grad_a + gt[:, None] * mu
            grad_b = grad_b + gt[:, None] * nu
        need_a, need_b, need_c = ctx.needs_input_grad[:3]
        return (
            grad_a if need_a else None,
            grad_b if need_b else None,
            grad_cost if need_c else None,
            None, None, None, None, None, None, None,
        )


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
@dataclass
class SinkhornResult:
    r"""Everything :func:`sinkhorn_solve` computes, per problem (leading shape ``batch``).

    Attributes:
        transport: :math:`\langle T_\varepsilon, C\rangle`, the transport cost of the entropic
            plan (POT's ``sinkhorn2``); differentiable (implicit differentiation).
        entropic: :math:`\mathrm{OT}_\varepsilon = \langle T_\varepsilon, C\rangle +
            \varepsilon\,\mathrm{KL}(T_\varepsilon\|a\otimes b)`; differentiable (envelope
            theorem).
        f, g: dual potentials, shapes (batch, n) and (batch, m), in the gauge
            :math:`\langle a, f\rangle = \langle b, g\rangle`; detached.
        plan: :math:`T_\varepsilon`, shape (batch, n, m), detached; ``None`` unless asked for.
        n_iter: Sinkhorn updates at the target ε (annealing stages not counted).
        marginal_error: :math:`\|T^\top\mathbf 1 - b\|_1` at the returned plan.
        converged: ``marginal_error <= tol``.
    """

    transport: Tensor
    entropic: Tensor
    f: Tensor
    g: Tensor
    plan: Tensor | None
    n_iter: Tensor
    marginal_error: Tensor
    converged: Tensor


def sinkhorn_solve(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    scaling: float = 0.5,
    eps_start: float | None = None,
    return_plan: bool = False,
    warn: bool = True,
) -> SinkhornResult:
    r"""Solve a batch of entropic OT problems; see :func:`sinkhorn` for the arguments.

    Returns a :class:`SinkhornResult` with both values (transport cost and entropic objective),
    the dual potentials, the plan (if ``return_plan``), and per-problem iteration counts,
    marginal errors and convergence flags.
    """
    return _sinkhorn_impl(
        a, b, cost, eps, max_iter=max_iter, tol=tol, scaling=scaling, eps_start=eps_start,
        return_plan=return_plan, warn=warn, symmetric=False,
    )


def _sinkhorn_impl(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    max_iter: int,
    tol: float | None,
    scaling: float,
    eps_start: float | None,
    return_plan: bool,
    warn: bool,
    symmetric: bool,
) -> SinkhornResult:
    cost = _check_float_tensor(cost, "cost", 2)
    n, m = cost.shape[-2], cost.shape[-1]
    if n == 0 or m == 0:
        raise ValueError(f"`cost` must have non-empty last two axes, got shape {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("`cost` must be finite (no NaN or ±inf entries)")
    eps = _check_positive_float(eps, "eps")
    max_iter = _check_int(max_iter, "max_iter", 1)
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool) or not 0 < scaling < 1:
        raise ValueError(f"`scaling` (the ε-annealing factor) must be in (0, 1), got {scaling!r}")
    if eps_start is not None:
        eps_start = _check_positive_float(eps_start, "eps_start")
    if a is None:
        a = torch.full(cost.shape[:-1], 1.0 / n, dtype=cost.dtype, device=cost.device)
    if b is None:
        b = torch.full((*cost.shape[:-2], m), 1.0 / m, dtype=cost.dtype, device=cost.device)
    a = _check_float_tensor(a, "a", 1)
    b = _check_float_tensor(b, "b", 1)
    _check_histogram(a, "a", n, "rows")
    _check_histogram(b, "b", m, "columns")
    for name, t in (("a", a), ("b", b)):
        if t.device != cost.device:
            raise ValueError(f"`{name}` is on {t.device} but `cost` is on {cost.device}")
    try:
        batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], cost.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"leading (batch) shapes do not broadcast: a {tuple(a.shape[:-1])}, "
            f"b {tuple(b.shape[:-1])}, cost {tuple(cost.shape[:-2])}"
        ) from None
    dtype = compute_dtype(a, b, cost)
    if tol is None:
        tol = 1e-9 if dtype == torch.float64 else 1e-6
    tol = _check_positive_float(tol, "tol")
    numel = math.prod(batch)
    a_f = a.to(dtype).expand(*batch, n).reshape(numel, n)
    b_f = b.to(dtype).expand(*batch, m).reshape(numel, m)
    c_f = cost.to(dtype).expand(*batch, n, m).reshape(numel, n, m)
    transport, entropic, f, g, plan, n_iter, err = _SinkhornFunction.apply(
        a_f, b_f, c_f, eps, max_iter, tol, scaling, eps_start, return_plan, symmetric
    )
    converged = err <= tol
    if warn and not bool(converged.all()):
        bad = int((~converged).sum())
        warnings.warn(
            f"sinkhorn: {bad} of {numel} problem(s) did not reach tol={tol:g} in "
            f"max_iter={max_iter} updates (largest marginal error {float(err.max()):.3g}); "
            "increase max_iter, or eps",
            RuntimeWarning,
            stacklevel=4,
        )
    return SinkhornResult(
        transport=transport.reshape(batch),
        entropic=entropic.reshape(batch),
        f=f.reshape(*batch, n),
        g=g.reshape(*batch, m),
        plan=plan.reshape(*batch, n, m) if return_plan else None,
        n_iter=n_iter.reshape(batch),
        marginal_error=err.reshape(batch),
        converged=converged.reshape(batch),
    )


def sinkhorn(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    scaling: float = 0.5,
    eps_start: float | None = None,
    objective: str = "transport",
    return_plan: bool = False,
    warn: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Entropic optimal transport by log-domain Sinkhorn, batched and differentiable.

    With :math:`T_\varepsilon = \arg\min_{T\in U(a,b)} \langle T, C\rangle +
    \varepsilon\,\mathrm{KL}(T\|a\otimes b)` (the entropic plan), returns by default its
    transport cost

    .. math:: \langle T_\varepsilon, C\rangle = \sum_{ij} (T_\varepsilon)_{ij} C_{ij},

    the convention of POT's ``ot.sinkhorn2`` — *not* the entropic objective. With
    ``objective="entropic"`` it returns
    :math:`\mathrm{OT}_\varepsilon = \langle T_\varepsilon, C\rangle +
    \varepsilon\,\mathrm{KL}(T_\varepsilon\|a\otimes b)` (what the Sinkhorn divergence
    debiases; POT's ``sinkhorn`` objective with :math:`\sum T\log T` is this minus
    :math:`\varepsilon(H(a)+H(b))`). As ε → 0 both tend to the exact OT cost.

    Gradients (w.r.t. ``a``, ``b`` and ``cost``) are exact at the fixed point and never unroll
    the iterations (memory O(B·n·m) whatever the iteration count):

    * ``objective="entropic"``: the envelope theorem with the final plan and potentials,
      :math:`\partial/\partial C = T_\varepsilon`, :math:`\partial/\partial a = f`,
      :math:`\partial/\partial b = g`.
    * ``objective="transport"``: implicit differentiation of the Sinkhorn fixed point. The
      envelope gradient (T for the cost) is *not* the gradient of ⟨T_ε, C⟩, because T_ε moves
      with C; the exact one solves one (n+m)-sized linear system per problem (dense float64
      Schur complement of the smaller side, conjugate gradient above 2048).

    Gradients w.r.t. ``a`` and ``b`` are defined up to an additive constant (the marginals live
    on the simplex); the returned ones satisfy :math:`\langle a, \cdot\rangle = \langle b,
    \cdot\rangle`. The returned plan is detached.

    Args:
        a: source weights, shape (…, n), non-negative, summing to 1 (``None``: uniform). Zero
            entries are allowed (those rows carry no mass).
        b: target weights, shape (…, m), likewise.
        cost: cost matrices, shape (…, n, m), finite. Leading shapes of a, b and cost broadcast.
        eps: entropic regularisation ε > 0, in the units of the cost (normalise the cost, e.g.
            by its maximum, to make ε scale-free).
        max_iter: maximum Sinkhorn updates per problem at the target ε.
        tol: stop a problem when :math:`\|T^\top\mathbf 1 - b\|_1 \le` ``tol`` (default 1e-9 in
            float64, 1e-6 in float32).
        scaling: ε-annealing factor in (0, 1): ε runs from ``eps_start`` down to ``eps``,
            multiplied by ``scaling`` per stage (a few updates each).
        eps_start: first ε of the annealing. Default: the largest cost range in the batch
            when it exceeds 100·ε, otherwise no annealing (it saves few updates at moderate ε);
            pass ``eps`` to disable annealing, or a larger value to force it.
        objective: ``"transport"`` (⟨T, C⟩, default) or ``"entropic"`` (OT_ε).
        return_plan: also return the plan T_ε (shape (…, n, m), detached).
        warn: emit a ``RuntimeWarning`` when a problem does not converge.

    Returns:
        Values of the leading (batch) shape, in float32 (float64 if an input is float64); with
        ``return_plan``, ``(values, plan)``.

    Example:
        >>> import torch, divergent
        >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> cost = (x[:, None] - x[None, :]) ** 2
        >>> a = torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64)
        >>> b = torch.tensor([0, 0, 0, 0.5, 0.5], dtype=torch.float64)
        >>> round(float(divergent.sinkhorn(a, b, cost, eps=1e-3)), 4)  # exact OT: 0.5625
        0.5625

    References:
        Cuturi 2013, "Sinkhorn distances: lightspeed computation of optimal transport";
        Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport
        problems"; Peyré & Cuturi 2019, "Computational optimal transport", §4; Feydy 2020
        (thesis), ε-scaling; POT ``ot.sinkhorn2`` (Flamary et al. 2021).
    """
    if objective not in _OBJECTIVES:
        raise ValueError(f"`objective` must be one of {_OBJECTIVES}, got {objective!r}")
    res = sinkhorn_solve(
        a, b, cost, eps, max_iter=max_iter, tol=tol, scaling=scaling, eps_start=eps_start,
        return_plan=return_plan, warn=warn,
    )
    value = res.transport if objective == "transport" else res.entropic
    if return_plan:
        assert res.plan is not None
        return value, res.plan
    return value


# --------------------------------------------------------------------------------------------
# unbalanced OT (KL-relaxed marginals)
# --------------------------------------------------------------------------------------------
def _safe_log(w: Tensor) -> Tensor:
    """log w with −∞ at zeros and a zero (not NaN) gradient there."""
    pos = w > 0
    return torch.where(pos, torch.log(torch.where(pos, w, torch.ones_like(w))), -math.inf)


def _unbalanced_map(
    f: Tensor, g: Tensor, cost: Tensor, a: Tensor, b: Tensor, eps: float, lam_a: float,
    lam_b: float,
) -> tuple[Tensor, Tensor]:
    """One Jacobi step (f, g) ↦ (λ_a S_b(g), λ_b S_a(f)) of unbalanced Sinkhorn."""
    new_f = lam_a * _f_update(g, cost, _safe_log(b), eps)
    new_g = lam_b * _g_update(f, cost, _safe_log(a), eps)
    return new_f, new_g


def _unbalanced_plan(
    cost: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float
) -> Tensor:
    return torch.exp(_log_plan(cost, _safe_log(a), _safe_log(b), f, g, eps))


def _generalised_kl(x: Tensor, y: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Σ x log(x/y) − x + y (0 log 0 = 0; y = 0 < x does not occur at the optimum)."""
    pos = x > 0
    ratio = torch.where(pos, x, torch.ones_like(x)) / torch.where(pos, y, torch.ones_like(y))
    return (torch.where(pos, x * torch.log(ratio), torch.zeros_like(x)) - x + y).sum(dims)


class _UnbalancedFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, a: Tensor, b: Tensor, cost: Tensor, eps: float, rho_a: float, rho_b: float,
        max_iter: int, tol: float,
    ) -> tuple[Tensor, ...]:
        lam_a = rho_a / (rho_a + eps) if math.isfinite(rho_a) else 1.0
        lam_b = rho_b / (rho_b + eps) if math.isfinite(rho_b) else 1.0
        log_a, log_b = _safe_log(a), _safe_log(b)
        f = torch.zeros_like(a)
        g = torch.zeros_like(b)
        n_iter = 0
        delta = torch.full((a.shape[0],), math.inf, dtype=a.dtype, device=a.device)
        while n_iter < max_iter:
            f_old, g_old = f, g
            for _ in range(min(_CHECK_EVERY, max_iter - n_iter)):  # Gauss–Seidel sweeps
                f = lam_a * _f_update(g, cost, log_b, eps)
                g = lam_b * _g_update(f, cost, log_a, eps)
                n_iter += 1
            delta = torch.maximum((f - f_old).abs().amax(-1), (g - g_old).abs().amax(-1))
            if bool((delta <= tol).all()):
                break
        plan = _unbalanced_plan(cost, a, b, f, g, eps)
        transport = (plan * cost).sum((-2, -1))
        total = transport + eps * _generalised_kl(plan, a[:, :, None] * b[:, None, :], (-2, -1))
        if math.isfinite(rho_a):
            total = total + rho_a * _generalised_kl(plan.sum(-1), a, (-1,))
        if math.isfinite(rho_b):
            total = total + rho_b * _generalised_kl(plan.sum(-2), b, (-1,))
        ctx.save_for_backward(a, b, cost, f, g)
        ctx.params = (eps, rho_a, rho_b, lam_a, lam_b, max_iter, tol)
        n = torch.full_like(delta, n_iter, dtype=torch.long)
        ctx.mark_non_differentiable(f, g, plan, n, delta)
        ctx.set_materialize_grads(False)
        return transport, total, f, g, plan, n, delta

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_transport: Tensor | None, grad_total: Tensor | None, *_: Any
    ) -> tuple[Tensor | None, ...]:
        a, b, cost, f, g = ctx.saved_tensors
        eps, rho_a, rho_b, lam_a, lam_b, max_iter, _ = ctx.params
        grad_a, grad_b, grad_c = torch.zeros_like(a), torch.zeros_like(b), torch.zeros_like(cost)
        if grad_total is not None:
            # envelope theorem on the dual: ∂/∂C = T, ∂/∂a_i = ρ(1 − e^{−f_i/ρ}) − ε(e^{−f_i/ρ}
            # − Σb) (using the optimality Σ_j b_j e^{(f_i+g_j−C_ij)/ε} = e^{−f_i/ρ})
            plan = _unbalanced_plan(cost, a, b, f, g, eps)
            gt = grad_total.to(cost.dtype)
            grad_c = grad_c + gt[:, None, None] * plan
            row = torch.exp(f / eps + _f_update(g, cost, _safe_log(b), eps) * (-1.0 / eps))
            col = torch.exp(g / eps + _g_update(f, cost, _safe_log(a), eps) * (-1.0 / eps))
            da = -eps * (row - b.sum(-1, keepdim=True))
            db = -eps * (col - a.sum(-1, keepdim=True))
            if math.isfinite(rho_a):
                da = da + rho_a * (1.0 - torch.exp(-f / rho_a))
            else:
                da = da + f
            if math.isfinite(rho_b):
                db = db + rho_b * (1.0 - torch.exp(-g / rho_b))
            else:
                db = db + g
            grad_a = grad_a + gt[:, None] * da
            grad_b = grad_b + gt[:, None] * db
        if grad_transport is not None:
            # implicit differentiation of the fixed point z = Φ(z, θ) by the adjoint iteration
            # w ← ∂L/∂z + (∂Φ/∂z)ᵀ w (Φ is a contraction with factor √(λ_a λ_b) < 1)
            with torch.enable_grad():
                zf, zg = f.detach().requires_grad_(True), g.detach().requires_grad_(True)
                th = [t.detach().requires_grad_(True) for t in (a, b, cost)]
                phi = _unbalanced_map(zf, zg, th[2], th[0], th[1], eps, lam_a, lam_b)
                plan = _unbalanced_plan(th[2], th[0], th[1], zf, zg, eps)
                lval = (plan * th[2]).sum((-2, -1))
                go = grad_transport.to(cost.dtype)
                dl = torch.autograd.grad(lval, [zf, zg, *th], grad_outputs=go)
                w = (dl[0], dl[1])
                # geometric convergence (factor ≤ max λ per step); stop at a relative change
                # of 1e4 machine epsilons or after 10·max_iter steps
                rel = 1e4 * torch.finfo(cost.dtype).eps
                for _ in range(10 * max_iter):
                    vz = torch.autograd.grad(phi, [zf, zg], grad_outputs=w, retain_graph=True)
                    w_new = (dl[0] + vz[0], dl[1] + vz[1])
                    change = max(float((w_new[0] - w[0]).abs().max()),
                                 float((w_new[1] - w[1]).abs().max()))
                    scale = max(float(w_new[0].abs().max()), float(w_new[1].abs().max()))
                    w = w_new
                    if change <= rel * (1.0 + scale):
                        break
                vt = torch.autograd.grad(phi, th, grad_outputs=w)
            grad_a = grad_a + dl[2] + vt[0]
            grad_b = grad_b + dl[3] + vt[1]
            grad_c = grad_c + dl[4] + vt[2]
        need = ctx.needs_input_grad
        return (grad_a if need[0] else None, grad_b if need[1] else None,
                grad_c if need[2] else None, None, None, None, None, None)


def sinkhorn_unbalanced(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    rho: float | tuple[float, float],
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    objective: str = "transport",
    return_plan: bool = False,
    warn: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Unbalanced entropic OT: marginals relaxed by KL penalties (Chizat et al. 2018).

    .. math::
        \mathrm{UOT}_{\varepsilon,\rho}(a, b) = \min_{T \ge 0}\ \langle T, C\rangle
            + \varepsilon\,\widetilde{\mathrm{KL}}(T\|a\otimes b)
            + \rho_a\,\widetilde{\mathrm{KL}}(T\mathbf 1\|a)
            + \rho_b\,\widetilde{\mathrm{KL}}(T^\top\mathbf 1\|b),

    with the generalised KL :math:`\widetilde{\mathrm{KL}}(x\|y) = \sum x\log(x/y) - x + y`
    (the problem POT's ``ot.unbalanced.sinkhorn_unbalanced`` solves with ``reg_type="kl"``;
    plans and transport costs agree with it).
    a and b are non-negative measures of any masses. The plan is
    :math:`T_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}` with the log-domain updates
    :math:`f \leftarrow \tfrac{\rho_a}{\rho_a+\varepsilon} S_b(g)`,
    :math:`g \leftarrow \tfrac{\rho_b}{\rho_b+\varepsilon} S_a(f)`
    (:math:`S_b(g)_i = -\varepsilon\log\sum_j b_j e^{(g_j - C_{ij})/\varepsilon}`); ρ = ∞ on a
    side keeps that marginal exact (semi-relaxed), ρ = ∞ on both is :func:`sinkhorn`
    (use that instead: it is faster).

    Returns ``objective="transport"``: :math:`\langle T, C\rangle` (POT's
    ``sinkhorn_unbalanced2``, ``returnCost="linear"``), or ``"total"``: the minimum of the
    objective above, with the generalised KLs (POT's ``"total"`` report uses plain
    :math:`\sum x\log(x/y)` terms and so differs). Gradients w.r.t. ``a``, ``b``, ``cost``:
    envelope theorem for ``"total"``; implicit differentiation of the fixed point (an adjoint
    iteration that contracts like the updates) for ``"transport"``. At zero weights the
    ``"transport"`` gradient w.r.t. that weight is reported as 0 (the one-sided derivative is
    not computed). Stops when the potentials move by at most ``tol`` (cost units) over 10
    sweeps; the whole batch iterates until every problem has converged.

    Args:
        a: source measure (…, n), non-negative (``None``: uniform with mass 1).
        b: target measure (…, m), non-negative (``None``: uniform with mass 1).
        cost: (…, n, m), finite; leading shapes broadcast.
        eps: entropic regularisation ε > 0.
        rho: marginal penalty ρ > 0 (``inf`` allowed), or ``(rho_a, rho_b)``.
        max_iter: maximum Gauss–Seidel sweeps.
        tol: potential-change tolerance (default 1e-9 in float64, 1e-6 in float32).
        objective: ``"transport"`` or ``"total"``.
        return_plan: also return the plan (detached).
        warn: ``RuntimeWarning`` if the tolerance is not reached.

    Returns:
        Values of the leading shape; with ``return_plan``, ``(values, plan)``.

    Example:
        >>> import torch, divergent
        >>> cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> a = torch.tensor([1.0, 0.0], dtype=torch.float64)   # mass only at 0
        >>> b = torch.tensor([0.0, 1.0], dtype=torch.float64)   # mass only at 1
        >>> float(divergent.sinkhorn_unbalanced(a, b, cost, 0.01, 0.1)) < 0.1  # little moved
        True

    References:
        Chizat, Peyré, Schmitzer & Vialard 2018, "Scaling algorithms for unbalanced optimal
        transport problems" (Math. Comp.); Séjourné, Feydy, Vialard, Trouvé & Peyré 2019,
        "Sinkhorn divergences for unbalanced optimal transport".
    """
    if objective not in ("transport", "total"):
        raise ValueError(f"`objective` must be 'transport' or 'total', got {objective!r}")
    cost = _check_float_tensor(cost, "cost", 2)
    n, m = cost.shape[-2], cost.shape[-1]
    if n == 0 or m == 0:
        raise ValueError(f"`cost` must have non-empty last two axes, got shape {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("`cost` must be finite (no NaN or ±inf entries)")
    eps = _check_positive_float(eps, "eps")
    max_iter = _check_int(max_iter, "max_iter", 1)
    rhos = tuple(rho) if isinstance(rho, (tuple, list)) else (rho, rho)
    if len(rhos) != 2:
        raise ValueError(f"`rho` must be a number or a pair (rho_a, rho_b), got {rho!r}")
    checked = []
    for r in rhos:
        if isinstance(r, Tensor) and r.numel() == 1:
            r = r.item()
        if isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(r) or r <= 0:
            raise ValueError(f"`rho` entries must be numbers > 0 (inf allowed), got {rho!r}")
        checked.append(float(r))
    rho_a, rho_b = checked
    if a is None:
        a = torch.full(cost.shape[:-1], 1.0 / n, dtype=cost.dtype, device=cost.device)
    if b is None:
        b = torch.full((*cost.shape[:-2], m), 1.0 / m, dtype=cost.dtype, device=cost.device)
    a = _check_float_tensor(a, "a", 1)
    b = _check_float_tensor(b, "b", 1)
    for name, w, size in (("a", a, n), ("b", b, m)):
        if w.shape[-1] != size:
            raise ValueError(
                f"`{name}` has {w.shape[-1]} entries on its last axis but the cost has {size}"
            )
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"`{name}` must be finite and non-negative")
        if bool((w.sum(-1) <= 0).any()):
            raise ValueError(f"`{name}` must have positive total mass")
    try:
        batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], cost.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"leading (batch) shapes do not broadcast: a {tuple(a.shape[:-1])}, "
            f"b {tuple(b.shape[:-1])}, cost {tuple(cost.shape[:-2])}"
        ) from None
    dtype = compute_dtype(a, b, cost)
    if tol is None:
        tol = 1e-9 if dtype == torch.float64 else 1e-6
    tol = _check_positive_float(tol, "tol")
    numel = math.prod(batch)
    a_f = a.to(dtype).expand(*batch, n).reshape(numel, n)
    b_f = b.to(dtype).expand(*batch, m).reshape(numel, m)
    c_f = cost.to(dtype).expand(*batch, n, m).reshape(numel, n, m)
    transport, total, _, _, plan, _, delta = _UnbalancedFunction.apply(
        a_f, b_f, c_f, eps, rho_a, rho_b, max_iter, tol
    )
    if warn and not bool((delta <= tol).all()):
        warnings.warn(
            f"sinkhorn_unbalanced: potentials still moved by {float(delta.max()):.3g} > "
            f"tol={tol:g} after max_iter={max_iter} sweeps; increase max_iter or eps",
            RuntimeWarning,
            stacklevel=2,
        )
    value = (transport if objective == "transport" else total).reshape(batch)
    if return_plan:
        return value, plan.reshape(*batch, n, m)
    return value


def _pairwise_cost(x: Tensor, y: Tensor, p: float) -> Tensor:
    r"""C_ij = ‖x_i − y_j‖₂^p with finite gradients (0 at coincident points)."""
    cross = x @ y.transpose(-1, -2)
    sq = (x * x).sum(-1)[..., :, None] + (y * y).sum(-1)[..., None, :] - 2.0 * cross
    sq = sq.clamp_min(0.0)
    if p == 2.0:
        return sq
    pos = sq > 0
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe.pow(0.5 * p), torch.zeros_like(sq))


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    eps: float,
    p: float = 2,
    *,
    x_weights: Tensor | None = None,
    y_weights: Tensor | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    scaling: float = 0.5,
    warn: bool = True,
) -> Tensor:
    r"""Debiased Sinkhorn divergence between two weighted point clouds (Feydy et al. 2019).

    .. math::
        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
            - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
            - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    where :math:`\mathrm{OT}_\varepsilon(\alpha,\beta) = \min_{\pi} \langle\pi, C\rangle +
    \varepsilon\,\mathrm{KL}(\pi\|\alpha\otimes\beta)` is the *entropic objective* (with its
    entropy term; see :func:`sinkhorn` ``objective="entropic"``), not the transport cost
    ⟨T_ε, C⟩, and :math:`C(x, y) = \|x - y\|_2^p`. With this KL-to-product regularisation
    :math:`S_\varepsilon \ge 0`, with equality iff α = β (Feydy et al. 2019, Thm. 1, for
    p ∈ {1, 2}); it interpolates between :math:`W_p^p` (ε → 0) and an MMD (ε → ∞). Other
    entropy conventions (Σ π log π, Σ π(log π − 1)) differ by terms that cancel in the
    debiasing, so S_ε does not depend on that choice. Note GeomLoss uses
    :math:`C = \tfrac12\|x-y\|^2` for p = 2, i.e. half of this cost (and ε = blur^p).

    The self terms :math:`\mathrm{OT}_\varepsilon(\alpha,\alpha)` are solved with the averaged
    symmetric update :math:`f \leftarrow \tfrac12(f + S(f))` (plain alternating Sinkhorn
    oscillates on symmetric problems). Gradients (w.r.t. points and weights) follow from the
    envelope theorem.

    Args:
        x: points of α, shape (…, n, d).
        y: points of β, shape (…, m, d); leading shapes broadcast with x's.
        eps: entropic regularisation ε > 0 in the units of the cost (e.g. blur^p).
        p: cost exponent p ≥ 1.
        x_weights, y_weights: weights (…, n) / (…, m) summing to 1 (``None``: uniform).
        max_iter, tol, scaling, warn: as in :func:`sinkhorn`.

    Returns:
        :math:`S_\varepsilon` of the leading shape (≥ 0 up to the solver tolerance; exactly 0
        when x and y and their weights are identical).

    Example:
        >>> import torch, divergent
        >>> x = torch.rand(50, 2, dtype=torch.float64)
        >>> float(divergent.sinkhorn_divergence(x, x, eps=0.05))
        0.0
        >>> float(divergent.sinkhorn_divergence(x, x + 0.1, eps=0.05)) > 0
        True

    References:
        Genevay, Peyré & Cuturi 2018, "Learning generative models with Sinkhorn divergences";
        Feydy, Séjourné, Vialard, Amari, Trouvé & Peyré 2019, "Interpolating between optimal
        transport and MMD using Sinkhorn divergences" (AISTATS).
    """
    x = _check_float_tensor(x, "x", 2)
    y = _check_float_tensor(y, "y", 2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"`x` and `y` must have the same point dimension (last axis), got {x.shape[-1]} and "
            f"{y.shape[-1]}"
        )
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ValueError(f"`p` must be a finite number ≥ 1, got {p!r}")
    p = float(p)
    c_xy = _pairwise_cost(x, y, p)
    c_xx = _pairwise_cost(x, x, p)
    c_yy = _pairwise_cost(y, y, p)
    kw: dict[str, Any] = dict(
        max_iter=max_iter, tol=tol, scaling=scaling, eps_start=None, return_plan=False, warn=warn
    )
    # identical clouds: the cross term is the same symmetric problem, so S_ε is exactly 0
    same = x.shape == y.shape and torch.equal(x, y) and (
        (x_weights is None and y_weights is None)
        or (
            isinstance(x_weights, Tensor)
            and isinstance(y_weights, Tensor)
            and x_weights.shape == y_weights.shape
            and torch.equal(x_weights, y_weights)
        )
    )
    ab = _sinkhorn_impl(x_weights, y_weights, c_xy, eps, symmetric=same, **kw).entropic
    aa = _sinkhorn_impl(x_weights, x_weights, c_xx, eps, symmetric=True, **kw).entropic
    bb = _sinkhorn_impl(y_weights, y_weights, c_yy, eps, symmetric=True, **kw).entropic
    return ab - 0.5 * aa - 0.5 * bb


# --------------------------------------------------------------------------------------------
# exact 1-D Wasserstein
# --------------------------------------------------------------------------------------------
def _check_weights_1d(w: Tensor | None, values: Tensor, name: str) -> Tensor:
    if w is None:
        return torch.full_like(values, 1.0 / values.shape[-1])
    w = _check_float_tensor(w, name, 1)
    if w.shape != values.shape:
        raise ValueError(
            f"`{name}` must have the shape of its values {tuple(values.shape)}, got "
            f"{tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"`{name}` must be finite and non-negative")
    if bool((w.sum(-1) <= 0).any()):
        raise ValueError(f"`{name}` must have a positive sum along the last axis")
    return w


def wasserstein_1d(
    u_values: Tensor,
    v_values: Tensor,
    u_weights: Tensor | None = None,
    v_weights: Tensor | None = None,
    p: float = 1,
) -> Tensor:
    r"""Exact p-Wasserstein distance between two weighted samples on the real line.

    .. math::
        W_p(\mu, \nu) = \Big(\int_0^1 \big|F_\mu^{-1}(t) - F_\nu^{-1}(t)\big|^p\,dt\Big)^{1/p},

    computed exactly from the quantile functions: sort both samples, merge the breakpoints of
    the two cumulative weight sequences, and sum :math:`\Delta t_k\,|F_\mu^{-1}(t_k) -
    F_\nu^{-1}(t_k)|^p` over the merged intervals (O((n+m) log(n+m))). Returns the distance
    :math:`W_p` (like ``scipy.stats.wasserstein_distance`` for p = 1), not :math:`W_p^p` (POT's
    ``ot.wasserstein_1d`` returns the p-th power). Weights are normalised to sum to 1.
    Differentiable w.r.t. values and weights (almost everywhere).

    Args:
        u_values: samples of μ, shape (…, n); the leading shape is a batch.
        v_values: samples of ν, shape (…, m); same leading shape.
        u_weights: non-negative weights (…, n) with positive sum (``None``: uniform).
        v_weights: likewise (…, m).
        p: order p ≥ 1.

    Returns:
        :math:`W_p` of the leading shape.

    Example:
        >>> import torch, divergent
        >>> divergent.wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]))
        tensor(2.)

    References:
        Villani 2003, "Topics in optimal transportation", Thm. 2.18; Peyré & Cuturi 2019,
        "Computational optimal transport", Remark 2.30.
    """
    u_values = _check_float_tensor(u_values, "u_values", 1)
    v_values = _check_float_tensor(v_values, "v_values", 1)
    if u_values.shape[:-1] != v_values.shape[:-1]:
        raise ValueError(
            f"`u_values` and `v_values` must share their leading (batch) shape, got "
            f"{tuple(u_values.shape[:-1])} and {tuple(v_values.shape[:-1])}"
        )
    if u_values.shape[-1] == 0 or v_values.shape[-1] == 0:
        raise ValueError("`u_values` and `v_values` must be non-empty")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ValueError(f"`p` must be a finite number ≥ 1, got {p!r}")
    for name, t in (("u_values", u_values), ("v_values", v_values)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` must be finite")
    uw = _check_weights_1d(u_weights, u_values, "u_weights")
    vw = _check_weights_1d(v_weights, v_values, "v_weights")
    dtype = compute_dtype(u_values, v_values, uw, vw)
    u_values, v_values, uw, vw = (t.to(dtype) for t in (u_values, v_values, uw, vw))
    u_sorted, u_idx = torch.sort(u_values, dim=-1)
    v_sorted, v_idx = torch.sort(v_values, dim=-1)
    u_cdf = torch.cumsum(torch.gather(uw, -1, u_idx), -1)
    v_cdf = torch.cumsum(torch.gather(vw, -1, v_idx), -1)
    u_cdf = u_cdf / u_cdf[..., -1:]
    v_cdf = v_cdf / v_cdf[..., -1:]
    qs, _ = torch.sort(torch.cat([u_cdf, v_cdf], -1), dim=-1)
    delta = torch.diff(qs, dim=-1, prepend=torch.zeros_like(qs[..., :1]))
    # F^{-1}(t) on (t_{k-1}, t_k]: the first sorted sample whose cdf ≥ t_k
    q_det = qs.detach().contiguous()
    iu = torch.searchsorted(u_cdf.detach().contiguous(), q_det).clamp_max(u_values.shape[-1] - 1)
    iv = torch.searchsorted(v_cdf.detach().contiguous(), q_det).clamp_max(v_values.shape[-1] - 1)
    diff = (torch.gather(u_sorted, -1, iu) - torch.gather(v_sorted, -1, iv)).abs()
    if p == 1:
        return (delta * diff).sum(-1)
    total = (delta * diff.pow(p)).sum(-1)
    return total.clamp_min(0.0).pow(1.0 / p)


# --------------------------------------------------------------------------------------------
# ULD: sorted-probability L1 distance for cross-tokenizer distillation
# --------------------------------------------------------------------------------------------
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
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``.
        check_nan: raise a ``ValueError`` if an input contains NaN.

    Returns:
        A scalar (``"sum"``, ``"mean"``) or values of the leading shape (``"none"``), float32
        (float64 if an input is float64).

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
        _check_float_tensor(t, name, 1)
        if t.shape[-1] == 0:
            raise ValueError(f"`{name}` has an empty class axis (shape {tuple(t.shape)})")
    if p.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"`p` and `q` must share their leading shape (vocabulary sizes may differ), got "
            f"{tuple(p.shape)} and {tuple(q.shape)}"
        )
    if p.device != q.device:
        raise ValueError(f"`p` is on {p.device} but `q` is on {q.device}")
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
    p_rows = p.reshape(-1, p.shape[-1]) if keep is None else p[keep]
    q_rows = q.reshape(-1, q.shape[-1]) if keep is None else q[keep]
    count = p_rows.shape[0]
    dtype = compute_dtype(p, q)
    pp = to_log_probs(p_rows, inputs, temperature, dtype, "p").exp()
    qq = to_log_probs(q_rows, inputs, temperature, dtype, "q").exp()
    pp = torch.sort(pp, dim=-1, descending=True).values
    qq = torch.sort(qq, dim=-1, descending=True).values
    vocab = max(pp.shape[-1], qq.shape[-1])
    pp = torch.nn.functional.pad(pp, (0, vocab - pp.shape[-1]))
    qq = torch.nn.functional.pad(qq, (0, vocab - qq.shape[-1]))
    rows = (pp - qq).abs().sum(-1)
    if reduction == "none":
        if keep is None:
            return rows.reshape(leading)
        full = torch.zeros(leading, dtype=rows.dtype, device=rows.device)
        return full.index_put((keep,), rows)
    return reduce_rows(rows, reduction, count=count, normalizer=norm)
