"""Optimal transport: log-domain Sinkhorn (balanced, debiased, unbalanced), 1-D W, ULD."""

from divergent.transport.ot import (
    SinkhornResult,
    sinkhorn,
    sinkhorn_divergence,
    sinkhorn_solve,
    sinkhorn_unbalanced,
    uld_distance,
    wasserstein_1d,
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
