"""Shared problems and independent references for the transport tests.

POT (``ot.sinkhorn`` log-domain) and ``scipy.optimize.linprog`` (exact OT by linear
programming, independent of POT).
"""

from __future__ import annotations

import numpy as np
import ot
import torch
from scipy.optimize import linprog

F64 = torch.float64


def problem(n: int, m: int, seed: int, batch: tuple[int, ...] = (), zeros: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, 2, generator=g, dtype=F64)
    y = torch.rand(*batch, m, 2, generator=g, dtype=F64)
    cost = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    a = torch.rand(*batch, n, generator=g, dtype=F64) + 0.05
    b = torch.rand(*batch, m, generator=g, dtype=F64) + 0.05
    if zeros:
        a[..., 1] = 0.0
        b[..., -1] = 0.0
    return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), cost


def pot_plan(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float) -> torch.Tensor:
    return ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)


def exact_ot(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> float:
    """Exact OT by linear programming (scipy HiGHS), independent of POT."""
    n, m = cost.shape
    rows = np.zeros((n, n * m))
    cols = np.zeros((m, n * m))
    for i in range(n):
        rows[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        cols[j, j::m] = 1.0
    res = linprog(
        cost.ravel(),
        A_eq=np.vstack([rows, cols]),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    return float(res.fun)


def pot_entropic(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float) -> float:
    plan = pot_plan(a, b, cost, eps)
    pos = plan > 0
    kl = (plan[pos] * torch.log(plan[pos] / (a[:, None] * b[None, :])[pos])).sum()
    return float((plan * cost).sum() + eps * kl)
