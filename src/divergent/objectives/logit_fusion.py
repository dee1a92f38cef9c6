r"""Dynamic Logit Fusion: weak-to-strong transfer by per-step KL-matched expert weights.

Fan, Lu, Wei, Tian, Qu, Chen, Cheng (NeurIPS 2024, "On Giant's Shoulders: Effortless Weak to
Strong by Dynamic Logits Fusion", arXiv 2406.15480) decode a large base model with the logit
offsets of small task experts. With logits :math:`M^L` (large base), :math:`M^S` (small base)
and :math:`M^S_t` (small expert :math:`t = 1..T`), and :math:`P = \mathrm{softmax}(M^L)`,
:math:`Q = \mathrm{softmax}(M^S)`, :math:`Q_t = \mathrm{softmax}(M^S_t)`, the fused next-token
distribution is

.. math::

    \tilde P_\alpha = \mathrm{softmax}\Big(M^L + \sum_{t=1}^T \alpha_t\,(M^S_t - M^S)\Big),

and at every decoding step the weights solve the two-sided KL-matching problem ("the large
model moves away from its base by as much as the small expert moved away from its own")

.. math::

    \alpha^\star = \arg\min_{\alpha \in [a, b]^T} \sum_{t=1}^T
        \big(\mathrm{KL}(\tilde P_\alpha\|P) - \mathrm{KL}(Q_t\|Q)\big)^2
      + \big(\mathrm{KL}(P\|\tilde P_\alpha) - \mathrm{KL}(Q\|Q_t)\big)^2 ,

(the earlier arXiv version states it as the constraints
:math:`\mathrm{KL}(\tilde P\|P) \approx \mathrm{KL}(Q_t\|Q)`,
:math:`\mathrm{KL}(P\|\tilde P) \approx \mathrm{KL}(Q\|Q_t)`). The paper searches
:math:`\alpha \in [0, 2]` on a grid of 10–15 points per step; :func:`dynamic_logit_fusion_weights`
evaluates that grid for every row at once (batched over the leading shape and the grid) and
then refines around the best grid point (``refine_steps``), so the result is the grid optimum
to within ``(b − a) / ((grid_size − 1)^{refine_steps + 1})`` in each coordinate. With several
experts the joint search runs over the product grid (``mode="joint"``), or, as the paper's
multi-task speed-up, only one expert is active per step (``mode="single"``: each expert's
one-dimensional problem is solved with the others at 0 and the expert with the smallest
residual is kept; which expert to keep is our reading of the paper's one-line description).

The static logit-arithmetic / proxy-tuning baseline is :func:`fused_logits` with one fixed α
(commonly 1).

Conventions: logits with the vocabulary axis last, any leading batch shape ``(...)``; the
experts' logits ``(..., T, V)`` (or ``(..., V)`` for one expert). Logits must be finite (a NaN
row gives NaN weights and a NaN fused row); computation is in float64 when an input is float64,
else float32. Nothing here is differentiated (the grid search picks α; gradients do not flow
through it).
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import torch
from torch import Tensor

from divergent._validation import check_choice, check_float_tensor, check_int, compute_dtype

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

__all__ = [
    "FUSION_MODES",
    "LogitFusion",
    "dynamic_logit_fusion",
    "dynamic_logit_fusion_weights",
    "fused_logits",
    "logit_fusion_objective",
]

FUSION_MODES: tuple[str, ...] = ("joint", "single")
_MAX_JOINT_POINTS = 100_000  # product-grid size per row above which "joint" is refused


class LogitFusion(NamedTuple):
    """The result of one Dynamic Logit Fusion step.

    Attributes:
        alpha: the chosen weights, ``(..., T)``.
        log_probs: the fused next-token log-probabilities
            :math:`\\log\\tilde P_{\\alpha}`, ``(..., V)``.
        objective: the KL-matching residual at ``alpha``, ``(...)``.
    """

    alpha: Tensor
    log_probs: Tensor
    objective: Tensor


def _check_logits(large: Any, small: Any, experts: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Validated (large, small, experts) in the compute dtype; experts as ``(..., T, V)``."""
    large = check_float_tensor(large, "large_logits", min_dim=1)
    small = check_float_tensor(small, "small_logits", min_dim=1)
    experts = check_float_tensor(experts, "expert_logits", min_dim=1)
    if large.shape[-1] == 0:
        shape = tuple(large.shape)
        raise ValueError(f"`large_logits` has an empty vocabulary axis (shape {shape})")
    if small.shape != large.shape:
        raise ValueError(
            f"`small_logits` must have the shape of `large_logits` {tuple(large.shape)} (the "
            f"models share the vocabulary), got {tuple(small.shape)}"
        )
    if experts.dim() == large.dim():
        experts = experts.unsqueeze(-2)
    if experts.dim() != large.dim() + 1 or (
        experts.shape[:-2] != large.shape[:-1] or experts.shape[-1] != large.shape[-1]
    ):
        raise ValueError(
            f"`expert_logits` must have shape (..., T, V) = {tuple(large.shape[:-1])} + (T, "
            f"{large.shape[-1]}) or the shape of `large_logits` for one expert, got "
            f"{tuple(experts.shape)}"
        )
    if experts.shape[-2] == 0:
        raise ValueError("`expert_logits` holds no expert (T = 0)")
    for name, x in (("large_logits", large), ("small_logits", small), ("expert_logits", experts)):
        if bool(torch.isinf(x).any()):
            raise ValueError(
                f"`{name}` has infinite entries; Dynamic Logit Fusion needs finite logits (the "
                "offsets M^S_t − M^S are undefined at −inf − (−inf)); use a large negative "
                "finite value for banned tokens"
            )
    dtype = compute_dtype(large, small, experts)
    return large.to(dtype), small.to(dtype), experts.to(dtype)


def _check_alpha(alpha: Any, leading: torch.Size, n_experts: int, dtype: torch.dtype) -> Tensor:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, Tensor)):
        raise ValueError(f"`alpha` must be a number or a tensor of shape (..., T), got {alpha!r}")
    a = torch.as_tensor(alpha, dtype=dtype)
    try:
        return torch.broadcast_to(a, (*leading, n_experts))
    except RuntimeError:
        raise ValueError(
            f"`alpha` must broadcast to (..., T) = {(*leading, n_experts)}, got shape "
            f"{tuple(a.shape)}"
        ) from None


def _kl_rows(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(A‖B) over the last axis from normalised log-probabilities (finite entries)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _residual(
    log_p: Tensor,
    offsets: Tensor,
    large: Tensor,
    kl_expert_fwd: Tensor,
    kl_expert_rev: Tensor,
    alpha: Tensor,
) -> Tensor:
    """The KL-matching residual for a batch of candidate weights.

    Shapes: ``log_p`` (..., V); ``offsets`` (..., T, V); ``large`` (..., V); the experts' KLs
    (..., T); ``alpha`` (..., G, T) for G candidates. Returns (..., G).
    """
    fused = large.unsqueeze(-2) + torch.einsum("...gt,...tv->...gv", alpha, offsets)
    log_fused = torch.log_softmax(fused, dim=-1)
    log_p_ = log_p.unsqueeze(-2)
    kl_fused_p = _kl_rows(log_fused, log_p_)  # KL(P̃‖P), (..., G)
    kl_p_fused = _kl_rows(log_p_, log_fused)  # KL(P‖P̃)
    gaps_fwd = kl_fused_p.unsqueeze(-1) - kl_expert_fwd.unsqueeze(-2)  # (..., G, T)
    gaps_rev = kl_p_fused.unsqueeze(-1) - kl_expert_rev.unsqueeze(-2)
    return (gaps_fwd.square() + gaps_rev.square()).sum(-1)


def _expert_kls(small: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
    """(KL(Q_t‖Q), KL(Q‖Q_t)), each (..., T)."""
    log_q = torch.log_softmax(small, dim=-1).unsqueeze(-2)
    log_qt = torch.log_softmax(experts, dim=-1)
    return _kl_rows(log_qt, log_q), _kl_rows(log_q, log_qt)


def fused_logits(
    large_logits: Tensor, small_logits: Tensor, expert_logits: Tensor, alpha: float | Tensor
) -> Tensor:
    r"""Logit arithmetic :math:`M^L + \sum_t \alpha_t (M^S_t - M^S)` (proxy tuning for α = 1).

    Args:
        large_logits: the large base model's next-token logits :math:`M^L`, ``(..., V)``.
        small_logits: the small base model's logits :math:`M^S`, ``(..., V)``.
        expert_logits: the small experts' logits :math:`M^S_t`, ``(..., T, V)``, or
            ``(..., V)`` for one expert.
        alpha: the weights, a number or a tensor broadcasting to ``(..., T)``.

    Returns:
        The fused logits, ``(..., V)`` (float64 if an input is float64, else float32).

    Raises:
        ValueError: shapes that do not match, non-float tensors, infinite logits, an ``alpha``
            that does not broadcast to ``(..., T)``.

    References:
        Fan et al. (2024), arXiv 2406.15480, Eq. for :math:`\tilde P`; Liu et al. (2024),
        "Tuning language models by proxy", arXiv 2401.08565 (α = 1).

    Example:
        >>> import torch
        >>> fused_logits(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 0.0, -1.0]), 0.5)
        tensor([ 0.5000,  0.0000, -0.5000])
    """
    large, small, experts = _check_logits(large_logits, small_logits, expert_logits)
    a = _check_alpha(alpha, large.shape[:-1], experts.shape[-2], large.dtype)
    return large + torch.einsum("...t,...tv->...v", a, experts - small.unsqueeze(-2))


def logit_fusion_objective(
    large_logits: Tensor, small_logits: Tensor, expert_logits: Tensor, alpha: float | Tensor
) -> Tensor:
    r"""The Dynamic Logit Fusion KL-matching residual at given weights.

    .. math::

        J(\alpha) = \sum_{t=1}^T
            \big(\mathrm{KL}(\tilde P_\alpha\|P) - \mathrm{KL}(Q_t\|Q)\big)^2
          + \big(\mathrm{KL}(P\|\tilde P_\alpha) - \mathrm{KL}(Q\|Q_t)\big)^2 .

    Args:
        large_logits: :math:`M^L`, ``(..., V)``.
        small_logits: :math:`M^S`, ``(..., V)``.
        expert_logits: :math:`M^S_t`, ``(..., T, V)`` or ``(..., V)``.
        alpha: the weights, broadcasting to ``(..., T)``.

    Returns:
        :math:`J(\alpha)`, ``(...)`` (0 exactly when both KL constraints hold for every expert).

    References:
        Fan, Lu, Wei, Tian, Qu, Chen, Cheng (2024), "On Giant's Shoulders: Effortless Weak to
        Strong by Dynamic Logits Fusion", NeurIPS 2024, arXiv 2406.15480.
    """
    large, small, experts = _check_logits(large_logits, small_logits, expert_logits)
    a = _check_alpha(alpha, large.shape[:-1], experts.shape[-2], large.dtype)
    log_p = torch.log_softmax(large, dim=-1)
    kl_fwd, kl_rev = _expert_kls(small, experts)
    offsets = experts - small.unsqueeze(-2)
    return _residual(log_p, offsets, large, kl_fwd, kl_rev, a.unsqueeze(-2)).squeeze(-1)


def _check_options(alpha_range: Any, grid_size: Any, refine_steps: Any, mode: Any) -> None:
    ok = (
        isinstance(alpha_range, (tuple, list))
        and len(alpha_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in alpha_range)
        and all(math.isfinite(v) for v in alpha_range)
        and alpha_range[0] < alpha_range[1]
    )
    if not ok:
        raise ValueError(
            f"`alpha_range` must be a pair (low, high) of finite numbers with low < high (the "
            f"paper uses (0, 2)), got {alpha_range!r}"
        )
    check_int(grid_size, "grid_size", 2)
    check_int(refine_steps, "refine_steps", 0)
    check_choice(
        mode,
        "mode",
        FUSION_MODES,
        " ('joint': the product grid over all experts; 'single': one active expert per step)",
    )


def _search(
    residual: Any,
    centre_low: Tensor,
    centre_high: Tensor,
    n_dims: int,
    grid_size: int,
    refine_steps: int,
    bounds: tuple[float, float],
) -> tuple[Tensor, Tensor]:
    """Grid search plus ``refine_steps`` zooms over a box per row.

    ``residual(alpha)`` maps candidates ``(..., G, n_dims)`` to ``(..., G)``; ``centre_low`` /
    ``centre_high`` are the box corners ``(..., n_dims)``. Returns (best alpha, its residual).
    """
    low, high = centre_low, centre_high
    unit = torch.linspace(0.0, 1.0, grid_size, dtype=low.dtype, device=low.device)
    # every combination of grid indices, (G^n_dims, n_dims)
    index = torch.cartesian_prod(*([unit] * n_dims)).reshape(-1, n_dims)
    best = best_value = None
    for _ in range(refine_steps + 1):
        cands = low.unsqueeze(-2) + index * (high - low).unsqueeze(-2)  # (..., G, n)
        values = residual(cands)
        # NaN rows stay NaN (argmin of NaN picks one; the value says NaN)
        pick = torch.nan_to_num(values, nan=math.inf).argmin(-1, keepdim=True)
        round_best = cands.gather(-2, pick.unsqueeze(-1).expand(*pick.shape, n_dims))
        round_value = values.gather(-1, pick).squeeze(-1)
        if best is None or best_value is None:
            best, best_value = round_best.squeeze(-2), round_value
        else:  # a zoom box clipped at a bound may miss the previous best: never get worse
            better = round_value < best_value
            best = torch.where(better.unsqueeze(-1), round_best.squeeze(-2), best)
            best_value = torch.where(better, round_value, best_value)
        step = (high - low) / (grid_size - 1)
        low = (best - step).clamp(min=bounds[0])
        high = (best + step).clamp(max=bounds[1])
    assert best is not None and best_value is not None
    return torch.where(torch.isnan(best_value).unsqueeze(-1), math.nan, best), best_value


def dynamic_logit_fusion_weights(
    large_logits: Tensor,
    small_logits: Tensor,
    expert_logits: Tensor,
    *,
    alpha_range: tuple[float, float] = (0.0, 2.0),
    grid_size: int = 15,
    refine_steps: int = 2,
    mode: str = "joint",
) -> tuple[Tensor, Tensor]:
    r"""Solve the per-step Dynamic Logit Fusion weights :math:`\alpha^\star` by grid search.

    .. math::

        \alpha^\star = \arg\min_{\alpha \in [a,b]^T} \sum_t
            \big(\mathrm{KL}(\tilde P_\alpha\|P) - \mathrm{KL}(Q_t\|Q)\big)^2
          + \big(\mathrm{KL}(P\|\tilde P_\alpha) - \mathrm{KL}(Q\|Q_t)\big)^2

    Every row (decoding step) is solved independently and all rows and grid points in one
    batched evaluation: a ``grid_size`` grid on ``alpha_range`` (product grid over the T
    experts for ``mode="joint"``), then ``refine_steps`` times a new ``grid_size`` grid on
    ±one grid step around the best point.

    Args:
        large_logits: :math:`M^L`, ``(..., V)``.
        small_logits: :math:`M^S`, ``(..., V)``.
        expert_logits: :math:`M^S_t`, ``(..., T, V)`` or ``(..., V)`` for one expert.
        alpha_range: the search box ``(a, b)`` for each α_t (the paper: ``(0, 2)``).
        grid_size: points per axis and per round (the paper: 10–15 evaluations).
        refine_steps: zoom rounds after the first grid (0 = the plain grid).
        mode: ``"joint"`` (product grid, ``grid_size**T`` points per row, refused above 10⁵)
            or ``"single"`` (one active expert per step: each expert's 1-D problem with the
            others at 0; the expert with the smallest residual keeps its α, the others get 0).

    Returns:
        ``(alpha, objective)``: weights ``(..., T)`` and their residual ``(...)``.

    Raises:
        ValueError: shapes, non-finite logits, a bad ``alpha_range`` / ``grid_size`` /
            ``refine_steps`` / ``mode``, or a joint grid that is too large.

    References:
        Fan et al. (2024), arXiv 2406.15480, Sec. 3 (grid search on [0, 2]).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> small, expert = torch.randn(2, 8, generator=g, dtype=torch.float64)
        >>> alpha, residual = dynamic_logit_fusion_weights(small, small, expert)
        >>> round(float(alpha), 6), float(residual) < 1e-20  # same base: α* = 1 exactly
        (1.0, True)
    """
    large, small, experts = _check_logits(large_logits, small_logits, expert_logits)
    _check_options(alpha_range, grid_size, refine_steps, mode)
    n_experts = experts.shape[-2]
    bounds = (float(alpha_range[0]), float(alpha_range[1]))
    if mode == "joint" and grid_size**n_experts > _MAX_JOINT_POINTS:
        raise ValueError(
            f"`mode='joint'` with {n_experts} experts searches grid_size**T = "
            f"{grid_size}**{n_experts} points per row (more than {_MAX_JOINT_POINTS}); use "
            "mode='single' or a smaller grid_size"
        )
    log_p = torch.log_softmax(large, dim=-1)
    kl_fwd, kl_rev = _expert_kls(small, experts)
    offsets = experts - small.unsqueeze(-2)
    leading = large.shape[:-1]
    with torch.no_grad():
        if mode == "joint" or n_experts == 1:

            def joint(cands: Tensor) -> Tensor:
                return _residual(log_p, offsets, large, kl_fwd, kl_rev, cands)

            low = large.new_full((*leading, n_experts), bounds[0])
            high = large.new_full((*leading, n_experts), bounds[1])
            return _search(joint, low, high, n_experts, grid_size, refine_steps, bounds)
        # single: expert t alone, residual over expert t only
        alphas, values = [], []
        for t in range(n_experts):

            def alone(cands: Tensor, t: int = t) -> Tensor:
                return _residual(
                    log_p,
                    offsets[..., t : t + 1, :],
                    large,
                    kl_fwd[..., t : t + 1],
                    kl_rev[..., t : t + 1],
                    cands,
                )

            low = large.new_full((*leading, 1), bounds[0])
            high = large.new_full((*leading, 1), bounds[1])
            a, v = _search(alone, low, high, 1, grid_size, refine_steps, bounds)
            alphas.append(a.squeeze(-1))
            values.append(v)
        value_stack = torch.stack(values, -1)  # (..., T)
        chosen = torch.nan_to_num(value_stack, nan=math.inf).argmin(-1, keepdim=True)
        alpha = torch.zeros_like(value_stack).scatter(
            -1, chosen, torch.stack(alphas, -1).gather(-1, chosen)
        )
        nan_rows = torch.isnan(value_stack).any(-1, keepdim=True)
        alpha = torch.where(nan_rows, math.nan, alpha)
        return alpha, value_stack.gather(-1, chosen).squeeze(-1)


class _GridSearch(TypedDict, total=False):
    """The search options of :func:`dynamic_logit_fusion_weights`, which holds their defaults."""

    alpha_range: tuple[float, float]
    grid_size: int
    refine_steps: int
    mode: str


def dynamic_logit_fusion(
    large_logits: Tensor,
    small_logits: Tensor,
    expert_logits: Tensor,
    **search: Unpack[_GridSearch],
) -> LogitFusion:
    r"""One decoding step of Dynamic Logit Fusion: the weights and the fused distribution.

    :math:`\log \tilde P_{\alpha^\star} = \log\mathrm{softmax}\big(M^L + \sum_t
    \alpha^\star_t (M^S_t - M^S)\big)` with :math:`\alpha^\star` from
    :func:`dynamic_logit_fusion_weights` (same arguments).

    Args:
        large_logits: :math:`M^L`, ``(..., V)``.
        small_logits: :math:`M^S`, ``(..., V)``.
        expert_logits: :math:`M^S_t`, ``(..., T, V)`` or ``(..., V)``.
        alpha_range, grid_size, refine_steps, mode: see :func:`dynamic_logit_fusion_weights`.

    Returns:
        :class:`LogitFusion` ``(alpha (..., T), log_probs (..., V), objective (...))``.

    References:
        Fan et al. (2024), arXiv 2406.15480.
    """
    alpha, objective = dynamic_logit_fusion_weights(
        large_logits, small_logits, expert_logits, **search
    )
    fused = fused_logits(large_logits, small_logits, expert_logits, alpha)
    return LogitFusion(alpha, torch.log_softmax(fused, dim=-1), objective)


# ``help`` and ``inspect.signature`` show the search options with their defaults, as written out
dynamic_logit_fusion.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    dynamic_logit_fusion_weights
).replace(return_annotation="LogitFusion")
