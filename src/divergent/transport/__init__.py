"""Optimal transport: entropic OT (balanced, debiased, unbalanced), exact 1-D W, ULD.

=================================  ==========================================================
module                             what it holds
=================================  ==========================================================
:mod:`~.sinkhorn`                  :func:`sinkhorn`, :func:`sinkhorn_solve`,
                                   :class:`SinkhornResult`, :func:`sinkhorn_divergence`
:mod:`~.unbalanced`                :func:`sinkhorn_unbalanced` (KL-relaxed marginals)
:mod:`~.wasserstein_1d`            :func:`wasserstein_1d` (exact, from quantile functions)
:mod:`~.uld`                       :func:`uld_distance` (sorted-probability L1, cross-tokenizer)
:mod:`~._sinkhorn_solver`          the balanced solver's iterations and gradients (private)
:mod:`~._common`                   shared argument checks, batching, log-domain updates
=================================  ==========================================================
"""

from divergent.transport.sinkhorn import (
    SinkhornResult,
    sinkhorn,
    sinkhorn_divergence,
    sinkhorn_solve,
)
from divergent.transport.uld import uld_distance
from divergent.transport.unbalanced import sinkhorn_unbalanced
from divergent.transport.wasserstein_1d import wasserstein_1d

__all__ = [
    "SinkhornResult",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_solve",
    "sinkhorn_unbalanced",
    "uld_distance",
    "wasserstein_1d",
]
