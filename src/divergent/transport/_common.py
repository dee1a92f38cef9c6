r"""What the transport solvers share: argument checks, problem batching, log-domain updates.

The entropic solvers (:mod:`~divergent.transport.sinkhorn`,
:mod:`~divergent.transport.unbalanced`) take weights ``a`` (…, n), ``b`` (…, m) and a cost
(…, n, m) whose leading shapes broadcast; :func:`flatten_problems` turns them into one
(B, n, m) batch. The plan is written through dual potentials (f, g) as
:math:`T_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`, and both solvers use the exact
log-sum-exp half-steps :func:`f_update` and :func:`g_update`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    check_positive_scalar,
    check_same_device,
    compute_dtype,
)

__all__ = [
    "CHECK_EVERY",
    "check_cost",
    "check_cost_power",
    "f_update",
    "flatten_problems",
    "g_update",
    "log_plan",
    "marginals",
    "pairwise_cost",
    "safe_log",
]

# updates between two convergence / stability checks (each check synchronises the device)
CHECK_EVERY = 10


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def check_cost_power(p: Any) -> float | int:
    """``p`` of the ground cost :math:`|x - y|^p` (W_p): a finite number >= 1, bools refused."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ValueError(f"`p` must be a finite number >= 1, got {p!r}")
    return p


def check_cost(cost: Any) -> tuple[Tensor, int, int]:
    """A finite floating-point cost of shape (…, n, m) with n, m ≥ 1; returns (cost, n, m)."""
    cost = check_float_tensor(cost, "cost", min_dim=2)
    n, m = cost.shape[-2], cost.shape[-1]
    if n == 0 or m == 0:
        raise ValueError(f"`cost` must have non-empty last two axes, got shape {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("`cost` must be finite (no NaN or ±inf entries)")
    return cost, n, m


def marginals(a: Any, b: Any, cost: Tensor) -> tuple[Tensor, Tensor]:
    """Weights ``a`` (…, n) and ``b`` (…, m) as float tensors on the cost's device.

    ``None`` stands for the uniform histogram (mass 1). The entries are checked by the caller
    (balanced OT needs probability vectors, unbalanced OT any non-negative measure).
    """
    n, m = cost.shape[-2], cost.shape[-1]
    if a is None:
        a = torch.full(cost.shape[:-1], 1.0 / n, dtype=cost.dtype, device=cost.device)
    if b is None:
        b = torch.full((*cost.shape[:-2], m), 1.0 / m, dtype=cost.dtype, device=cost.device)
    a = check_float_tensor(a, "a", min_dim=1)
    b = check_float_tensor(b, "b", min_dim=1)
    for name, w, size, axis in (("a", a, n, "rows"), ("b", b, m, "columns")):
        if w.shape[-1] != size:
            raise ValueError(
                f"`{name}` has {w.shape[-1]} entries on its last axis but the cost has {size} "
                f"{axis} (shape {tuple(w.shape)}); they must match"
            )
        check_same_device(w, name, cost, "cost")
    return a, b


def flatten_problems(
    a: Tensor, b: Tensor, cost: Tensor, tol: Any
) -> tuple[Tensor, Tensor, Tensor, torch.Size, float]:
    """Broadcast the leading shapes and flatten them into one batch axis.

    Returns ``(a (B, n), b (B, m), cost (B, n, m), batch shape, tol)`` in the compute dtype
    (float64 if an input is float64, else float32); ``tol=None`` becomes 1e-9 in float64 and
    1e-6 in float32.
    """
    n, m = cost.shape[-2], cost.shape[-1]
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
    tol = check_positive_scalar(tol, "tol")
    numel = math.prod(batch)
    a_f = a.to(dtype).expand(*batch, n).reshape(numel, n)
    b_f = b.to(dtype).expand(*batch, m).reshape(numel, m)
    c_f = cost.to(dtype).expand(*batch, n, m).reshape(numel, n, m)
    return a_f, b_f, c_f, batch, tol  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# log-domain pieces
# --------------------------------------------------------------------------------------------
def g_update(f: Tensor, cost: Tensor, log_a: Tensor, eps: float) -> Tensor:
    """g_j = −ε log Σ_i a_i exp((f_i − C_ij)/ε)  (exact log-sum-exp)."""
    return -eps * torch.logsumexp(log_a[:, :, None] + (f[:, :, None] - cost) / eps, dim=1)


def f_update(g: Tensor, cost: Tensor, log_b: Tensor, eps: float) -> Tensor:
    """f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε)  (exact log-sum-exp)."""
    return -eps * torch.logsumexp(log_b[:, None, :] + (g[:, None, :] - cost) / eps, dim=2)


def log_plan(
    cost: Tensor, log_a: Tensor, log_b: Tensor, f: Tensor, g: Tensor, eps: float
) -> Tensor:
    """log T_ij = log a_i + log b_j + (f_i + g_j − C_ij)/ε for a (B, n, m) batch."""
    return log_a[:, :, None] + log_b[:, None, :] + (f[:, :, None] + g[:, None, :] - cost) / eps


def safe_log(w: Tensor) -> Tensor:
    """log w with −∞ at zeros and a zero (not NaN) gradient there."""
    pos = w > 0
    return torch.where(pos, torch.log(torch.where(pos, w, torch.ones_like(w))), -math.inf)


def pairwise_cost(x: Tensor, y: Tensor, p: float) -> Tensor:
    r"""C_ij = ‖x_i − y_j‖₂^p with finite gradients (0 at coincident points)."""
    cross = x @ y.transpose(-1, -2)
    sq = (x * x).sum(-1)[..., :, None] + (y * y).sum(-1)[..., None, :] - 2.0 * cross
    sq = sq.clamp_min(0.0)
    if p == 2.0:
        return sq
    pos = sq > 0
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe.pow(0.5 * p), torch.zeros_like(sq))
