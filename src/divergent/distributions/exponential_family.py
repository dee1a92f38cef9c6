r"""KL between members of an exponential family, as the Bregman divergence of the log-partition."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["exponential_family_kl"]


def exponential_family_kl(
    theta_p: Tensor | Sequence[Tensor],
    theta_q: Tensor | Sequence[Tensor],
    log_partition: Callable[..., Tensor],
    *,
    event_ndims: int | Sequence[int] = 0,
) -> Tensor:
    r"""KL between two members of an exponential family, as a Bregman divergence of A.

    For :math:`p_\theta(x) = h(x)\exp(\langle\theta, T(x)\rangle - A(\theta))`,

    .. math::
        \mathrm{KL}(P_{\theta_1}\|P_{\theta_2}) = A(\theta_2) - A(\theta_1)
            - \langle \theta_2 - \theta_1, \nabla A(\theta_1)\rangle,

    with ∇A by autograd (:math:`\nabla A(\theta) = \mathbb E_\theta[T(X)]`). Differentiable in
    both parameter sets (the gradient of ∇A is kept when θ₁ requires grad).

    Args:
        theta_p: natural parameters θ₁ of P (a tensor or a sequence of tensors).
        theta_q: natural parameters θ₂ of Q, the same shapes.
        log_partition: ``A(*theta) -> Tensor`` of the batch shape, acting independently per
            batch element (e.g. ``torch.distributions.Gamma(...)._log_normalizer``).
        event_ndims: trailing dimensions of each natural parameter that belong to the event
            (summed in the inner product), one int for all or one per parameter (e.g. ``(1, 2)``
            for a multivariate normal's (Σ⁻¹μ, −½Σ⁻¹)).

    Returns:
        The KL of the batch shape.

    Example:
        >>> import torch, divergent
        >>> A = lambda eta: torch.exp(eta)          # Poisson: θ = log λ, A = e^θ
        >>> th1, th2 = torch.tensor([0.0]), torch.tensor([1.0])
        >>> divergent.exponential_family_kl(th1, th2, A)   # λ₁=1, λ₂=e: e − 1 − 1
        tensor([0.7183])

    References:
        Banerjee, Merugu, Dhillon & Ghosh 2005, "Clustering with Bregman divergences" (JMLR);
        Nielsen & Garcia 2009, "Statistical exponential families: a digest with flash cards".
    """
    tp = [theta_p] if isinstance(theta_p, Tensor) else list(theta_p)
    tq = [theta_q] if isinstance(theta_q, Tensor) else list(theta_q)
    if not tp or len(tp) != len(tq):
        raise ValueError(
            f"`theta_p` and `theta_q` must hold the same number of natural parameters, got "
            f"{len(tp)} and {len(tq)}"
        )
    for i, (x, y) in enumerate(zip(tp, tq)):
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise ValueError(f"natural parameter {i} must be a tensor on both sides")
        if not torch.is_floating_point(x) or not torch.is_floating_point(y):
            raise ValueError(f"natural parameter {i} must be floating point")
        if x.shape != y.shape:
            raise ValueError(
                f"natural parameter {i} has shape {tuple(x.shape)} for P and {tuple(y.shape)} "
                "for Q; they must match"
            )
    if not callable(log_partition):
        raise ValueError(f"`log_partition` must be callable, got {log_partition!r}")
    if isinstance(event_ndims, int) and not isinstance(event_ndims, bool):
        dims = [event_ndims] * len(tp)
    else:
        dims = list(event_ndims)  # type: ignore[arg-type]
        if len(dims) != len(tp):
            raise ValueError(
                f"`event_ndims` has {len(dims)} entries for {len(tp)} natural parameters"
            )
    for k in dims:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"`event_ndims` entries must be integers ≥ 0, got {event_ndims!r}")
    keep_graph = any(t.requires_grad for t in tp)
    with torch.enable_grad():
        tp_g = [t if t.requires_grad else t.detach().requires_grad_(True) for t in tp]
        a_p = log_partition(*tp_g)
        grads = torch.autograd.grad(a_p.sum(), tp_g, create_graph=keep_graph)
    if not keep_graph:
        a_p = a_p.detach()
        grads = tuple(g_.detach() for g_ in grads)
    result = log_partition(*tq) - a_p
    for x, y, g_, k in zip(tp, tq, grads, dims):
        term = (y - x) * g_
        result = result - (term.sum(tuple(range(-k, 0))) if k > 0 else term)
    return result
