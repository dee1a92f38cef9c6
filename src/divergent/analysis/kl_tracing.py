r"""KL-tracing: zero-shot flow from a predictive model's per-location divergence map.

Kim, Aw, Kotar et al. (2025) extract optical flow from a frozen next-frame predictor by a
counterfactual "perturb and track" probe: roll the model out once on frame 1 (clean) and once
on frame 1 with a small tracer perturbation at the query location :math:`u`, then look for the
location of frame 2 where the two predictions differ most. When the model outputs a categorical
distribution per location (a per-patch softmax over tokens, LRAS; here a per-pixel softmax over
intensity bins), the difference is measured by a KL divergence per location,

.. math::

    D_j = \mathrm{KL}(p'_j \,\|\, p_j) = \sum_k p'_j(k)\,\log\frac{p'_j(k)}{p_j(k)},
    \qquad \hat v = \arg\max_j D_j, \qquad \mathrm{flow}(u) = \hat v - u,

with :math:`p_j` the clean and :math:`p'_j` the perturbed prediction at location :math:`j`.
The CWM-style baseline traces the perturbation through the *mean* prediction instead,
:math:`D_j = \|\hat x'_j - \hat x_j\|_2` (the "RGB difference"; channels last).

**Direction.** The paper computes "the KL divergence between perturbed and unperturbed
predictive distributions" without fixing the order in the text we read, so the direction is our
choice: :math:`\mathrm{KL}(p'\|p)`, the perturbed prediction first, because the clean rollout
is the reference the perturbation is measured against. The argument order of
:func:`kl_tracing_map` follows :func:`divergent.kl` (DESIGN.md: ``kl(p, q)`` is KL(P‖Q)): the
first argument is the perturbed rollout's logits. Any registered divergence can be used
instead with ``divergence=`` (``"reverse_kl"`` gives :math:`\mathrm{KL}(p\|p')`; ``"js"`` is
symmetric).

Layout: maps are ``(..., H, W)``; per-location logits and mean predictions are
``(..., H, W, C)`` (class / channel axis last, as everywhere in the library); a query is an
integer ``(row, col)`` pair, shape ``(..., 2)``; a flow is ``(d_row, d_col)``, shape
``(..., 2)``, in the map's floating dtype. ``candidates`` (bool, broadcastable to ``(..., H,
W)``) restricts where the peak may be (e.g. :func:`search_window`, or the locations a
random-access model did not see revealed).

NaN: a NaN logit or mean gives a NaN map value at that location (the library's row contract);
a NaN at a candidate location makes that query's flow NaN (never a plausible flow from the
other locations). Locations outside ``candidates`` are ignored, NaN or not.

References:
    S. Kim, K. L. Aw, K. Kotar, C. Eyzaguirre, W. Lee, Y. Liu, J. Watrous, S. Stojanov,
    J. C. Niebles, J. Wu, D. L. K. Yamins, "Taming generative video models for zero-shot
    optical flow extraction", arXiv 2507.09082 (2025).
    D. M. Bear et al., "Unifying (machine) vision via counterfactual world modeling",
    arXiv 2306.01828 (2023) (the CWM perturb-and-track probe, RGB-difference tracing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    check_choice,
    check_float_tensor,
    check_int,
    check_pair,
    compute_dtype,
)
from divergent.categorical import DivergenceLike
from divergent.functional import divergence as divergence_of

__all__ = [
    "REFINEMENTS",
    "kl_tracing_flow",
    "kl_tracing_map",
    "rgb_difference_map",
    "rgb_tracing_flow",
    "search_window",
    "trace_peak",
]

REFINEMENTS: tuple[str, ...] = ("none", "parabolic")


def _check_maps_input(x: Tensor, name: str) -> None:
    if x.dim() < 3:
        raise ValueError(
            f"`{name}` must have shape (..., H, W, C) (at least 3 dimensions: two spatial axes "
            f"and the class / channel axis last), got shape {tuple(x.shape)}"
        )
    if x.shape[-3] == 0 or x.shape[-2] == 0:
        raise ValueError(f"`{name}` has an empty spatial axis (shape {tuple(x.shape)})")


def kl_tracing_map(
    perturbed_logits: Tensor,
    clean_logits: Tensor,
    *,
    divergence: DivergenceLike = "kl",
    temperature: float = 1.0,
    inputs: str = "logits",
    check_nan: bool = False,
    **params: Any,
) -> Tensor:
    r"""Per-location divergence map :math:`D_j = \mathrm{KL}(p'_j\|p_j)` of two rollouts.

    .. math::

        D_j = \sum_k p'_j(k)\,\bigl(\log p'_j(k) - \log p_j(k)\bigr),\quad
        p'_j = \mathrm{softmax}(z'_j / T),\; p_j = \mathrm{softmax}(z_j / T),

    computed with :func:`divergent.divergence` (one row per location, ``reduction="none"``),
    so every input check of the library applies (a +inf logit, an all −inf location, ...).

    Args:
        perturbed_logits: :math:`z'`, the rollout with the tracer, shape ``(..., H, W, K)``.
        clean_logits: :math:`z`, the clean rollout, same shape.
        divergence: a registered name or entry; the map is ``D(perturbed ‖ clean)``
            (``"reverse_kl"`` for :math:`\mathrm{KL}(p\|p')`).
        temperature: divides both sides' logits (T > 0).
        inputs: ``"logits"`` (default), ``"log_probs"`` or ``"probs"``.
        check_nan: raise on a NaN location instead of returning NaN there.
        **params: the divergence's parameters (``beta`` for ``"js"`` ...).

    Returns:
        ``(..., H, W)``, float32 (float64 if an input is float64); NaN where either side
        holds NaN.

    Raises:
        ValueError: naming the argument, for fewer than three dimensions, different shapes,
            non-floating inputs, or any input error of :func:`divergent.divergence`.

    Example:
        >>> import torch
        >>> clean = torch.zeros(1, 3, 4)          # 1×3 locations, 4 bins, uniform
        >>> pert = clean.clone(); pert[0, 2, 1] = 3.0
        >>> kl_tracing_map(pert, clean)
        tensor([[0.0000, 0.0000, 0.8572]])
    """
    perturbed_logits, clean_logits = check_pair(
        perturbed_logits, clean_logits, "perturbed_logits", "clean_logits"
    )
    _check_maps_input(perturbed_logits, "perturbed_logits")
    try:
        return divergence_of(
            divergence,
            perturbed_logits,
            clean_logits,
            temperature=temperature,
            inputs=inputs,
            reduction="none",
            check_nan=check_nan,
            **params,
        )
    except ValueError as err:
        # the library names its sides `p` and `q`: say which argument of this function it is
        raise ValueError(
            _rename_sides(str(err), {"p": "perturbed_logits", "q": "clean_logits"})
        ) from err


def _rename_sides(message: str, names: dict[str, str]) -> str:
    """``message`` with each backticked side name (`` `p` ``) replaced by the caller's."""
    return re.sub(r"`(\w+)`", lambda m: f"`{names.get(m.group(1), m.group(1))}`", message)


def rgb_difference_map(perturbed_mean: Tensor, clean_mean: Tensor) -> Tensor:
    r"""Per-location difference of two mean predictions, :math:`D_j = \|\hat x'_j - \hat
    x_j\|_2` over the channel axis (the CWM / RGB-difference tracing baseline).

    Args:
        perturbed_mean: :math:`\hat x'`, the mean prediction with the tracer, ``(..., H, W,
            C)`` (C = 3 for RGB, 1 for grey).
        clean_mean: :math:`\hat x`, the clean mean prediction, same shape.

    Returns:
        ``(..., H, W)`` in the inputs' dtype (float32 for half precision); NaN where either
        side holds NaN. Differentiable everywhere, with gradient 0 (a subgradient) where the
        two means are equal.

    Raises:
        ValueError: naming the argument, for fewer than three dimensions, different shapes,
            non-floating inputs or an infinite entry (a mean prediction is finite).

    Example:
        >>> import torch
        >>> clean = torch.zeros(1, 3, 3)
        >>> pert = clean.clone(); pert[0, 1] = torch.tensor([0.3, 0.4, 0.0])
        >>> rgb_difference_map(pert, clean)
        tensor([[0.0000, 0.5000, 0.0000]])
    """
    perturbed_mean, clean_mean = check_pair(
        perturbed_mean, clean_mean, "perturbed_mean", "clean_mean"
    )
    _check_maps_input(perturbed_mean, "perturbed_mean")
    for name, x in (("perturbed_mean", perturbed_mean), ("clean_mean", clean_mean)):
        if torch.isinf(x).any():
            raise ValueError(f"`{name}` holds an infinite entry; a mean prediction must be finite")
    dtype = compute_dtype(perturbed_mean)
    diff = perturbed_mean.to(dtype) - clean_mean.to(dtype)
    sq = diff.pow(2).sum(-1)
    # sqrt's gradient at 0 is inf (NaN after the chain rule) where the inputs are equal: take
    # the root only where sq ≠ 0 (NaN ≠ 0, so NaN stays NaN) and give 0 there, gradient 0
    zero = sq == 0
    return torch.where(zero, torch.zeros_like(sq), torch.where(zero, 1.0, sq).sqrt())


def _as_query(query: Any, leading: Sequence[int], height: int, width: int) -> Tensor:
    if not isinstance(query, Tensor):
        try:
            query = torch.as_tensor(query)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"`query` must be integer (row, col) pairs, got {type(query).__name__}"
            ) from None
    if query.dtype.is_floating_point or query.dtype.is_complex or query.dtype == torch.bool:
        raise ValueError(f"`query` must hold integer (row, col) pairs, got dtype {query.dtype}")
    if tuple(query.shape) != (*leading, 2):
        raise ValueError(
            f"`query` must have shape {(*leading, 2)} (one (row, col) pair per map), got "
            f"{tuple(query.shape)}"
        )
    query = query.long()
    rows, cols = query[..., 0], query[..., 1]
    outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    if bool(outside.any()):
        bad = query.reshape(-1, 2)[outside.reshape(-1)][0]
        raise ValueError(
            f"`query` must lie inside the {height}×{width} map (0 <= row < {height}, "
            f"0 <= col < {width}), got {tuple(bad.tolist())}"
        )
    return query


def search_window(
    height: int, width: int, query: Any, radius: int, *, device: torch.device | None = None
) -> Tensor:
    r"""Boolean ``(..., H, W)`` mask of the locations within Chebyshev distance ``radius`` of
    each query (the candidates of a flow with :math:`\max(|\Delta r|, |\Delta c|) \le`
    ``radius``), clipped to the frame.

    Args:
        height, width: the map's spatial size (≥ 1).
        query: integer ``(..., 2)`` (row, col) pairs.
        radius: the largest displacement per axis (≥ 0).
        device: where to build the mask (default: the query's device).

    Example:
        >>> search_window(3, 4, [0, 1], 1).int()
        tensor([[1, 1, 1, 0],
                [1, 1, 1, 0],
                [0, 0, 0, 0]], dtype=torch.int32)
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    radius = check_int(radius, "radius", 0)
    q = query if isinstance(query, Tensor) else torch.as_tensor(query)
    q = _as_query(q, tuple(q.shape[:-1]), height, width).to(device or q.device)
    rows = torch.arange(height, device=q.device).view(height, 1)
    cols = torch.arange(width, device=q.device).view(1, width)
    dr = (rows - q[..., 0, None, None]).abs()
    dc = (cols - q[..., 1, None, None]).abs()
    return (dr <= radius) & (dc <= radius)


def _parabolic(left: Tensor, mid: Tensor, right: Tensor, ok: Tensor) -> Tensor:
    """Vertex offset of the parabola through (−1, left), (0, mid), (1, right), in [−½, ½]."""
    curvature = left - 2 * mid + right
    ok = ok & torch.isfinite(left) & torch.isfinite(right) & torch.isfinite(mid) & (curvature < 0)
    offset = (left - right) / (2 * torch.where(ok, curvature, -torch.ones_like(curvature)))
    return torch.where(ok, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def trace_peak(
    score_map: Tensor,
    query: Any,
    *,
    candidates: Tensor | None = None,
    refine: str = "none",
) -> Tensor:
    r"""Flow of each query as the location of its map's peak minus the query:
    :math:`\mathrm{flow}(u) = \arg\max_{j \in \mathcal C} D_j - u`.

    Ties go to the first peak in row-major order. With ``refine="parabolic"`` the integer peak
    :math:`(r, c)` is refined per axis by the vertex of the parabola through the peak and its
    two neighbours, :math:`\delta = \frac{D_{-1} - D_{+1}}{2(D_{-1} - 2D_0 + D_{+1})}` clipped
    to :math:`[-\tfrac12, \tfrac12]` (exact for a quadratic peak); an axis whose neighbours are
    off the frame, not candidates, not finite or not lower-curved keeps :math:`\delta = 0`.

    Args:
        score_map: ``(..., H, W)`` (:func:`kl_tracing_map`, :func:`rgb_difference_map`).
        query: integer ``(..., 2)`` (row, col) of each map's query (a pair for a single map).
        candidates: bool, broadcastable to ``(..., H, W)``: where the peak may be (None: all).
        refine: ``"none"`` (integer peak) or ``"parabolic"``.

    Returns:
        ``(..., 2)`` (d_row, d_col) in the map's floating dtype; NaN for a map with a NaN at a
        candidate location.

    Raises:
        ValueError: naming the argument, for a map with fewer than two dimensions or not
            floating, a query of the wrong shape or dtype or outside the map, candidates that
            are not bool or do not broadcast, a map with no candidate location, or an unknown
            ``refine``.

    Example:
        >>> import torch
        >>> m = torch.zeros(4, 5); m[3, 1] = 2.0
        >>> trace_peak(m, [1, 2])
        tensor([ 2., -1.])
        >>> m = torch.tensor([[0.0, 1.0, 0.5]])
        >>> trace_peak(m, [0, 0], refine="parabolic")
        tensor([0.0000, 1.1667])
    """
    score_map = check_float_tensor(score_map, "score_map", min_dim=2)
    refine = check_choice(refine, "refine", REFINEMENTS)
    height, width = score_map.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"`score_map` has an empty spatial axis (shape {tuple(score_map.shape)})")
    leading = tuple(score_map.shape[:-2])
    q = _as_query(query, leading, height, width).to(score_map.device)
    dtype = compute_dtype(score_map)
    scores = score_map.to(dtype)
    if candidates is None:
        keep = torch.ones_like(scores, dtype=torch.bool)
    else:
        if not isinstance(candidates, Tensor) or candidates.dtype != torch.bool:
            raise ValueError(
                "`candidates` must be a bool tensor broadcastable to the map's shape "
                f"{tuple(score_map.shape)}, got "
                f"{getattr(candidates, 'dtype', type(candidates).__name__)}"
            )
        try:
            keep = torch.broadcast_to(candidates.to(score_map.device), scores.shape)
        except RuntimeError:
            raise ValueError(
                f"`candidates` of shape {tuple(candidates.shape)} does not broadcast to the "
                f"map's shape {tuple(score_map.shape)}"
            ) from None
    flat_keep = keep.reshape(-1, height * width)
    empty = ~flat_keep.any(-1)
    if bool(empty.any()):
        first = int(empty.nonzero()[0, 0])
        raise ValueError(
            f"`candidates` leaves no location for map {first} (flattened leading index); "
            "each map needs at least one candidate location"
        )
    flat = scores.reshape(-1, height * width)
    has_nan = (torch.isnan(flat) & flat_keep).any(-1)
    masked = torch.where(flat_keep & ~torch.isnan(flat), flat, -math.inf)
    # −inf everywhere (e.g. a −inf map) still has a candidate: pick the first candidate.
    masked = torch.where(flat_keep & (masked == -math.inf), torch.finfo(dtype).min, masked)
    peak = masked.argmax(-1)
    r, c = peak // width, peak % width
    pos = torch.stack([r, c], -1).to(dtype)
    if refine == "parabolic":
        rows = torch.arange(flat.shape[0], device=flat.device)

        def value(dr: int, dc: int) -> tuple[Tensor, Tensor]:
            rr, cc = r + dr, c + dc
            inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
            idx = (rr.clamp(0, height - 1) * width + cc.clamp(0, width - 1)).long()
            return flat[rows, idx], inside & flat_keep[rows, idx]

        mid = flat[rows, peak]
        (up, ok_u), (down, ok_d) = value(-1, 0), value(1, 0)
        (left, ok_l), (right, ok_r) = value(0, -1), value(0, 1)
        pos[:, 0] += _parabolic(up, mid, down, ok_u & ok_d)
        pos[:, 1] += _parabolic(left, mid, right, ok_l & ok_r)
    flow = pos - q.reshape(-1, 2).to(dtype)
    flow = torch.where(has_nan[:, None], math.nan, flow)
    return flow.reshape(*leading, 2)


def kl_tracing_flow(
    perturbed_logits: Tensor,
    clean_logits: Tensor,
    query: Any,
    *,
    candidates: Tensor | None = None,
    refine: str = "none",
    divergence: DivergenceLike = "kl",
    temperature: float = 1.0,
    inputs: str = "logits",
    **params: Any,
) -> Tensor:
    r"""KL-tracing flow: the peak of :func:`kl_tracing_map` minus the query (:func:`trace_peak`),
    :math:`\mathrm{flow}(u) = \arg\max_j \mathrm{KL}(p'_j\|p_j) - u`.

    Args:
        perturbed_logits, clean_logits: ``(..., H, W, K)`` per-location logits of the
            perturbed and the clean rollout (see :func:`kl_tracing_map`).
        query: integer ``(..., 2)`` (row, col) of the tracer in frame 1.
        candidates, refine: see :func:`trace_peak`.
        divergence, temperature, inputs, **params: see :func:`kl_tracing_map`.

    Returns:
        ``(..., 2)`` (d_row, d_col); NaN where a candidate location's map value is NaN.

    Example:
        >>> import torch
        >>> clean = torch.zeros(2, 2, 3)
        >>> pert = clean.clone(); pert[1, 0] = torch.tensor([4.0, 0.0, 0.0])
        >>> kl_tracing_flow(pert, clean, [0, 0])
        tensor([1., 0.])
    """
    scores = kl_tracing_map(
        perturbed_logits,
        clean_logits,
        divergence=divergence,
        temperature=temperature,
        inputs=inputs,
        **params,
    )
    return trace_peak(scores, query, candidates=candidates, refine=refine)


def rgb_tracing_flow(
    perturbed_mean: Tensor,
    clean_mean: Tensor,
    query: Any,
    *,
    candidates: Tensor | None = None,
    refine: str = "none",
) -> Tensor:
    r"""RGB-difference tracing flow (the CWM baseline): the peak of
    :func:`rgb_difference_map` minus the query, :math:`\arg\max_j \|\hat x'_j - \hat x_j\|_2
    - u`; the same interface as :func:`kl_tracing_flow` for mean predictions.

    Example:
        >>> import torch
        >>> clean = torch.zeros(3, 3, 1)
        >>> pert = clean.clone(); pert[2, 2, 0] = 0.2
        >>> rgb_tracing_flow(pert, clean, [1, 1])
        tensor([1., 1.])
    """
    scores = rgb_difference_map(perturbed_mean, clean_mean)
    return trace_peak(scores, query, candidates=candidates, refine=refine)
